//go:build linux

package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/baton-sh/baton/supervisor"
)

// TestMain lets the test binary act as a small process tree for the /proc
// tests (selected by METRICS_HELPER), and checks for leaked goroutines.
func TestMain(m *testing.M) {
	switch os.Getenv("METRICS_HELPER") {
	case "":
	case "parent":
		os.Exit(helperParent())
	case "child":
		os.Exit(helperChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown METRICS_HELPER %q\n", os.Getenv("METRICS_HELPER"))
		os.Exit(2)
	}
	goleak.VerifyTestMain(m)
}

// helperParent starts a child sharing its stdin, prints the child's pid as
// its readiness handshake, and exits once stdin is closed; so does the
// child, so closing one pipe ends the whole tree without a signal.
func helperParent() int {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "METRICS_HELPER=child")
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "helper parent:", err)
		return 1
	}
	fmt.Println(cmd.Process.Pid)
	_, _ = io.Copy(io.Discard, os.Stdin) // only EOF matters
	if err := cmd.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, "helper parent: child:", err)
		return 1
	}
	return 0
}

func helperChild() int {
	_, _ = io.Copy(io.Discard, os.Stdin) // only EOF matters
	return 0
}

// fakeSource is a Source whose status is a function and whose events are
// whatever the test sends.
type fakeSource struct {
	status func(context.Context) (supervisor.Status, error)
	flags  func(context.Context) ([]supervisor.FlagStatus, error) // nil: no answer (an error)
	events chan supervisor.Event

	// Set by Subscribe (called from New, before any goroutine starts).
	buffer       int
	unsubscribed chan struct{}
	once         sync.Once
}

func newFakeSource(status func(context.Context) (supervisor.Status, error)) *fakeSource {
	// Unbuffered: once a send returns, Run has the event, and once Run has
	// returned, every event it had is counted.
	return &fakeSource{status: status, events: make(chan supervisor.Event), unsubscribed: make(chan struct{})}
}

func (f *fakeSource) Status(ctx context.Context) (supervisor.Status, error) { return f.status(ctx) }

func (f *fakeSource) Flags(ctx context.Context) ([]supervisor.FlagStatus, int64, string, error) {
	if f.flags == nil {
		return nil, 0, "", errors.New("no flags in this test")
	}
	flags, err := f.flags(ctx)
	return flags, 3, "/run/baton/web.flags.json", err
}

func (f *fakeSource) Subscribe(buffer int) (<-chan supervisor.Event, func()) {
	f.buffer = buffer
	return f.events, func() { f.once.Do(func() { close(f.unsubscribed) }) }
}
