//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

// readyBackstop is how long after its deadline a readiness check that has
// not returned counts as failed anyway.
const readyBackstop = time.Second

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

// startReadiness arms the readiness deadline and, for exec and delay
// checks, runs the check. Notify readiness arrives through onNotify.
func (s *Supervisor) startReadiness(p *process, env []string) {
	rc := p.gen.cfg.Readiness
	if rc.Check == "notify" {
		p.readyTimer = s.after(rc.Timeout, readyTimeout{proc: p})
		return
	}
	// A check that runs out of time says what its last try found; the
	// timer is a backstop for one that does not return.
	p.readyTimer = s.after(rc.Timeout+readyBackstop, readyTimeout{proc: p})
	var check probe.Check
	var checkErr error
	if rc.Check == "http" || rc.Check == "tcp" {
		check, checkErr = s.probeCheck(p, rc.Check, rc.Target, nil, env) // reads the instance's sockets: here, in the loop
	}
	ctx, cancel := context.WithTimeout(context.Background(), rc.Timeout)
	p.cancel = cancel
	go func() {
		var err error
		switch rc.Check {
		case "exec":
			err = probe.Exec{
				Command:    rc.Command,
				Dir:        p.gen.cfg.Service.Directory,
				Env:        checkEnv(env, p.pid),
				Interval:   rc.Interval,
				Credential: credential(p.gen.cfg.Service.Credentials),
			}.Wait(ctx)
		case "delay":
			err = probe.Delay(ctx, rc.Delay)
		case "http", "tcp":
			if err = checkErr; err == nil {
				err = probe.Until(ctx, check, rc.Interval, rc.CheckTimeout)
			}
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			if err != nil && ctx.Err() != nil {
				err = fmt.Errorf("not ready within %s: %w", rc.Timeout, err)
			}
			s.send(checkDone{proc: p, err: err})
		}
	}()
}

// checkEnv is the environment of an exec check: the child's, with the pid
// it judges, and without the notify socket (a check is not the service).
func checkEnv(env []string, pid int) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			out = append(out, kv)
		}
	}
	return append(out, "BATON_PID="+strconv.Itoa(pid))
}

// onReady: the process passed its readiness check.
func (s *Supervisor) onReady(p *process) {
	if p.ready || p.exited || p.stopSent {
		return
	}
	p.ready, p.readyAt = true, time.Now()
	p.stopTimers()
	g, in := p.gen, p.inst
	took := p.readyAt.Sub(p.started)
	s.log.Info("process ready", "gen", g.id, "instance", in.index, "pid", p.pid, "after", took.Round(time.Millisecond))
	s.emit(Event{Kind: EventReady, Gen: g.id, Instance: in.index, PID: p.pid, Duration: took})
	s.startHealth(p)
	switch g {
	case s.candidate:
		s.advance(g)
	case s.serving:
		if !in.routed && in.state == instRunning {
			// An instance started again while an upgrade is undone.
			in.routed, in.everRouted = true, true
			s.reroute()
		}
		s.maybeFinishAbort()
	}
}

// onNotReady: the process failed its check or missed its deadline.
func (s *Supervisor) onNotReady(p *process, why string) {
	g := p.gen
	p.stopTimers()
	if g == s.candidate {
		s.failUpgrade(g, fmt.Sprintf("instance %d: %s", p.inst.index, why))
		return
	}
	// A (re)started process of the serving generation: stop it and let the
	// crash path restart it.
	s.log.Warn("process not ready; stopping it", "gen", g.id, "instance", p.inst.index, "pid", p.pid, "reason", why)
	p.notReady = true
	s.signal(p, g.cfg.Drain.Signal)
}

// promote routes every new connection to g and drains the generation it
// replaces, or keeps it as standby while g is on probation.
func (s *Supervisor) promote(g *generation) {
	old := s.serving
	for _, in := range g.live() {
		in.routed, in.everRouted = true, true
	}
	probation := old != nil && !g.direct && g.cfg.Upgrade.Probation > 0
	keep := probation && s.exactWeights()
	var err error
	if old == nil {
		err = s.routeOnly(g)
	} else {
		err = s.routePromote(g, keep)
	}
	if err != nil {
		s.failUpgrade(g, err.Error())
		return
	}
	if g.stepTimer != nil {
		g.stepTimer.Stop()
	}
	s.stopAnalysis()
	g.state, g.holding, g.want = genServing, false, len(g.live())
	s.serving, s.candidate, s.weight = g, nil, 0
	if old != nil {
		s.setPrevious(old)
	}
	s.applyFlagsConfig(g.cfg)
	s.startFlagSampler()
	s.log.Info("promoted", "gen", g.id, g.pidAttrs(), "replaces", idOf(old))
	s.emit(Event{Kind: EventPromoted, Gen: g.id, PID: firstPID(g), Replaces: idOf(old), Rollback: g.rollback, RevertOf: g.revertOfGen})
	if old != nil {
		old.replacedAt = time.Now()
		if !keep {
			for _, in := range old.instances {
				in.routed = false // routePromote took them out of the program's slots
			}
			s.drainGeneration(old, fmt.Sprintf("replaced by generation %d", g.id))
		}
	} else if s.opts.Handover && s.opts.OnServing != nil {
		s.opts.OnServing()
	}
	switch {
	case probation:
		s.startProbation(g, old, keep)
	case g.revertOf != "":
		s.replyCandidate(upgradeResult{gen: g.id})
		s.runHook("post_revert", g, g.revertOf)
	default:
		s.replyCandidate(upgradeResult{gen: g.id})
		if old != nil {
			s.runHook("post_promote", g, "")
		}
	}
	s.nextQueued()
}

func idOf(g *generation) int {
	if g == nil {
		return 0
	}
	return g.id
}

// firstPID is the pid of g's first running process, 0 if none runs.
func firstPID(g *generation) int {
	if pids := g.pids(); len(pids) > 0 {
		return pids[0]
	}
	return 0
}

// failUpgrade undoes the upgrade to the candidate g, which will not be
// promoted: the serving generation gets every new connection back (once it
// has its instances again, where a rolling update stopped some), then g
// drains. why says what went wrong, or that an operator aborted.
func (s *Supervisor) failUpgrade(g *generation, why string) {
	if g.aborting != "" {
		return
	}
	g.aborting = why
	if g.stepTimer != nil {
		g.stepTimer.Stop()
	}
	if s.analysis != nil && s.analysis.cand == g {
		s.stopAnalysis()
	}
	if s.stopping {
		s.log.Info("upgrade cancelled", "gen", g.id, g.pidAttrs(), "reason", why)
	} else {
		s.log.Error("upgrade failed", "gen", g.id, g.pidAttrs(), "reason", why, "serving", s.servingID())
	}
	s.emit(Event{Kind: EventFailed, Gen: g.id, PID: firstPID(g), Reason: why, Rollback: g.rollback, Aborted: g.aborted})
	s.replyCandidate(upgradeResult{err: fmt.Errorf("%w: generation %d: %s", ErrUpgradeFailed, g.id, why)})
	if o := s.serving; o != nil && !s.stopping {
		if missing := o.want - len(o.live()); missing > 0 {
			s.log.Info("starting instances of the serving generation again before the failed one drains",
				"gen", o.id, "instances", missing)
			for range missing {
				if _, err := s.addInstance(o); err != nil {
					s.log.Error("cannot start an instance again", "gen", o.id, "err", err)
					o.want = len(o.live())
					break
				}
			}
		}
	}
	s.maybeFinishAbort()
}

// maybeFinishAbort completes an upgrade being undone once the serving
// generation has all its instances back and ready (or given up): every new
// connection goes back to it, and the candidate drains.
func (s *Supervisor) maybeFinishAbort() {
	g := s.candidate
	if g == nil || g.aborting == "" {
		return
	}
	if o := s.serving; o != nil && !s.stopping {
		live := o.live()
		if len(live) < o.want {
			return
		}
		for _, in := range live {
			if !in.gaveUp && (in.proc == nil || !in.proc.ready) {
				return
			}
		}
	}
	routed := false
	for _, in := range g.instances {
		routed = routed || in.routed
		in.routed = false
	}
	if routed {
		if err := s.routeAbort(); err != nil {
			s.log.Error("cannot send every connection back to the serving generation", "gen", s.servingID(), "err", err)
		}
	}
	s.candidate, s.weight = nil, 0
	s.drainGeneration(g, "upgrade failed")
	s.nextQueued()
	s.giveUpIfNothingLeft()
	if s.serving == nil && s.candidate == nil && !s.stopping {
		// Only a handed-over baton starts with nothing serving.
		s.exitErr = fmt.Errorf("the first generation did not become ready: %s", g.aborting)
		s.beginStop("the first generation failed")
	}
}

// giveUpIfNothingLeft stops baton when the serving generation gave up and
// no upgrade is left that could take over.
func (s *Supervisor) giveUpIfNothingLeft() {
	if s.stopping || s.candidate != nil || s.serving == nil || !s.serving.gaveUp {
		return
	}
	s.exitErr = fmt.Errorf("generation %d: %w", s.serving.id, ErrGaveUp)
	s.beginStop("the service keeps crashing")
}
