//go:build !linux

package handoff

import "fmt"

// QueueLen fails with an error wrapping ErrSteeringUnsupported off Linux.
func QueueLen(fd int, packet bool) (int, error) {
	return 0, fmt.Errorf("queue length of socket fd %d: %w", fd, errNotLinux)
}
