//go:build !linux

package handoff

import (
	"errors"
	"fmt"
	"runtime"
)

// ErrSteeringUnsupported is wrapped by every error that means "kernel steering
// cannot work here": no CAP_BPF/CAP_SYS_ADMIN, a kernel without the
// SK_REUSEPORT program type or socket array map, or not Linux.
var ErrSteeringUnsupported = errors.New("kernel steering unsupported")

// errNotLinux is what every function here returns: SO_REUSEPORT socket
// selection by BPF and the queue length queries exist only on Linux.
var errNotLinux = fmt.Errorf("%w on %s: needs Linux", ErrSteeringUnsupported, runtime.GOOS)

// Steering is one SO_REUSEPORT group's BPF program and its socket array map.
// Off Linux it cannot be created: NewSteering always fails.
type Steering struct{}

// NewSteering fails with an error wrapping ErrSteeringUnsupported off Linux.
func NewSteering() (*Steering, error) {
	return nil, fmt.Errorf("steering: load program: %w", errNotLinux)
}

// Migrates is false off Linux.
func (s *Steering) Migrates() bool { return false }

// Attach fails with an error wrapping ErrSteeringUnsupported off Linux.
func (s *Steering) Attach(fd int) error {
	return fmt.Errorf("steering: attach to socket fd %d: %w", fd, errNotLinux)
}

// Select fails with an error wrapping ErrSteeringUnsupported off Linux.
func (s *Steering) Select(fd int) error {
	return fmt.Errorf("steering: put socket fd %d in slot 0: %w", fd, errNotLinux)
}

// Close fails with an error wrapping ErrSteeringUnsupported off Linux.
func (s *Steering) Close() error {
	return fmt.Errorf("steering: close: %w", errNotLinux)
}

// QueueLen fails with an error wrapping ErrSteeringUnsupported off Linux.
func QueueLen(fd int, packet bool) (int, error) {
	return 0, fmt.Errorf("queue length of socket fd %d: %w", fd, errNotLinux)
}
