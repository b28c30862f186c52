package handoff

import "errors"

// The part of WeightedSteering's API that is the same on every platform, so
// that code sized by it (the supervisor's instance limit) builds everywhere
// from one definition.

// ErrSteeringUnsupported is wrapped by every error that means "kernel steering
// cannot work here": no CAP_BPF/CAP_SYS_ADMIN, a kernel without the
// SK_REUSEPORT program type, socket arrays or mmapable arrays, or not Linux.
var ErrSteeringUnsupported = errors.New("kernel steering unsupported")

// Generations of a WeightedSteering: A is the one serving (the old one during
// an upgrade), B the one taking a share.
const (
	GenerationA = 0
	GenerationB = 1
)

// WeightedInstances is how many sockets (one per instance) a generation can
// have. The socket array holds twice as many, one half per generation, and
// the state word counts each half's sockets in 8 bits, so it must stay at
// most 255 (weighted_linux.go checks that at compile time). A steering made
// with another value has maps of another size and is refused by
// WeightedSteeringFromFDs.
const WeightedInstances = 64

// ErrEmptyGeneration is wrapped by the error of a change that would give a
// share of new connections to a generation without sockets.
var ErrEmptyGeneration = errors.New("generation has a share of new connections but no sockets")

// WeightedCounts are the program's counters, cumulative since
// NewWeightedSteering: the share of a step is the difference of two snapshots.
type WeightedCounts struct {
	// A and B are the new connections the program put on each slot of the
	// generation (SetGeneration says which socket sits in which slot).
	A, B [WeightedInstances]uint64
	// Fallback counts the connections, new or migrating, that the program
	// could not place: the chosen slot was empty (its socket was closed
	// while still in it) or held another group's socket. The kernel's hash
	// chose among all the group's sockets for them, whatever their
	// generation. Nonzero means the ordering rules were broken.
	Fallback uint64
	// Migrated counts the connections queued on a closing socket that the
	// program moved to another socket (only when Migrates is true). Zero when
	// every retired socket was drained before it was closed.
	Migrated uint64
}
