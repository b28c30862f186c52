//go:build !linux

package probe

import "context"

// run is not supported here: the checks and hooks rely on a parent-death
// signal and waiting on a process without reaping it, which only Linux has.
// Its error wraps ErrNotSupported.
func (c command) run(ctx context.Context) error {
	return &CommandError{Kind: c.kind, Command: c.argv[0], Status: ErrNotSupported.Error(), Err: ErrNotSupported}
}
