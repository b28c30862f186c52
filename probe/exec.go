package probe

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Exec is a command that passes when it exits 0. As a readiness check
// (Wait) it is run until it passes; as a Check it is run once.
type Exec struct {
	Command []string // argv, no shell; Command[0] is not empty
	Dir     string   // working directory
	// Env is the complete environment; nil is an empty one, not baton's.
	Env      []string
	Interval time.Duration // Wait only: pause between tries
	// Credential, if set, is who the check runs as: the service's user,
	// so that a check script the service may write is no way to root.
	Credential *syscall.Credential
}

// Wait runs the command every Interval until it succeeds (nil) or ctx ends
// (an error wrapping ctx's error and saying why the last completed try
// failed). Each
// try is bounded by ctx too; its process group is killed when ctx ends.
func (e Exec) Wait(ctx context.Context) error {
	if len(e.Command) == 0 {
		return errNoCommand
	}
	var last error
	for {
		err := e.command().run(ctx)
		if err == nil {
			return nil
		}
		// A try cut short by ctx says only that ctx ended; the one before
		// it, if any, says why the command was not passing.
		if ctx.Err() == nil || last == nil {
			last = err
			var ce *CommandError
			if errors.As(err, &ce) {
				last = errors.New(ce.Status + outputSuffix(ce.Output))
			}
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

// Check runs the command once, bounded by ctx, and returns how long it
// ran. A failure is a *CommandError with the tail of the output. The
// command's process group never outlives the call: it is killed when ctx
// ends, and any process left in it when the command exits is killed too.
func (e Exec) Check(ctx context.Context) (time.Duration, error) {
	if len(e.Command) == 0 {
		return 0, errNoCommand
	}
	start := time.Now()
	err := e.command().run(ctx)
	return time.Since(start), err
}

func (e Exec) command() command {
	return command{kind: "exec check", argv: e.Command, dir: e.Dir, env: e.Env,
		credential: e.Credential, tail: execOutputTail}
}

var errNoCommand = errors.New("exec check: no command")

func outputSuffix(out string) string {
	if out == "" {
		return ""
	}
	return ": " + out
}
