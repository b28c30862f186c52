//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/baton-sh/baton/handoff"
)

type event interface{}

type (
	upgradeReq struct {
		reply    chan<- upgradeResult // may be nil
		rollback bool                 // start from the previous generation's config
		force    bool                 // even in the failed state
	}
	stopReq    struct{}
	statusReq  struct{ reply chan<- Status }
	procExited struct{ proc *process } // exited, not yet reaped
	notifyMsg  struct{ handoff.Notification }
	checkDone  struct {
		proc *process
		err  error
	}
	readyTimeout struct{ proc *process }
	killTimeout  struct{ proc *process }
	restartDue   struct{ inst *instance }
	drainTick    struct{ inst *instance }
	graceOver    struct{ inst *instance }
	stepDue      struct {
		gen  *generation
		step int
	}
	gradualReq struct {
		abort bool // else promote
		all   bool // promote: straight to 100%
		reply chan<- error
	}
)

type upgradeResult struct {
	gen int
	err error
}

func (s *Supervisor) handle(ev event) {
	switch ev := ev.(type) {
	case upgradeReq:
		if ev.rollback {
			s.startRollback(ev.reply)
		} else {
			s.startUpgrade(ev.reply, ev.force)
		}
	case stopReq:
		s.beginStop("asked to stop")
	case statusReq:
		ev.reply <- s.status()
	case procExited:
		s.onExit(ev.proc)
	case notifyMsg:
		s.onNotify(ev.Notification)
	case checkDone:
		if ev.err == nil {
			s.onReady(ev.proc)
		} else if !ev.proc.exited && !ev.proc.ready && !ev.proc.stopSent {
			s.onNotReady(ev.proc, ev.err.Error())
		}
	case readyTimeout:
		if !ev.proc.exited && !ev.proc.ready && !ev.proc.stopSent {
			s.onNotReady(ev.proc, fmt.Sprintf("not ready within %s", ev.proc.gen.cfg.Readiness.Timeout))
		}
	case killTimeout:
		if !ev.proc.exited {
			s.log.Warn("process did not exit in time; killing its process group",
				"gen", ev.proc.gen.id, "pid", ev.proc.pid, "timeout", ev.proc.gen.cfg.Drain.Timeout)
			_ = syscall.Kill(-ev.proc.pid, syscall.SIGKILL) // ESRCH: already gone
		}
	case restartDue:
		s.restart(ev.inst)
	case handoverReq:
		ev.reply <- s.prepareHandover()
	case handoverDone:
		s.finishHandover(ev.ok)
		close(ev.reply)
	case drainTick:
		s.checkDrained(ev.inst)
	case graceOver:
		if ev.inst.state == instDraining {
			s.stopInstance(ev.inst, ev.inst.drainWhy)
		}
	case stepDue:
		if ev.gen == s.candidate && ev.gen.step == ev.step && ev.gen.stepBegun && ev.gen.aborting == "" {
			s.enterStep(ev.gen, ev.step+1)
		}
	case gradualReq:
		ev.reply <- s.onGradual(ev)
	case healthChange:
		s.onHealthChange(ev.proc, ev.tr)
	case watchdogMissed:
		if !ev.proc.exited && !ev.proc.stopSent {
			s.onUnhealthy(ev.proc, fmt.Sprintf("no WATCHDOG=1 for %s", ev.proc.gen.cfg.Health.Watchdog))
		}
	case probationOver:
		s.confirm(ev.gen)
	case preStartDone:
		s.onPreStartDone(ev)
	case analysisTick:
		if s.analysis == ev.run {
			s.sampleNow(ev.run)
		}
	case analysisSample:
		s.onAnalysisSample(ev)
	case flagsReq:
		ev.reply <- s.flagStatus()
	case flagSet:
		ev.reply <- s.onFlagSet(ev)
	case flagSampleTick:
		s.onFlagSampleTick()
	case flagSampleDone:
		s.onFlagSample(ev)
	case exeHashed:
		ev.gen.exeSHA256, ev.gen.hashing = ev.sum, false
	default:
		panic(fmt.Sprintf("supervisor: unknown event %T", ev))
	}
}

// busy reports whether an upgrade is under way: a candidate, or a
// promoted generation on probation. Another upgrade waits for it.
func (s *Supervisor) busy() bool {
	return s.candidate != nil || s.probation != nil || s.preparing != nil
}

func (s *Supervisor) servingID() int {
	if s.serving == nil {
		return 0
	}
	return s.serving.id
}

// startUpgrade re-reads the config and starts a candidate generation, or
// queues the request behind the upgrade in progress.
func (s *Supervisor) startUpgrade(reply chan<- upgradeResult, force bool) {
	fail := func(err error) {
		s.log.Error("upgrade not started", "err", err, "serving", s.servingID())
		s.emit(Event{Kind: EventFailed, Reason: err.Error()})
		if reply != nil {
			reply <- upgradeResult{err: fmt.Errorf("%w: %w", ErrUpgradeFailed, err)}
		}
	}
	if s.stopping {
		fail(errors.New("baton is stopping"))
		return
	}
	if s.handover != nil {
		fail(errors.New("baton is handing over to a new baton; upgrade that one"))
		return
	}
	if s.busy() {
		if !s.queued {
			s.log.Info("upgrade in progress; another upgrade will follow it", "candidate", idOf(s.candidate), "probation", idOf(s.probation))
		}
		s.queued = true
		s.queuedForce = s.queuedForce || force
		if reply != nil {
			s.queuedWaiters = append(s.queuedWaiters, reply)
		}
		return
	}
	cfg, err := LoadConfig(s.opts.ConfigPath)
	if err != nil {
		fail(fmt.Errorf("config not reloaded: %w", err))
		return
	}
	if err := ListenersEqual(s.base, cfg); err != nil {
		fail(err)
		return
	}
	if cfg.Upgrade.Steering != s.base.Upgrade.Steering {
		fail(fmt.Errorf("[upgrade] steering changed from %q to %q; it can only change with a restart of baton",
			s.base.Upgrade.Steering, cfg.Upgrade.Steering))
		return
	}
	if s.failed != "" && !force {
		fail(fmt.Errorf("%w (%s): force an upgrade (`baton upgrade --force`) to try again", ErrFailedState, s.failed))
		return
	}
	if force && s.failed != "" {
		s.log.Warn("failed state cleared by a forced upgrade", "was", s.failed)
		s.failed, s.reverts = "", nil
	}
	if cfg.Hooks.PreStart != nil {
		s.prepare(cfg, reply)
		return
	}
	s.log.Info("upgrade started", "serving", s.servingID(), "gen", s.nextID)
	if err := s.startCandidate(cfg, false, reply); err != nil {
		fail(err)
		s.nextQueued()
	}
}

// startRollback starts a candidate from the config of the generation the
// serving one replaced (its command, environment and settings as they
// were), through the same readiness, promotion and drain as an upgrade.
func (s *Supervisor) startRollback(reply chan<- upgradeResult) {
	fail := func(err error) {
		s.log.Error("rollback not started", "err", err, "serving", s.servingID())
		s.emit(Event{Kind: EventFailed, Reason: err.Error(), Rollback: true})
		if reply != nil {
			reply <- upgradeResult{err: fmt.Errorf("%w: %w", ErrUpgradeFailed, err)}
		}
	}
	switch {
	case s.stopping:
		fail(errors.New("baton is stopping"))
	case s.handover != nil:
		fail(errors.New("baton is handing over to a new baton; roll back with that one"))
	case s.probation != nil && s.candidate == nil:
		g := s.probation
		s.log.Info("rollback during probation: reverting", "gen", g.id)
		s.revert(g, CauseRollback, "rolled back by hand (`baton rollback`)")
		switch {
		case reply == nil:
		case s.candidate != nil && s.candidate.revertOf != "":
			s.candidateWaiters = append(s.candidateWaiters, reply) // decided when it is ready
		case s.serving != g && s.serving != nil:
			reply <- upgradeResult{gen: s.serving.id}
		default:
			reply <- upgradeResult{err: fmt.Errorf("%w: generation %d could not be reverted", ErrUpgradeFailed, g.id)}
		}
	case s.candidate != nil:
		fail(fmt.Errorf("generation %d is being rolled out; `baton abort` sends its traffic back, or roll back once it is decided", s.candidate.id))
	case s.previous == nil:
		fail(errors.New("there is no previous generation to roll back to"))
	default:
		s.log.Info("rollback started", "serving", s.servingID(), "gen", s.nextID, "to_config_of", s.previous.id,
			"executable", s.previous.path)
		if err := s.startCandidate(s.previous.cfg, true, reply); err != nil {
			fail(err)
		}
	}
}

// startCandidate starts the instances a new generation from cfg begins
// with, per its strategy: all of them (blue-green, a rollback, a canary
// with exact weights), as many as the first canary step needs (shared
// mode), or one (rolling).
func (s *Supervisor) startCandidate(cfg *Config, rollback bool, reply chan<- upgradeResult) error {
	g := s.newGeneration(cfg, rollback)
	if rollback {
		if err := g.pin(s.previous); err != nil {
			return err
		}
	}
	switch g.strategy() {
	case StrategyRolling:
		g.want = 1
	case StrategyCanary:
		g.want = s.canaryInstances(g, cfg.Upgrade.Steps[0].Weight)
	}
	for range g.want {
		if _, err := s.addInstance(g); err != nil {
			s.abandon(g)
			return err
		}
	}
	s.candidate = g
	if reply != nil {
		s.candidateWaiters = append(s.candidateWaiters, reply)
	}
	if g.strategy() == StrategyCanary && !s.exactWeights() {
		s.log.Warn("canary weights are approximated by instance counts: a listener is in shared mode, where the kernel cannot split connections by weight",
			"gen", g.id, "instances", cfg.Service.Instances)
	}
	return nil
}

// nextQueued starts the upgrade queued behind the one just decided.
func (s *Supervisor) nextQueued() {
	if !s.queued || s.stopping || s.busy() {
		return
	}
	waiters, force := s.queuedWaiters, s.queuedForce
	s.queued, s.queuedWaiters, s.queuedForce = false, nil, false
	if len(waiters) == 0 {
		s.startUpgrade(nil, force)
		return
	}
	for i, w := range waiters {
		switch {
		case i == 0:
			s.startUpgrade(w, force)
		case s.candidate != nil:
			s.candidateWaiters = append(s.candidateWaiters, w)
		case s.preparing != nil:
			s.queued = true
			s.queuedWaiters = append(s.queuedWaiters, w) // decided by the upgrade after this one
		default:
			s.startUpgrade(w, force) // the first failed to start: each waiter learns why
		}
	}
}

// replyCandidate tells the callers waiting for the candidate how its
// upgrade ended.
func (s *Supervisor) replyCandidate(r upgradeResult) {
	for _, w := range s.candidateWaiters {
		w <- r
	}
	s.candidateWaiters = nil
}
