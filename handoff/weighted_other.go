//go:build !linux

package handoff

import (
	"errors"
	"fmt"
)

// Generations of a WeightedSteering: A is the one serving (the old one during
// an upgrade), B the one taking a share.
const (
	GenerationA = 0
	GenerationB = 1
)

// WeightedInstances is how many sockets (one per instance) a generation can have.
const WeightedInstances = 32

// ErrEmptyGeneration is wrapped by the error of a change that would give a
// share of new connections to a generation without sockets.
var ErrEmptyGeneration = errors.New("generation has a share of new connections but no sockets")

// WeightedCounts are the program's counters; see the Linux version.
type WeightedCounts struct {
	A, B     [WeightedInstances]uint64
	Fallback uint64
	Migrated uint64
}

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
