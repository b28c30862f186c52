package child

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv names the helper program a re-executed test binary runs.
const helperEnv = "CHILD_TEST_HELPER"

// helpers are the programs the tests start as real child processes. A
// helper writes its findings to stdout and exits 0, or exits 1 after
// writing what went wrong to stderr.
var helpers = map[string]func() error{
	"shim":    shimHelper,
	"sockets": socketsHelper,
	"flags":   flagsHelper,
}

// usedHelpers are the helpers the tests started (in the parent test
// process); a helper no test starts is an error, as in os/exec's tests.
var usedHelpers = map[string]bool{}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "no helper %q\n", name)
			os.Exit(2)
		}
		if err := h(); err != nil {
			fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(helpersUsed{m})
}

// helpersUsed runs the tests and then fails if a helper went unused in a
// full run (not one narrowed with -run).
type helpersUsed struct{ m *testing.M }

func (h helpersUsed) Run() int {
	code := h.m.Run()
	if code != 0 || testing.Short() || flagSet("test.run") {
		return code
	}
	for name := range helpers {
		if name != "shim" && !usedHelpers[name] {
			fmt.Fprintf(os.Stderr, "helper %q is never used\n", name)
			return 1
		}
	}
	return code
}

func flagSet(name string) bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

// shimHelper does what baton's exec shim does: it sets LISTEN_PID to its
// own pid and execs the test binary again as the helper in
// CHILD_TEST_NEXT. The pid survives exec, so the helper finds its sockets
// meant for it, as a service started by baton or systemd does.
func shimHelper() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	env := []string{"LISTEN_PID=" + fmt.Sprint(os.Getpid()), helperEnv + "=" + os.Getenv("CHILD_TEST_NEXT")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_PID=") && !strings.HasPrefix(kv, helperEnv+"=") {
			env = append(env, kv)
		}
	}
	return syscall.Exec(exe, []string{exe}, env)
}

// helperProcess is a started helper, with its stdout read line by line.
type helperProcess struct {
	cmd    *exec.Cmd
	lines  chan string // closed at EOF
	stderr strings.Builder
}

// startHelper starts helper name through the shim (so LISTEN_PID is its
// own pid) with env added and extra from fd 3; it is killed at the end of
// the test if still running.
func startHelper(t *testing.T, name string, env []string, extra ...*os.File) *helperProcess {
	t.Helper()
	usedHelpers[name] = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &helperProcess{cmd: exec.CommandContext(ctx, exe), lines: make(chan string, 100)}
	// GORACE: a binary built with -race otherwise waits 1 s at exit.
	h.cmd.Env = append(os.Environ(), append([]string{helperEnv + "=shim", "CHILD_TEST_NEXT=" + name, "GORACE=atexit_sleep_ms=0"}, env...)...)
	h.cmd.ExtraFiles = extra
	h.cmd.Stderr = &h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out) // a line too long for the scanner: let the process finish
	}()
	t.Cleanup(func() { _ = h.cmd.Process.Kill(); _ = h.wait() })
	return h
}

// next is the helper's next line of output, waiting at most 10 s.
func (h *helperProcess) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			t.Fatalf("helper ended its output early: %v; stderr: %s", h.wait(), h.stderr.String())
		}
		return line
	case <-time.After(10 * time.Second):
		t.Fatalf("no line from the helper in 10 s; stderr: %s", h.stderr.String())
	}
	return ""
}

// rest is the rest of the helper's output, by line, once it has ended.
func (h *helperProcess) rest(t *testing.T) []string {
	t.Helper()
	var lines []string
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				return lines
			}
			lines = append(lines, line)
		case <-time.After(10 * time.Second):
			t.Fatalf("the helper's output did not end in 10 s; so far: %q", lines)
		}
	}
}

// wait waits for the helper to exit (bounded by startHelper's context).
func (h *helperProcess) wait() error {
	for range h.lines { // Wait must not run before stdout is read to the end
	}
	return h.cmd.Wait()
}

// fakeNotify is a notify socket, as baton's or systemd's, with
// NOTIFY_SOCKET pointing at it for the rest of the test.
func fakeNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// receive is the next message on a fake notify socket, waiting at most 5 s.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 8192)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notify message: %v", err)
	}
	return string(buf[:n])
}
