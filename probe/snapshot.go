package probe

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// State is a Prober's judgement of an instance.
type State int

const (
	// Unknown: not enough checks in a row either way yet.
	Unknown State = iota
	Healthy
	Unhealthy
)

func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Sample is the latency of one passing check. Seq is the check's number,
// counting every check from 1, so that samples can be told apart by the
// interval they fell in (see Snapshot.Since).
type Sample struct {
	Seq     uint64
	Latency time.Duration
}

// Snapshot is a Prober's state and counters at one moment. The counters
// only grow, so two snapshots give the figures of the time between them.
type Snapshot struct {
	State            State
	Checks, Failures uint64 // since Run started
	SuccessesInARow  int
	FailuresInARow   int
	LastCheck        time.Time // zero before the first check
	LastError        error     // of the last failed check, nil if none has failed
	// Latencies are of the latest passing checks, oldest first, at most
	// Schedule.LatencySamples. Failed checks have none: a refused
	// connection is fast and a timeout is the timeout, neither says how
	// fast the service answers; failures are counted apart.
	Latencies []Sample
}

// Window is what a Prober saw between two snapshots.
type Window struct {
	Checks, Failures uint64
	// Samples is how many passing checks' latencies the quantiles are
	// of: fewer than Checks-Failures if the window was longer than the
	// Prober keeps samples for.
	Samples    int
	LatencyP50 time.Duration
	LatencyP99 time.Duration
}

// Since returns the figures of the checks made after prev was taken.
// prev must be an earlier snapshot of the same Prober.
func (s Snapshot) Since(prev Snapshot) Window {
	w := Window{Checks: s.Checks - prev.Checks, Failures: s.Failures - prev.Failures}
	var lat []time.Duration
	for _, x := range s.Latencies {
		if x.Seq > prev.Checks {
			lat = append(lat, x.Latency)
		}
	}
	w.Samples = len(lat)
	slices.Sort(lat)
	w.LatencyP50 = quantile(lat, 0.5)
	w.LatencyP99 = quantile(lat, 0.99)
	return w
}

// Quantile is the q-quantile (0 < q <= 1) of all the latencies s holds, by
// the nearest-rank method; 0 if it holds none.
func (s Snapshot) Quantile(q float64) time.Duration {
	lat := make([]time.Duration, len(s.Latencies))
	for i, x := range s.Latencies {
		lat[i] = x.Latency
	}
	slices.Sort(lat)
	return quantile(lat, q)
}

// quantile is the nearest-rank q-quantile of sorted: the smallest value
// with at least q of the values at or below it. With few values the p99 is
// the largest, which is what a judge of a short interval wants.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// stats is a Prober's counters; Prober.mu guards it.
type stats struct {
	state                           State
	checks, failures                uint64
	successesInARow, failuresInARow int
	last                            time.Time
	lastErr                         error
	// ring holds the latest passing checks' latencies; next is where the
	// next one goes once it is full.
	ring []Sample
	next int
}

func newStats(samples int) stats {
	return stats{ring: make([]Sample, 0, samples)}
}

func (st *stats) add(at time.Time, latency time.Duration, err error) {
	st.checks++
	st.last = at
	if err != nil {
		st.failures++
		st.failuresInARow++
		st.successesInARow = 0
		st.lastErr = err
		return
	}
	st.successesInARow++
	st.failuresInARow = 0
	x := Sample{Seq: st.checks, Latency: latency}
	if len(st.ring) < cap(st.ring) {
		st.ring = append(st.ring, x)
		return
	}
	st.ring[st.next] = x
	st.next = (st.next + 1) % len(st.ring)
}

func (st *stats) snapshot() Snapshot {
	lat := make([]Sample, 0, len(st.ring))
	lat = append(lat, st.ring[st.next:]...)
	lat = append(lat, st.ring[:st.next]...)
	return Snapshot{
		State: st.state, Checks: st.checks, Failures: st.failures,
		SuccessesInARow: st.successesInARow, FailuresInARow: st.failuresInARow,
		LastCheck: st.last, LastError: st.lastErr, Latencies: lat,
	}
}
