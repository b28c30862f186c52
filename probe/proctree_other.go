//go:build !linux

package probe

import "fmt"

// TreeUsage needs /proc; here it returns an error wrapping ErrNotSupported.
func TreeUsage(pid int) (Usage, error) {
	return Usage{}, fmt.Errorf("process tree of %d: %w", pid, ErrNotSupported)
}
