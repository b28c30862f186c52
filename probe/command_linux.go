//go:build linux

package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outputDrain bounds the wait for the output pipe's end after the process
// group is gone: only a process that left the group (setsid) can still hold
// the pipe, and its output is not worth a longer wait.
const outputDrain = 100 * time.Millisecond

// run starts c and waits for it. Invariants, whatever the outcome:
//   - the process group does not outlive the call: once the leader has
//     exited, or been killed because ctx ended, the group gets SIGKILL
//     before the leader is reaped, so its id cannot have been reused;
//   - the call returns within grace plus a short drain after ctx ends (a
//     process in uninterruptible sleep aside);
//   - the error is a *CommandError, or nil for exit status 0.
func (c command) run(ctx context.Context) error {
	fail := func(status string, err error, out *tailBuffer) error {
		e := &CommandError{Kind: c.kind, Command: c.argv[0], Status: status, Err: err}
		if out != nil {
			e.Output = out.String()
		}
		return e
	}
	if err := ctx.Err(); err != nil {
		return fail("not started: "+err.Error(), context.Cause(ctx), nil)
	}
	// Output goes through a pipe of our own, not os/exec's copying
	// goroutines: their Wait would not return while a background child
	// still held the pipe, and the group could not be killed before that.
	r, w, err := os.Pipe()
	if err != nil {
		return fail("could not start: "+err.Error(), err, nil)
	}
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would be baton's environment
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.credential}
	err = cmd.Start()
	_ = w.Close() // the child has its copy; ours would keep the pipe open
	if err != nil {
		_ = r.Close()
		return fail("could not start: "+err.Error(), err, nil)
	}
	out := newTailBuffer(c.tail)
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, r) // ends at EOF, or when r is closed below
		close(copied)
	}()

	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pid)
		close(exited)
	}()
	var stopped string
	select {
	case <-exited:
	case <-ctx.Done():
		stopped = c.stop(pid, exited)
	}
	// The leader is a zombie until Wait: its pid, and so the group id,
	// cannot name another process yet.
	_ = syscall.Kill(-pid, syscall.SIGKILL) // ESRCH: the group is gone already
	werr := cmd.Wait()

	drain := time.NewTimer(outputDrain)
	select {
	case <-copied:
	case <-drain.C:
	}
	drain.Stop()
	_ = r.Close() // unblocks the copy if an escaped process holds the pipe
	<-copied

	switch {
	case stopped != "":
		cause := context.Cause(ctx)
		return fail(cause.Error()+", "+stopped, cause, out)
	case werr != nil:
		return fail(werr.Error(), werr, out)
	}
	return nil
}

// stop ends the group after ctx ended: SIGTERM, then SIGKILL after the
// grace, or SIGKILL at once without one. It returns once the leader has
// exited, with the status for the error.
func (c command) stop(pid int, exited <-chan struct{}) string {
	if c.grace <= 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // ESRCH: it exited meanwhile
		<-exited
		return "killed with its process group"
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM) // ESRCH: it exited meanwhile
	t := time.NewTimer(c.grace)
	defer t.Stop()
	select {
	case <-exited:
		return "stopped with SIGTERM"
	case <-t.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
		return fmt.Sprintf("killed with SIGKILL %s after SIGTERM", c.grace)
	}
}

// waitExited blocks until pid has exited, without reaping it (WNOWAIT):
// cmd.Wait does that, after the group has been killed.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return // nil, or ECHILD if it was reaped: exited either way
		}
	}
}
