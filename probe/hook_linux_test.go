//go:build linux

package probe

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fifo makes a named pipe for a command to announce itself on, and returns
// its path and a channel that gets the first line written to it. The
// reader is released at cleanup if nobody wrote.
func fifo(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		f, err := os.Open(path) // blocks until a writer opens it
		if err != nil {
			line <- ""
			return
		}
		defer f.Close()
		s, _ := bufio.NewReader(f).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	t.Cleanup(func() {
		// A writer that never came: open one ourselves so the reader ends.
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	})
	return path, line
}

// waitLine waits a bounded time for the fifo's line.
func waitLine(t *testing.T, line <-chan string) string {
	t.Helper()
	select {
	case s := <-line:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on the fifo in 10s")
		return ""
	}
}

// assertDead fails unless pid is gone or a zombie within a bounded time:
// SIGKILL to a group is delivered to each member asynchronously, and an
// orphan is reaped by whoever adopts it.
func assertDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d still alive: %s", pid, b)
			return
		}
		time.Sleep(5 * time.Millisecond) // polling a state the kernel sets; nothing to hand-shake with
	}
}

// openFDs lists the test process's open descriptors.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fds[e.Name()] = target
	}
	return fds
}

func TestRunHookSucceeds(t *testing.T) {
	before := openFDs(t)
	if err := RunHook(context.Background(), Hook{Command: []string{"/bin/sh", "-c", "echo fine"}}); err != nil {
		t.Fatal(err)
	}
	for fd, target := range openFDs(t) {
		if before[fd] == "" && strings.HasPrefix(target, "pipe:") {
			t.Errorf("fd %s (%s) left open", fd, target)
		}
	}
}

func TestRunHookSaysWhyItFailed(t *testing.T) {
	err := RunHook(context.Background(), Hook{
		Command: []string{"/bin/sh", "-c", `echo "to stdout"; echo "migration 42 failed: disk full" >&2; exit 3`},
	})
	var ce *CommandError
	var ee *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("err = %#v; want a *CommandError around an exit status 3", err)
	}
	if ce.Kind != "hook" || ce.Command != "/bin/sh" || ce.Status != "exit status 3" ||
		ce.Output != "to stdout\nmigration 42 failed: disk full" {
		t.Errorf("got %+v", ce)
	}
	if want := "hook /bin/sh: exit status 3: to stdout\nmigration 42 failed: disk full"; err.Error() != want {
		t.Errorf("message %q\nwant %q", err, want)
	}
}

func TestRunHookKeepsTheTailOfLongOutput(t *testing.T) {
	err := RunHook(context.Background(), Hook{
		Command: []string{"/bin/sh", "-c", `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise"; i=$((i+1)); done; echo "the reason" >&2; exit 1`},
	})
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	if len(ce.Output) > HookOutputTail+3 || !strings.HasPrefix(ce.Output, "...") || !strings.HasSuffix(ce.Output, "the reason") {
		t.Errorf("output of %d bytes: %.40q...%q", len(ce.Output), ce.Output, ce.Output[max(0, len(ce.Output)-40):])
	}
}

func TestRunHookTimesOut(t *testing.T) {
	start := time.Now()
	err := RunHook(context.Background(), Hook{Command: []string{"sleep", "30"}, Timeout: 50 * time.Millisecond, Grace: 10 * time.Second})
	var ce *CommandError
	if !errors.Is(err, ErrHookTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ce) {
		t.Fatalf("err = %v; want a timeout", err)
	}
	// sleep dies of SIGTERM: no need to wait out the grace.
	if !strings.Contains(ce.Status, "after 50ms") || !strings.Contains(ce.Status, "stopped with SIGTERM") {
		t.Errorf("status %q", ce.Status)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestRunHookKillsWhatIgnoresSIGTERM: a hook whose whole group ignores
// SIGTERM gets SIGKILL after the grace, background children included.
func TestRunHookKillsWhatIgnoresSIGTERM(t *testing.T) {
	path, line := fifo(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- RunHook(ctx, Hook{
			Command: []string{"/bin/sh", "-c", `trap "" TERM; sleep 30 & echo $! > "$FIFO"; wait; echo "never"`},
			Env:     []string{"FIFO=" + path, "PATH=" + os.Getenv("PATH")},
			Grace:   100 * time.Millisecond,
		})
	}()
	child, _ := strconv.Atoi(waitLine(t, line))
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunHook did not return")
	}
	var ce *CommandError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &ce) || !strings.Contains(ce.Status, "killed with SIGKILL 100ms after SIGTERM") {
		t.Errorf("err = %v", err)
	}
	if child <= 0 {
		t.Fatal("no pid from the hook")
	}
	assertDead(t, child)
}

// TestRunHookLeavesNothingBehind: what a hook leaves running in its group
// when it exits is killed, and does not hold RunHook up through the pipe.
func TestRunHookLeavesNothingBehind(t *testing.T) {
	path, line := fifo(t)
	start := time.Now()
	err := RunHook(context.Background(), Hook{
		Command: []string{"/bin/sh", "-c", `sleep 30 & echo $! > "$FIFO"; exit 0`},
		Env:     []string{"FIFO=" + path, "PATH=" + os.Getenv("PATH")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
	child, _ := strconv.Atoi(waitLine(t, line))
	if child <= 0 {
		t.Fatal("no pid from the hook")
	}
	assertDead(t, child)
}

func TestRunHookRefuses(t *testing.T) {
	var ce *CommandError
	if err := RunHook(context.Background(), Hook{Command: []string{"/nonexistent/hook"}}); !errors.As(err, &ce) ||
		!errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing program: %v", err)
	}
	if err := RunHook(context.Background(), Hook{}); err == nil {
		t.Error("no command: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := RunHook(ctx, Hook{Command: []string{"/bin/true"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestRunHookEnvironmentIsOnlyWhatIsGiven(t *testing.T) {
	t.Setenv("BATON_SECRET_FOR_TEST", "leak")
	err := RunHook(context.Background(), Hook{
		Command: []string{"/bin/sh", "-c", `test -z "$BATON_SECRET_FOR_TEST" && test "$GIVEN" = yes && test "$(pwd)" = "$DIR"`},
		Env:     []string{"GIVEN=yes", "DIR=/tmp"}, Dir: "/tmp",
	})
	if err != nil {
		t.Error(err)
	}
}
