package probe

import "errors"

// Usage is the resources a process tree holds or has used: a process and
// all its descendants, as found at one moment.
type Usage struct {
	// RSSBytes is resident memory summed over the processes. Pages shared
	// between them (a forked worker's copy-on-write pages, shared
	// libraries) count once per process, as ps and top count them.
	RSSBytes uint64
	// CPUSeconds is user and system time since each process started,
	// including the time of the children each has waited for (cutime,
	// cstime), so that a worker exiting does not make the sum go down.
	CPUSeconds float64
	// Processes is how many processes the tree had, the root included.
	Processes int
}

// Sub returns the CPU time used between prev and u, with u's memory and
// process count: the figures of an interval. A sum that went down (a
// descendant left the tree with its time: orphaned to init when its parent
// exited, or reaped by a process outside the tree) counts as no time used
// rather than negative time.
func (u Usage) Sub(prev Usage) Usage {
	d := u
	d.CPUSeconds = max(0, u.CPUSeconds-prev.CPUSeconds)
	return d
}

// ErrNoProcess is wrapped by TreeUsage's error when the root process does
// not exist (any more).
var ErrNoProcess = errors.New("no such process")
