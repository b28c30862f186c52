//go:build linux

package supervisor

import (
	"sync"
	"time"
)

// Kinds of Event, one per step of a generation's life.
const (
	EventSpawned     = "spawned"      // a process of the generation started
	EventReady       = "ready"        // it passed its readiness check (Duration: time to ready)
	EventPromoted    = "promoted"     // new connections go to it (Replaces: the generation it replaced)
	EventFailed      = "failed"       // the upgrade to it failed (Reason); Gen 0: the upgrade could not even start (a broken config, say)
	EventDraining    = "draining"     // unrouted, its accept queues are emptying
	EventStopping    = "stopping"     // its stop signal was sent (Reason)
	EventRetired     = "retired"      // its process exited and its sockets are closed (Duration: since it was replaced)
	EventCrashed     = "crashed"      // a serving process exited on its own (Reason: exit status)
	EventGaveUp      = "gave-up"      // it crashed more often than [restart] max_tries allows
	EventStep        = "step"         // the candidate's share changed (Weight; Duration: the step's pause, 0 for a hold)
	EventUnhealthy   = "unhealthy"    // a process failed its health check or watchdog (Reason)
	EventConfirmed   = "confirmed"    // the promoted generation passed its probation (Duration: the probation)
	EventReverted    = "reverted"     // the generation on probation was reverted (Reason); Replaces: the one that serves again
	EventFailedState = "failed-state" // too many reverts: upgrades are refused until one is forced (Reason)
	EventAnalysis    = "analysis"     // one measurement of the canary analysis (Reason: its figures)
	EventFlag        = "flag"         // a feature flag changed (Flag; Weight: its new percent; Reason: from, to, by whom)
)

// Causes of a revert.
const (
	CauseCrash    = "crash"
	CauseLiveness = "liveness"
	CauseAnalysis = "analysis"
	CauseRollback = "rollback"
	CauseAbort    = "abort"
)

// Event is one step of a generation's life. Every step is also one log line.
type Event struct {
	Time     time.Time
	Kind     string
	Gen      int
	Instance int           // the instance (0-based) for spawned, ready, stopping, crashed, gave-up
	PID      int           // 0 where no process is involved
	Replaces int           // promoted: the generation replaced, 0 if none
	Rollback bool          // promoted or failed: the upgrade was a rollback
	Reason   string        // failed, stopping, crashed: why
	Duration time.Duration // ready: time to ready; retired: time since it was replaced
	Weight   int           // step: the candidate's target percent of new connections
	// Step and Steps (step, canary only): the step begun, 1-based, and how
	// many there are; 0 for a rolling update's steps.
	Step, Steps int
	// Aborted (failed): the upgrade was undone by `baton abort`.
	Aborted bool
	// Flag and By (flag): the feature flag that changed, and who changed
	// it: "operator", "config" or "analysis".
	Flag, By string
	// Cause (reverted): CauseCrash, CauseLiveness, CauseAnalysis,
	// CauseRollback or CauseAbort. Outcome (analysis): "pass", "fail" or
	// "inconclusive". RevertOf (promoted): the promotion ends a revert of
	// that generation, which had no standby.
	Cause    string
	Outcome  string
	RevertOf int
}

// Subscribe returns a channel that receives every event from now on, and a
// function that ends the subscription. Events are never waited for: a
// subscriber that falls more than buffer events behind loses the excess,
// and the supervisor goes on.
func (s *Supervisor) Subscribe(buffer int) (<-chan Event, func()) {
	return s.subs.add(buffer)
}

// broadcaster fans events out to subscribers. Its own mutex guards only the
// set of subscribers; it is held for non-blocking sends only.
type broadcaster struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

func (b *broadcaster) add(buffer int) (<-chan Event, func()) {
	ch := make(chan Event, buffer)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[chan Event]struct{})
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, ch)
			b.mu.Unlock()
		})
	}
}

func (b *broadcaster) emit(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- ev:
		default: // a slow subscriber loses events; the loop never waits
		}
	}
}

// emit publishes one step. Called by the event loop only.
func (s *Supervisor) emit(ev Event) {
	ev.Time = time.Now()
	s.subs.emit(ev)
}
