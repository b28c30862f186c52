package probe

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Check tests an instance once. It returns how long the test took and nil
// if the instance passed, or an error saying why it did not. It must return
// promptly once ctx ends: the caller's context is its only timeout.
type Check interface {
	Check(ctx context.Context) (time.Duration, error)
}

// CheckFunc is a function as a Check.
type CheckFunc func(ctx context.Context) (time.Duration, error)

// Check calls f.
func (f CheckFunc) Check(ctx context.Context) (time.Duration, error) { return f(ctx) }

// ErrTimeout marks a check cut short by its own timeout, as opposed to its
// caller giving up (an error wrapping the caller's context error).
var ErrTimeout = errors.New("check timed out")

// Once runs c once, bounded by timeout (DefaultTimeout if 0). A check that
// ran out of its time fails with an error wrapping ErrTimeout.
func Once(ctx context.Context, c Check, timeout time.Duration) (time.Duration, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()
	d, err := c.Check(cctx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(cctx), ErrTimeout) && !errors.Is(err, ErrTimeout) {
		// The check returned its own error for the cut (a dial error,
		// "context deadline exceeded"); say which deadline it was.
		err = fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
	}
	return d, err
}

// Until runs c every interval, each try bounded by timeout, until it passes
// (nil) or ctx ends (an error wrapping ctx's cause and saying why the last
// try failed, wrapped too). It is a readiness check made of a single check, as Exec.Wait
// is for a command. The first try is at once.
func Until(ctx context.Context, c Check, interval, timeout time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("probe: interval %s is not positive", interval)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				return fmt.Errorf("check: %w (not tried)", context.Cause(ctx))
			}
			return fmt.Errorf("check: %w (last try: %w)", context.Cause(ctx), last)
		case <-t.C:
		}
		_, err := Once(ctx, c, timeout)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil { // a try cut short by ctx says less than the one before
			last = err
		}
		t.Reset(interval)
	}
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
