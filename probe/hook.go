package probe

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Defaults of a Hook.
const (
	// DefaultHookTimeout bounds a hook that sets no timeout.
	DefaultHookTimeout = 30 * time.Second
	// DefaultHookGrace is the wait between SIGTERM and SIGKILL to a hook's
	// process group once its timeout has passed.
	DefaultHookGrace = 2 * time.Second
)

// Hook is a command run at a point of a generation's life (before an
// upgrade, after a revert...), whose failure the caller may act on.
type Hook struct {
	Command []string // argv, no shell; Command[0] is not empty
	// Timeout bounds the run, DefaultHookTimeout if 0. When it passes the
	// process group gets SIGTERM, and SIGKILL Grace later.
	Timeout time.Duration
	Grace   time.Duration // DefaultHookGrace if 0
	// Env is the complete environment; nil is an empty one, not baton's,
	// so that baton's NOTIFY_SOCKET and LISTEN_* do not leak into it.
	Env []string
	Dir string // working directory; "" is baton's
	// Credential, if set, is who the hook runs as.
	Credential *syscall.Credential
}

// ErrHookTimeout is the cause of a hook stopped because its Timeout
// passed; errors.Is(err, context.DeadlineExceeded) holds for it too.
var ErrHookTimeout = fmt.Errorf("hook timed out: %w", context.DeadlineExceeded)

// RunHook runs h and waits for it, within ctx and h.Timeout. It returns nil
// if the command exited 0, and otherwise a *CommandError that names the
// command, says how it ended (exit status, signal, timeout) and quotes the
// last HookOutputTail bytes of its output, stdout and stderr together. A
// timeout wraps ErrHookTimeout; ctx ending first wraps ctx's cause.
//
// The hook's process group does not outlive RunHook: anything the hook left
// running in it when it exited gets SIGKILL. A hook that means to start
// something lasting must start it in a session of its own (setsid).
func RunHook(ctx context.Context, h Hook) error {
	if len(h.Command) == 0 || h.Command[0] == "" {
		return errors.New("hook: no command")
	}
	timeout, grace := h.Timeout, h.Grace
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	if grace <= 0 {
		grace = DefaultHookGrace
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("%w after %s", ErrHookTimeout, timeout))
	defer cancel()
	return command{kind: "hook", argv: h.Command, dir: h.Dir, env: h.Env,
		credential: h.Credential, grace: grace, tail: HookOutputTail}.run(ctx)
}
