//go:build !linux

package handoff

import (
	"fmt"
	"runtime"
)

// errNotLinux is what every function here and in queue_other.go returns:
// SO_REUSEPORT socket selection by BPF and the queue length queries exist
// only on Linux.
var errNotLinux = fmt.Errorf("%w on %s: needs Linux", ErrSteeringUnsupported, runtime.GOOS)

// WeightedSteering splits new connections between generations by weight in
// the kernel. Off Linux it cannot be created: NewWeightedSteering always fails.
type WeightedSteering struct{}

// NewWeightedSteering fails with an error wrapping ErrSteeringUnsupported off Linux.
func NewWeightedSteering() (*WeightedSteering, error) {
	return nil, fmt.Errorf("weighted steering: load program: %w", errNotLinux)
}

// Migrates is false off Linux.
func (w *WeightedSteering) Migrates() bool { return false }

// Attach fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) Attach(fd int) error {
	return fmt.Errorf("weighted steering: attach to socket fd %d: %w", fd, errNotLinux)
}

// SetGeneration fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) SetGeneration(gen int, fds []int) error {
	return fmt.Errorf("weighted steering: set generation %d: %w", gen, errNotLinux)
}

// SetWeight fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) SetWeight(weightB int) error {
	return fmt.Errorf("weighted steering: set weight of B to %d: %w", weightB, errNotLinux)
}

// Weight is 0 off Linux.
func (w *WeightedSteering) Weight() int { return 0 }

// Swap fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) Swap() error {
	return fmt.Errorf("weighted steering: swap: %w", errNotLinux)
}

// Counts fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) Counts() (WeightedCounts, error) {
	return WeightedCounts{}, fmt.Errorf("weighted steering: read counters: %w", errNotLinux)
}

// Close fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) Close() error {
	return fmt.Errorf("weighted steering: close: %w", errNotLinux)
}

// WeightedFDs are the fds of a WeightedSteering's program and maps.
type WeightedFDs struct{ Program, Sockets, State, Counters int }

// FDs returns no fds (all -1) off Linux.
func (w *WeightedSteering) FDs() WeightedFDs { return WeightedFDs{-1, -1, -1, -1} }

// WeightedSteeringFromFDs fails with an error wrapping ErrSteeringUnsupported off Linux.
func WeightedSteeringFromFDs(f WeightedFDs) (*WeightedSteering, error) {
	return nil, fmt.Errorf("weighted steering: take over program fd %d: %w", f.Program, errNotLinux)
}

// Slots fails with an error wrapping ErrSteeringUnsupported off Linux.
func (w *WeightedSteering) Slots(gen int) ([]uint64, error) {
	return nil, fmt.Errorf("weighted steering: slots of generation %d: %w", gen, errNotLinux)
}

// SocketCookie fails with an error wrapping ErrSteeringUnsupported off Linux:
// SO_COOKIE exists only there.
func SocketCookie(fd int) (uint64, error) {
	return 0, fmt.Errorf("socket fd %d: SO_COOKIE: %w", fd, errNotLinux)
}
