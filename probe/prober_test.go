package probe

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// script is a Check that returns the given results in order, then tells
// done and blocks until its context ends. A result of 0 fails; any other
// passes with that latency in milliseconds.
type script struct {
	results []int
	n       int           // calls so far; only the Prober's goroutine touches it
	done    chan struct{} // closed when the script is exhausted
}

func newScript(results ...int) *script {
	return &script{results: results, done: make(chan struct{})}
}

var errScripted = errors.New("scripted failure")

func (s *script) Check(ctx context.Context) (time.Duration, error) {
	if s.n == len(s.results) {
		close(s.done)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	r := s.results[s.n]
	s.n++
	if r == 0 {
		return time.Millisecond, fmt.Errorf("check %d: %w", s.n, errScripted)
	}
	return time.Duration(r) * time.Millisecond, nil
}

// runScript runs a Prober over the script, waits for it to be exhausted,
// and returns the transitions and the final snapshot. The timeout is long
// enough that the blocking last call is never cut short by it.
func runScript(t *testing.T, s *script, sched Schedule) ([]Transition, Snapshot) {
	t.Helper()
	var trs []Transition // appended on Run's goroutine, read after Run returned
	if sched.Interval == 0 {
		sched.Interval = time.Millisecond
	}
	sched.Timeout = time.Minute
	p, err := NewProber(s, sched, func(tr Transition) { trs = append(trs, tr) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Error("script not exhausted in 10s")
	}
	snap := p.Snapshot()
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run after cancel: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	return trs, snap
}

func TestProberTransitions(t *testing.T) {
	type step struct {
		from, to State
		checks   uint64
	}
	for _, tc := range []struct {
		name    string
		sched   Schedule
		results []int
		want    []step
	}{
		{"healthy at the first pass", Schedule{}, []int{1, 1, 1},
			[]step{{Unknown, Healthy, 1}}},
		{"unhealthy after three failures", Schedule{}, []int{0, 0, 0, 0},
			[]step{{Unknown, Unhealthy, 3}}},
		{"two failures in a row are forgiven", Schedule{}, []int{1, 0, 0, 1, 0, 0, 1},
			[]step{{Unknown, Healthy, 1}}},
		{"down and up again", Schedule{}, []int{1, 0, 0, 0, 0, 1},
			[]step{{Unknown, Healthy, 1}, {Healthy, Unhealthy, 4}, {Unhealthy, Healthy, 6}}},
		{"success threshold 2", Schedule{SuccessThreshold: 2}, []int{1, 0, 1, 1, 0, 0, 0, 1, 1},
			[]step{{Unknown, Healthy, 4}, {Healthy, Unhealthy, 7}, {Unhealthy, Healthy, 9}}},
		{"failure threshold 1", Schedule{FailureThreshold: 1}, []int{0, 1, 0},
			[]step{{Unknown, Unhealthy, 1}, {Unhealthy, Healthy, 2}, {Healthy, Unhealthy, 3}}},
		{"no decision either way", Schedule{SuccessThreshold: 3}, []int{1, 1, 0, 1, 0, 0},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trs, snap := runScript(t, newScript(tc.results...), tc.sched)
			var got []step
			for _, tr := range trs {
				got = append(got, step{tr.From, tr.To, tr.Checks})
				if (tr.To == Unhealthy) != errors.Is(tr.Err, errScripted) {
					t.Errorf("transition to %v has Err %v", tr.To, tr.Err)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("transitions %v; want %v", got, tc.want)
			}
			var failures uint64
			for _, r := range tc.results {
				if r == 0 {
					failures++
				}
			}
			if snap.Checks != uint64(len(tc.results)) || snap.Failures != failures {
				t.Errorf("snapshot counts %d checks, %d failures; want %d, %d",
					snap.Checks, snap.Failures, len(tc.results), failures)
			}
			wantState := Unknown
			if len(tc.want) > 0 {
				wantState = tc.want[len(tc.want)-1].to
			}
			if snap.State != wantState {
				t.Errorf("state %v; want %v", snap.State, wantState)
			}
		})
	}
}

func TestProberLatencies(t *testing.T) {
	// 1..100 ms, with failures in between that have no latency.
	var results []int
	for i := 1; i <= 100; i++ {
		results = append(results, i)
		if i%10 == 0 {
			results = append(results, 0)
		}
	}
	_, snap := runScript(t, newScript(results...), Schedule{})
	if q50, q99 := snap.Quantile(0.5), snap.Quantile(0.99); q50 != 50*time.Millisecond || q99 != 99*time.Millisecond {
		t.Errorf("p50 %v, p99 %v; want 50ms, 99ms", q50, q99)
	}
	// The last 22 checks are 81..100 and two failures.
	prev := Snapshot{Checks: snap.Checks - 22, Failures: snap.Failures - 2}
	w := snap.Since(prev)
	want := Window{Checks: 22, Failures: 2, Samples: 20, LatencyP50: 90 * time.Millisecond, LatencyP99: 100 * time.Millisecond}
	if w != want {
		t.Errorf("Since = %+v; want %+v", w, want)
	}
	if got := snap.Since(snap); got != (Window{}) {
		t.Errorf("empty window = %+v", got)
	}
}

func TestProberKeepsTheLatestSamples(t *testing.T) {
	_, snap := runScript(t, newScript(5, 6, 7, 8, 9), Schedule{LatencySamples: 3})
	if len(snap.Latencies) != 3 || snap.Latencies[0] != (Sample{3, 7 * time.Millisecond}) ||
		snap.Latencies[2] != (Sample{5, 9 * time.Millisecond}) {
		t.Errorf("Latencies = %v; want checks 3..5, oldest first", snap.Latencies)
	}
}

// TestProberTimesOutAHangingCheck: a check that does not answer within
// Timeout fails, and the next one is still made.
func TestProberTimesOutAHangingCheck(t *testing.T) {
	hang := CheckFunc(func(ctx context.Context) (time.Duration, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	changed := make(chan Transition, 1)
	p, err := NewProber(hang, Schedule{Interval: time.Millisecond, Timeout: 10 * time.Millisecond, FailureThreshold: 2},
		func(tr Transition) { changed <- tr })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	select {
	case tr := <-changed:
		if tr.To != Unhealthy || !errors.Is(tr.Err, ErrTimeout) || tr.Checks != 2 {
			t.Errorf("transition %+v; want unhealthy after 2 timeouts", tr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no transition in 10s")
	}
}

func TestProberInitialDelayAndStop(t *testing.T) {
	called := make(chan struct{}, 1)
	c := CheckFunc(func(ctx context.Context) (time.Duration, error) {
		select {
		case called <- struct{}{}:
		default:
		}
		return 0, nil
	})
	const delay = 50 * time.Millisecond
	p, err := NewProber(c, Schedule{InitialDelay: delay, Interval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	start := time.Now()
	go func() { ran <- p.Run(ctx) }()
	select {
	case <-called:
		if took := time.Since(start); took < delay {
			t.Errorf("first check after %v; want at least %v", took, delay)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no check in 10s")
	}
	cancel() // during the hour-long interval
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestScheduleDefaultsAndValidation(t *testing.T) {
	got := Schedule{}.WithDefaults()
	want := Schedule{Interval: 10 * time.Second, Timeout: time.Second, SuccessThreshold: 1,
		FailureThreshold: 3, InitialDelay: 0, LatencySamples: DefaultLatencySamples}
	if got != want {
		t.Errorf("defaults %+v; want %+v", got, want)
	}
	if kept := (Schedule{Interval: time.Second, FailureThreshold: 5}).WithDefaults(); kept.Interval != time.Second || kept.FailureThreshold != 5 {
		t.Errorf("set fields not kept: %+v", kept)
	}
	for _, s := range []Schedule{
		{Interval: -1}, {Timeout: -1}, {InitialDelay: -1}, {SuccessThreshold: -1}, {FailureThreshold: -1}, {LatencySamples: -1},
	} {
		if _, err := NewProber(newScript(), s, nil); !errors.Is(err, ErrSchedule) {
			t.Errorf("%+v: err = %v; want ErrSchedule", s, err)
		}
	}
	if _, err := NewProber(nil, Schedule{}, nil); !errors.Is(err, ErrSchedule) {
		t.Errorf("no check: err = %v", err)
	}
}

func TestUntil(t *testing.T) {
	n := 0
	third := CheckFunc(func(ctx context.Context) (time.Duration, error) {
		if n++; n < 3 {
			return 0, fmt.Errorf("try %d: %w", n, errScripted)
		}
		return 0, nil
	})
	if err := Until(context.Background(), third, time.Millisecond, time.Second); err != nil || n != 3 {
		t.Errorf("Until = %v after %d tries; want nil after 3", err, n)
	}
	never := CheckFunc(func(ctx context.Context) (time.Duration, error) { return 0, errScripted })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := Until(ctx, never, time.Millisecond, time.Second); !errors.Is(err, context.DeadlineExceeded) ||
		!errors.Is(err, errScripted) {
		t.Errorf("Until = %v; want the deadline and the last try's error", err)
	}
	if err := Until(context.Background(), never, 0, time.Second); err == nil {
		t.Error("zero interval accepted")
	}
}
