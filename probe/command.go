package probe

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// ErrNotSupported is returned on platforms where a mechanism of this package
// does not exist (process groups with a parent-death signal, /proc).
var ErrNotSupported = errors.New("not supported on this platform")

// Bounds on what a failed command's error carries of its output.
const (
	// execOutputTail is the most of an exec check's output its error
	// quotes: a check runs every few seconds and its errors are logged.
	execOutputTail = 512
	// HookOutputTail is the most of a hook's output its error quotes.
	HookOutputTail = 4 << 10
)

// command is one run of a program in a process group of its own: what both
// Exec checks and hooks start.
type command struct {
	kind       string // "exec check" or "hook", for errors
	argv       []string
	dir        string
	env        []string // complete; nil is empty, never baton's own
	credential *syscall.Credential
	// grace is the wait between SIGTERM to the group, when the context
	// ends, and SIGKILL; 0 sends SIGKILL at once.
	grace time.Duration
	tail  int // bytes of output kept for the error
}

// CommandError is a command that could not be started, failed, or was
// stopped because its context ended. Its message names the command and
// says how it ended, followed by the tail of its output (stdout and stderr
// together, in the order written).
type CommandError struct {
	Kind    string // "exec check" or "hook"
	Command string // argv[0]
	// Status says how it ended: "exit status 3", "signal: killed",
	// "stopped after 5s: context deadline exceeded", or "could not start".
	Status string
	Output string // the last bytes of the output, trimmed; "..." marks a cut
	// Err is the cause: an *exec.ExitError, the context's error when it
	// was stopped, or the error from starting it.
	Err error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Kind, e.Command, e.Status)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// Unwrap returns Err, so that errors.Is(err, context.DeadlineExceeded)
// tells a timeout and errors.As finds the *exec.ExitError.
func (e *CommandError) Unwrap() error { return e.Err }

// tailBuffer keeps the last max bytes written to it: the end of a command's
// output, which is where a failing program says why. It is written by one
// goroutine and read after that goroutine is done; it has no lock.
type tailBuffer struct {
	max       int
	buf       []byte // len(buf) <= max once Write returns
	truncated bool   // bytes were dropped from the front
}

func newTailBuffer(max int) *tailBuffer {
	return &tailBuffer{max: max}
}

// Write keeps the tail of p and what it has. It never fails, so a command
// writing more than max is not cut short (os/exec would see a broken pipe).
func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.truncated = t.truncated || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.truncated = true
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String is the tail with "..." in front if anything was dropped, and
// without leading and trailing white space.
func (t *tailBuffer) String() string {
	// The cut may split a UTF-8 sequence; ToValidUTF8 drops the half.
	s := strings.TrimSpace(strings.ToValidUTF8(string(t.buf), ""))
	if t.truncated && s != "" {
		return "..." + s
	}
	return s
}
