//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

// ErrGaveUp is returned by Run when the serving generation crashed more
// often than [restart] max_tries allows and no other generation could take
// over.
var ErrGaveUp = errors.New("service keeps crashing; gave up restarting it")

// ErrUpgradeFailed is wrapped by the error of an upgrade that did not end in
// a promotion.
var ErrUpgradeFailed = errors.New("upgrade failed")

// ErrStopped is returned by calls made after the supervisor stopped.
var ErrStopped = errors.New("supervisor stopped")

// Options configure a Supervisor.
type Options struct {
	// ConfigPath is re-read at every upgrade.
	ConfigPath string
	// Config is the config already read from ConfigPath, used for the first
	// generation and for the listeners, which never change while Run runs.
	Config *Config
	// Logger receives every step; nil means slog.Default().
	Logger *slog.Logger
	// Shim is the binary run as the exec shim ("/proc/self/exe" when empty).
	Shim string
	// Stdout and Stderr are the fds children write to (1 and 2 when 0).
	Stdout, Stderr int
	// Activated are sockets passed to baton (handoff.TakeActivated):
	// listeners adopt them instead of binding.
	Activated []handoff.Inherited
	// FDStore puts the sockets baton makes into its service manager's fd
	// store (set when baton runs under systemd).
	FDStore bool
	// Handover: Activated comes from a predecessor baton that still serves
	// (see handover.go). The first generation starts unrouted and is routed
	// once ready; then OnServing is called, from the event loop. A first
	// generation that fails ends Run with an error.
	Handover  bool
	OnServing func()
}

// Supervisor runs one service. Create it with New, then call Run once.
type Supervisor struct {
	opts   Options
	log    *slog.Logger
	events chan event
	done   chan struct{} // closed when Run returns
	subs   broadcaster   // event subscribers; safe for any goroutine

	// Everything below is owned by the Run goroutine.
	base      *Config // the config the listeners were made from
	listeners []*listener
	spawner   *handoff.Spawner
	notify    *handoff.NotifySocket
	gens      []*generation // every generation that has not been retired
	serving   *generation   // routed; nil only before the first start or after giving up
	candidate *generation   // the upgrade in progress, if any
	// weight is the candidate's percent of new connections as last set in
	// the steering programs (0 without a candidate).
	weight int
	// probation: the promoted generation on probation, if any; standby:
	// the one it replaced, running at weight 0 in the steering program's B
	// half while it does (only when every listener is steered); callers
	// waiting for the upgrade's outcome, which probation decides.
	probation        *generation
	standby          *generation
	probationWaiters []chan<- upgradeResult
	// reverts are the times of recent reverts; failed says why the service
	// is in the failed state ("" when not), where upgrades need force.
	reverts []time.Time
	failed  string
	// Feature flags (flags.go, flagwatch.go): values by name, the version
	// of the last write, the files; watches of flags with off_on, and the
	// serving generation's latest sample and figures, their baseline.
	flags            map[string]*flagState
	flagsVersion     int64
	flagsPath        string
	flagsStatePath   string
	flagWatches      map[string]*flagWatch
	flagSamplerOn    bool
	flagLast         *genSample
	flagLastGen      *generation
	flagBaseline     probe.Figures
	flagHaveBaseline bool
	// analysis: the canary or probation analysis running, if any.
	analysis *analysisRun
	// preparing: an upgrade waiting for its pre_start hook.
	preparing *preparing
	// Hooks run on goroutines of their own; teardown cancels and waits.
	hookCtx    context.Context
	hookCancel context.CancelFunc
	hooks      sync.WaitGroup
	// The generation the serving one replaced, pinned (its config and an
	// open fd of its executable): what a rollback or revert starts from.
	previous *pinned
	nextID   int
	// Callers waiting for the candidate's outcome, and for the upgrade
	// queued behind it (queued is true when one was asked for).
	candidateWaiters []chan<- upgradeResult
	queued           bool
	queuedForce      bool // one of the queued upgrades was forced
	queuedWaiters    []chan<- upgradeResult
	stopping         bool
	exitErr          error
	handover         []*handoff.Socket // sockets made for a successor baton
	// handedOver: a successor baton serves and owns the steering; this one
	// only drains.
	handedOver bool
}

// New checks the options. It starts nothing.
func New(opts Options) (*Supervisor, error) {
	if opts.Config == nil {
		return nil, errors.New("supervisor: no config")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Shim == "" {
		opts.Shim = "/proc/self/exe"
	}
	if opts.Stdout == 0 {
		opts.Stdout = 1
	}
	if opts.Stderr == 0 {
		opts.Stderr = 2
	}
	hookCtx, hookCancel := context.WithCancel(context.Background())
	return &Supervisor{
		hookCtx: hookCtx, hookCancel: hookCancel,
		opts:   opts,
		log:    opts.Logger,
		events: make(chan event, 64),
		done:   make(chan struct{}),
		base:   opts.Config,
		nextID: 1,
	}, nil
}

// Run creates the listeners, starts the first generation and supervises
// until Stop is called or ctx ends (a normal stop returns nil) or the
// service cannot be kept running. Every child is stopped and every socket
// closed before Run returns.
func (s *Supervisor) Run(ctx context.Context) (err error) {
	defer close(s.done)
	if err := s.setup(); err != nil {
		s.teardown()
		return err
	}
	defer s.teardown()
	go s.readNotify()

	if err := s.startFirst(); err != nil {
		s.log.Error("the first generation could not start", "err", err)
		s.stopAll("the first generation could not start")
		s.drainEvents()
		return err
	}

	ctxDone := ctx.Done()
	for !(s.stopping && len(s.gens) == 0) {
		select {
		case <-ctxDone:
			ctxDone = nil
			s.beginStop("asked to stop")
		case ev := <-s.events:
			s.handle(ev)
		}
	}
	return s.exitErr
}

// startFirst starts the first generation, all its instances at once. It
// is routed at once, so that connections wait in its queues until it is
// ready, except after a handover: the predecessor serves until this
// generation is ready, and promotion routes it.
func (s *Supervisor) startFirst() error {
	g := s.newGeneration(s.base, false)
	g.direct = true
	s.candidate = g // until it is routed: a failure to start undoes it like any candidate
	for range g.want {
		if _, err := s.addInstance(g); err != nil {
			if len(g.instances) == 0 {
				s.abandon(g) // not among s.gens: stopAll would not see it
				s.candidate = nil
			}
			return err
		}
	}
	s.log.Info("generation started", "gen", g.id, g.pidAttrs())
	if s.opts.Handover {
		return nil
	}
	for _, in := range g.instances {
		in.routed, in.everRouted = true, true
	}
	if err := s.routeOnly(g); err != nil {
		return err
	}
	s.candidate, s.serving, g.state = nil, g, genServing
	s.startFlagSampler()
	return nil
}

// drainEvents runs the loop until every generation is gone, for a stop
// before the main loop began.
func (s *Supervisor) drainEvents() {
	for len(s.gens) > 0 {
		s.handle(<-s.events)
	}
}

// Upgrade starts an upgrade (or joins the one queued behind the upgrade in
// progress) and waits until it is decided. It returns the promoted
// generation's id, or an error wrapping ErrUpgradeFailed that says why.
func (s *Supervisor) Upgrade(ctx context.Context) (int, error) {
	return s.upgrade(ctx, upgradeReq{})
}

// ForceUpgrade is Upgrade even in the failed state, which it ends.
func (s *Supervisor) ForceUpgrade(ctx context.Context) (int, error) {
	return s.upgrade(ctx, upgradeReq{force: true})
}

// Rollback starts a generation from the config of the generation the
// serving one replaced, as an upgrade does, and waits until it is decided.
func (s *Supervisor) Rollback(ctx context.Context) (int, error) {
	return s.upgrade(ctx, upgradeReq{rollback: true})
}

func (s *Supervisor) upgrade(ctx context.Context, req upgradeReq) (int, error) {
	reply := make(chan upgradeResult, 1)
	req.reply = reply
	r, err := ask(s, ctx, req, reply)
	if err != nil {
		return 0, err
	}
	return r.gen, r.err
}

// RequestUpgrade asks for an upgrade without waiting for it, as SIGHUP does.
func (s *Supervisor) RequestUpgrade() { s.send(upgradeReq{}) }

// Stop asks the supervisor to stop every generation and return from Run.
func (s *Supervisor) Stop() { s.send(stopReq{}) }

// Status returns a snapshot of the listeners and generations.
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	reply := make(chan Status, 1)
	return ask(s, ctx, statusReq{reply: reply}, reply)
}

// answer is the error of a request whose answer is an error: the loop's,
// or why there was none.
func answer(err, askErr error) error {
	if askErr != nil {
		return askErr
	}
	return err
}

// ask hands ev to the loop and waits for the answer the loop sends on
// reply (buffered, so the loop never waits), until ctx ends or Run returns.
func ask[T any](s *Supervisor, ctx context.Context, ev event, reply <-chan T) (T, error) {
	var zero T
	if !s.send(ev) {
		return zero, ErrStopped
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		return zero, ErrStopped
	}
}

// send hands an event to the loop; it reports false once Run has returned.
func (s *Supervisor) send(ev event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.done:
		return false
	}
}

// after sends ev to the loop once d has passed.
func (s *Supervisor) after(d time.Duration, ev event) *time.Timer {
	return time.AfterFunc(d, func() { s.send(ev) })
}

func (s *Supervisor) readNotify() {
	for {
		n, err := s.notify.Receive()
		if err != nil {
			return // closed by teardown
		}
		if !s.send(notifyMsg{n}) {
			return
		}
	}
}

func (s *Supervisor) setup() error {
	sp, err := sharedSpawner()
	if err != nil {
		return err
	}
	s.spawner = sp
	if err := sp.StartGuard(s.opts.Shim); err != nil {
		s.log.Warn("no guard: if baton is killed, what its service's processes started may outlive it", "err", err)
	}
	if s.notify, err = handoff.ListenNotify(); err != nil {
		return err
	}
	if err := s.setupListeners(); err != nil {
		return err
	}
	s.flagWatches = map[string]*flagWatch{}
	return s.setupFlags()
}

// teardown closes what setup made; every generation is gone by now.
func (s *Supervisor) teardown() {
	s.stopHooks()
	s.closeHandover()
	s.previous.close()
	for _, l := range s.listeners {
		l.close()
	}
	if s.notify != nil {
		_ = s.notify.Close() // ends readNotify
	}
}

// beginStop stops every generation; Run returns once all have exited.
func (s *Supervisor) beginStop(why string) {
	if s.stopping {
		return
	}
	s.log.Info("stopping: draining every generation", "reason", why)
	s.stopAll(why)
}

func (s *Supervisor) stopAll(why string) {
	s.stopping = true
	s.stopAnalysis()
	if s.candidate != nil {
		s.failUpgrade(s.candidate, "baton is stopping")
	}
	s.replyQueued(upgradeResult{err: fmt.Errorf("%w: baton is stopping", ErrUpgradeFailed)})
	if s.probation != nil {
		s.probation = nil
		s.replyProbation(upgradeResult{err: fmt.Errorf("%w: baton is stopping during probation", ErrUpgradeFailed)})
	}
	if s.preparing != nil {
		if r := s.preparing.reply; r != nil {
			r <- upgradeResult{err: fmt.Errorf("%w: baton is stopping", ErrUpgradeFailed)}
		}
		s.preparing = nil
	}
	for _, g := range append([]*generation(nil), s.gens...) {
		if g.state != genStopping {
			s.stopGeneration(g, why)
		}
	}
}

func (s *Supervisor) replyQueued(r upgradeResult) {
	for _, w := range s.queuedWaiters {
		w <- r
	}
	s.queuedWaiters, s.queued = nil, false
}

// sharedSpawner is process-wide: its thread must outlive every child of
// the process, whichever Supervisor started it.
var sharedSpawner = sync.OnceValues(handoff.NewSpawner)
