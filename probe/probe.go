//go:build linux

package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Exec runs a command until it exits 0.
type Exec struct {
	Command  []string      // argv, no shell
	Dir      string        // working directory
	Env      []string      // complete environment
	Interval time.Duration // pause between tries
	// Credential, if set, is who the check runs as: the service's user,
	// so that a check script the service may write is no way to root.
	Credential *syscall.Credential
}

// Wait runs the command every Interval until it succeeds (nil) or ctx ends
// (an error wrapping ctx's error and saying why the last try failed). Each
// try is bounded by ctx too; its process group is killed when ctx ends.
func (e Exec) Wait(ctx context.Context) error {
	var last error
	for {
		last = e.try(ctx)
		if last == nil {
			return nil
		}
		t := time.NewTimer(e.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("exec check %s: %w (last try: %v)", e.Command[0], context.Cause(ctx), last)
		case <-t.C:
		}
	}
}

func (e Exec) try(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, e.Command[0], e.Command[1:]...)
	cmd.Dir = e.Dir
	cmd.Env = e.Env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: e.Credential}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && msg != "" {
		return fmt.Errorf("%w: %s", err, msg)
	}
	return err
}

// Delay judges a process ready once it has run for d. The caller stops
// waiting if the process exits first.
func Delay(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("delay check: %w", context.Cause(ctx))
	case <-t.C:
		return nil
	}
}
