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

// drainPoll is how often a draining generation's accept queues are read.
const drainPoll = 10 * time.Millisecond

type event interface{}

type (
	upgradeReq struct {
		reply    chan<- upgradeResult // may be nil
		rollback bool                 // start from the previous generation's config
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
	restartDue   struct{ gen *generation }
	drainTick    struct{ gen *generation }
	graceOver    struct{ gen *generation }
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
			s.startUpgrade(ev.reply)
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
		s.restart(ev.gen)
	case handoverReq:
		ev.reply <- s.prepareHandover()
	case handoverDone:
		s.finishHandover(ev.ok)
		close(ev.reply)
	case drainTick:
		s.checkDrained(ev.gen)
	case graceOver:
		if ev.gen.state == genDraining {
			s.stopGeneration(ev.gen, fmt.Sprintf("replaced by generation %d", s.servingID()))
		}
	default:
		panic(fmt.Sprintf("supervisor: unknown event %T", ev))
	}
}

func (s *Supervisor) servingID() int {
	if s.serving == nil {
		return 0
	}
	return s.serving.id
}

// startUpgrade re-reads the config and starts a candidate generation, or
// queues the request behind the upgrade in progress.
func (s *Supervisor) startUpgrade(reply chan<- upgradeResult) {
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
	if s.candidate != nil {
		if !s.queued {
			s.log.Info("upgrade in progress; another upgrade will follow it", "candidate", s.candidate.id)
		}
		s.queued = true
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
	case s.candidate != nil:
		fail(fmt.Errorf("generation %d is being started; roll back once it is decided", s.candidate.id))
	case s.previous == nil:
		fail(errors.New("there is no previous generation to roll back to"))
	default:
		s.log.Info("rollback started", "serving", s.servingID(), "gen", s.nextID, "to_config_of", s.previousID)
		if err := s.startCandidate(s.previous, true, reply); err != nil {
			fail(err)
		}
	}
}

func (s *Supervisor) startCandidate(cfg *Config, rollback bool, reply chan<- upgradeResult) error {
	g, err := s.startGeneration(cfg, rollback)
	if err != nil {
		return err
	}
	s.candidate = g
	if reply != nil {
		s.candidateWaiters = append(s.candidateWaiters, reply)
	}
	return nil
}

// nextQueued starts the upgrade queued behind the one just decided.
func (s *Supervisor) nextQueued() {
	if !s.queued || s.stopping {
		return
	}
	waiters := s.queuedWaiters
	s.queued, s.queuedWaiters = false, nil
	if len(waiters) == 0 {
		s.startUpgrade(nil)
		return
	}
	for i, w := range waiters {
		if i == 0 {
			s.startUpgrade(w)
		} else if s.candidate != nil {
			s.candidateWaiters = append(s.candidateWaiters, w)
		} else {
			s.startUpgrade(w) // the first failed to start: each waiter learns why
		}
	}
}

func (s *Supervisor) decideCandidate(r upgradeResult) {
	for _, w := range s.candidateWaiters {
		w <- r
	}
	s.candidateWaiters = nil
	s.candidate = nil
}

// startReadiness arms the readiness deadline and, for exec and delay
// checks, runs the check. Notify readiness arrives through onNotify.
func (s *Supervisor) startReadiness(p *process, env []string) {
	rc := p.gen.cfg.Readiness
	p.readyTimer = s.after(rc.Timeout, readyTimeout{proc: p})
	if rc.Check == "notify" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
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
		}
		if ctx.Err() == nil {
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
	g := p.gen
	took := p.readyAt.Sub(p.started)
	s.log.Info("process ready", "gen", g.id, "pid", p.pid, "after", took.Round(time.Millisecond))
	s.emit(Event{Kind: EventReady, Gen: g.id, PID: p.pid, Duration: took})
	if g == s.candidate {
		s.promote(g)
	}
}

// onNotReady: the process failed its check or missed its deadline.
func (s *Supervisor) onNotReady(p *process, why string) {
	g := p.gen
	p.stopTimers()
	if g == s.candidate {
		s.failUpgrade(g, why)
		return
	}
	// A (re)started process of the serving generation: stop it and let the
	// crash path restart it.
	s.log.Warn("process not ready; stopping it", "gen", g.id, "pid", p.pid, "reason", why)
	p.notReady = true
	s.signal(p, g.cfg.Drain.Signal)
}

// promote routes new connections to g and retires the generation it
// replaces.
func (s *Supervisor) promote(g *generation) {
	old := s.serving
	if err := s.route(g, old); err != nil {
		s.failUpgrade(g, err.Error())
		return
	}
	g.state = genServing
	s.serving = g
	if old != nil {
		s.previous, s.previousID = old.cfg, old.id
	}
	s.log.Info("promoted", "gen", g.id, "pid", g.proc.pid, "replaces", idOf(old))
	s.emit(Event{Kind: EventPromoted, Gen: g.id, PID: g.proc.pid, Replaces: idOf(old), Rollback: g.rollback})
	s.decideCandidate(upgradeResult{gen: g.id})
	if old != nil {
		s.drain(old)
	} else if s.opts.Handover && s.opts.OnServing != nil {
		s.opts.OnServing()
	}
	s.nextQueued()
}

func idOf(g *generation) int {
	if g == nil {
		return 0
	}
	return g.id
}

// failUpgrade stops a candidate that will not be promoted; the serving
// generation is untouched.
func (s *Supervisor) failUpgrade(g *generation, why string) {
	if s.stopping {
		s.log.Info("upgrade cancelled", "gen", g.id, "pid", pidOf(g), "reason", why)
	} else {
		s.log.Error("upgrade failed", "gen", g.id, "pid", pidOf(g), "reason", why, "serving", s.servingID())
	}
	s.emit(Event{Kind: EventFailed, Gen: g.id, PID: pidOf(g), Reason: why, Rollback: g.rollback})
	s.decideCandidate(upgradeResult{err: fmt.Errorf("%w: generation %d: %s", ErrUpgradeFailed, g.id, why)})
	s.stopGeneration(g, "upgrade failed")
	s.nextQueued()
	s.giveUpIfNothingLeft()
	if s.serving == nil && s.candidate == nil && !s.stopping {
		// Only a handed-over baton starts with nothing serving.
		s.exitErr = fmt.Errorf("the first generation did not become ready: %s", why)
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

func pidOf(g *generation) int {
	if g.proc == nil {
		return 0
	}
	return g.proc.pid
}

// drain unroutes g (already done by promoting its successor), waits until
// its steered sockets' accept queues are empty plus the grace, then stops
// it. With only shared sockets there is nothing to wait for.
func (s *Supervisor) drain(g *generation) {
	g.state = genDraining
	g.replacedAt = time.Now()
	if g.restartTimer != nil {
		g.restartTimer.Stop()
	}
	steered := false
	for _, o := range g.owned {
		steered = steered || o
	}
	if !steered || g.proc == nil {
		s.stopGeneration(g, fmt.Sprintf("replaced by generation %d", s.servingID()))
		return
	}
	s.log.Info("draining", "gen", g.id, "pid", g.proc.pid)
	s.emit(Event{Kind: EventDraining, Gen: g.id, PID: g.proc.pid})
	g.drainUntil = time.Now().Add(g.cfg.Drain.Timeout)
	s.checkDrained(g)
}

func (s *Supervisor) checkDrained(g *generation) {
	if g.state != genDraining {
		return
	}
	waiting := 0
	for i, sock := range g.sockets {
		if !g.owned[i] {
			continue
		}
		n, err := sock.QueueLen()
		if err != nil {
			s.log.Warn("cannot read accept queue; stopping without waiting", "gen", g.id, "err", err)
			waiting = 0
			break
		}
		waiting += n
	}
	switch {
	case waiting == 0:
		g.drainTimer = s.after(g.cfg.Drain.Grace, graceOver{gen: g})
	case time.Now().After(g.drainUntil):
		s.log.Warn("accept queue did not empty in time; stopping anyway",
			"gen", g.id, "waiting", waiting, "timeout", g.cfg.Drain.Timeout)
		s.stopGeneration(g, "drain timeout")
	default:
		g.drainTimer = s.after(drainPoll, drainTick{gen: g})
	}
}
