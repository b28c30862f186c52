package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of a Schedule, the same as a Kubernetes probe's.
const (
	// DefaultInterval is the time from the start of one check to the start
	// of the next.
	DefaultInterval = 10 * time.Second
	// DefaultTimeout bounds each check; one that runs out of time fails.
	DefaultTimeout = time.Second
	// DefaultSuccessThreshold is how many checks in a row must pass for an
	// instance to be judged healthy.
	DefaultSuccessThreshold = 1
	// DefaultFailureThreshold is how many checks in a row must fail for an
	// instance to be judged unhealthy.
	DefaultFailureThreshold = 3
	// DefaultInitialDelay is the wait before the first check.
	DefaultInitialDelay = 0
	// DefaultLatencySamples is how many of the latest passing checks'
	// latencies a Prober keeps for its quantiles.
	DefaultLatencySamples = 1024
)

// Schedule says when a Prober checks and how it turns results into a
// state. Zero fields take the defaults above; negative ones are refused.
// The TOML keys are those of a [health] section.
type Schedule struct {
	Interval         time.Duration `toml:"interval"`
	Timeout          time.Duration `toml:"timeout"`
	SuccessThreshold int           `toml:"success_threshold"`
	FailureThreshold int           `toml:"failure_threshold"`
	InitialDelay     time.Duration `toml:"initial_delay"`
	// LatencySamples is the size of the window of latencies kept.
	LatencySamples int `toml:"-"`
}

// WithDefaults returns s with each zero field set to its default.
func (s Schedule) WithDefaults() Schedule {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&s.Interval, DefaultInterval)
	def(&s.Timeout, DefaultTimeout)
	def(&s.InitialDelay, DefaultInitialDelay)
	defInt(&s.SuccessThreshold, DefaultSuccessThreshold)
	defInt(&s.FailureThreshold, DefaultFailureThreshold)
	defInt(&s.LatencySamples, DefaultLatencySamples)
	return s
}

// ErrSchedule is wrapped by the errors of Schedule.Validate.
var ErrSchedule = errors.New("invalid probe schedule")

// Validate says which field of s is out of range, if one is.
func (s Schedule) Validate() error {
	switch {
	case s.Interval < 0:
		return fmt.Errorf("%w: interval %s is negative", ErrSchedule, s.Interval)
	case s.Timeout < 0:
		return fmt.Errorf("%w: timeout %s is negative", ErrSchedule, s.Timeout)
	case s.InitialDelay < 0:
		return fmt.Errorf("%w: initial delay %s is negative", ErrSchedule, s.InitialDelay)
	case s.SuccessThreshold < 0:
		return fmt.Errorf("%w: success threshold %d is negative", ErrSchedule, s.SuccessThreshold)
	case s.FailureThreshold < 0:
		return fmt.Errorf("%w: failure threshold %d is negative", ErrSchedule, s.FailureThreshold)
	case s.LatencySamples < 0:
		return fmt.Errorf("%w: latency samples %d is negative", ErrSchedule, s.LatencySamples)
	}
	return nil
}

// Transition is a change of a Prober's state, with the check that made it.
type Transition struct {
	From, To State
	At       time.Time // when the deciding check ended
	// Err is the deciding check's error when To is Unhealthy, else nil.
	Err error
	// Checks and Failures are the counters after the deciding check.
	Checks, Failures uint64
}

// Prober runs a Check on a Schedule and judges an instance healthy or
// unhealthy the way a Kubernetes probe does: SuccessThreshold passes in a
// row make it healthy, FailureThreshold failures in a row unhealthy, and
// anything in between keeps the state it had. It starts Unknown.
//
// Run owns the schedule and calls the check; Snapshot may be called from
// any goroutine at any time, also before Run and after it returned.
type Prober struct {
	check    Check
	sched    Schedule // with defaults; never changes
	onChange func(Transition)

	// mu guards stats. Run holds it only to update them after a check,
	// never across a check or a call of onChange; Snapshot to copy them.
	mu    sync.Mutex
	stats stats
}

// NewProber returns a Prober of c on s (zero fields defaulted). onChange,
// if not nil, is called on Run's goroutine for each change of state, in
// order; the next check waits until it returns, so it should hand the
// transition on (to a channel, an event loop) rather than act on it.
func NewProber(c Check, s Schedule, onChange func(Transition)) (*Prober, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no check", ErrSchedule)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	s = s.WithDefaults()
	return &Prober{check: c, sched: s, onChange: onChange, stats: newStats(s.LatencySamples)}, nil
}

// Schedule returns the schedule in force, defaults filled in.
func (p *Prober) Schedule() Schedule { return p.sched }

// Run checks after InitialDelay and then every Interval (a check that
// outlasts the interval delays the next; ticks are not made up) until ctx
// ends. It returns nil then: a stop is not an error, and a check cut short
// by the stop is not counted. Run is meant to be called once; its goroutine
// is the only one that checks and changes the state.
func (p *Prober) Run(ctx context.Context) error {
	t := time.NewTimer(p.sched.InitialDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		latency, err := Once(ctx, p.check, p.sched.Timeout)
		if ctx.Err() != nil {
			return nil
		}
		if tr, changed := p.record(latency, err); changed && p.onChange != nil {
			p.onChange(tr)
		}
		t.Reset(max(0, p.sched.Interval-time.Since(start)))
	}
}

// record counts one check's result and decides the state.
func (p *Prober) record(latency time.Duration, err error) (Transition, bool) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	from := p.stats.state
	p.stats.add(now, latency, err)
	to := from
	switch {
	case err == nil && p.stats.successesInARow >= p.sched.SuccessThreshold:
		to = Healthy
	case err != nil && p.stats.failuresInARow >= p.sched.FailureThreshold:
		to = Unhealthy
	}
	if to == from {
		return Transition{}, false
	}
	p.stats.state = to
	tr := Transition{From: from, To: to, At: now, Checks: p.stats.checks, Failures: p.stats.failures}
	if to == Unhealthy {
		tr.Err = err
	}
	return tr, true
}

// Snapshot returns the state and counters as of the last check.
func (p *Prober) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.snapshot()
}
