//go:build linux

package supervisor

// Stopping a generation, and what happens when a process exits: retiring
// a stopped generation, restarting a crashed one, giving up on one that
// keeps crashing. Called by the event loop only.

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"
)

// stopGeneration sends g's process its stop signal (SIGKILL to its group
// after the drain timeout); g is retired once the process has exited.
func (s *Supervisor) stopGeneration(g *generation, why string) {
	g.state = genStopping
	if g.restartTimer != nil {
		g.restartTimer.Stop()
	}
	if g.drainTimer != nil {
		g.drainTimer.Stop()
	}
	if g.proc == nil {
		s.retire(g)
		return
	}
	s.log.Info("stopping", "gen", g.id, "pid", g.proc.pid, "signal", signalName(g.cfg.Drain.Signal), "reason", why)
	s.emit(Event{Kind: EventStopping, Gen: g.id, PID: g.proc.pid, Reason: why})
	s.signal(g.proc, g.cfg.Drain.Signal)
}

// signal sends sig to the main process and arms the SIGKILL deadline.
func (s *Supervisor) signal(p *process, sig syscall.Signal) {
	if p.stopSent {
		return
	}
	p.stopSent = true
	p.stopTimers()
	if err := p.p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("cannot signal process", "gen", p.gen.id, "pid", p.pid, "err", err)
	}
	p.killTimer = s.after(p.gen.cfg.Drain.Timeout, killTimeout{proc: p})
}

// retire forgets a generation whose process has exited.
func (s *Supervisor) retire(g *generation) {
	g.closeSockets()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	if s.serving == g {
		s.serving = nil
	}
	var since time.Duration
	if !g.replacedAt.IsZero() {
		since = time.Since(g.replacedAt)
	}
	s.log.Info("retired", "gen", g.id)
	s.emit(Event{Kind: EventRetired, Gen: g.id, Duration: since})
}

func (s *Supervisor) onExit(p *process) {
	p.exited = true
	p.stopTimers()
	g := p.gen
	// Leftovers of the process group would be orphans: the main process
	// is gone, so the group goes too (systemd's KillMode=mixed does the
	// same). The main process is not reaped yet, so its pid, which is the
	// group's id, cannot have been reused by anyone else.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // ESRCH when nothing is left
	st, werr := p.p.Wait()                    // reaps at once: it has exited
	how := exitText(st, werr)
	if g.proc == p {
		g.proc = nil
	}
	switch {
	case g.state == genDraining || g.state == genStopping:
		s.log.Info("process exited", "gen", g.id, "pid", p.pid, "status", how)
		s.retire(g)
	case g == s.candidate:
		s.failUpgrade(g, "exited before it was ready: "+how)
	case s.stopping:
		s.retire(g)
	default:
		s.onCrash(g, p, how)
	}
}

// onCrash restarts a serving generation's process with exponential
// backoff, or gives up after [restart] max_tries consecutive crashes.
func (s *Supervisor) onCrash(g *generation, p *process, how string) {
	rc := g.cfg.Restart
	if p.ready && time.Since(p.started) >= rc.ResetAfter {
		g.crashes = 0
	}
	g.crashes++
	if g.crashes > rc.MaxTries {
		s.log.Error("process keeps crashing; giving up", "gen", g.id, "pid", p.pid, "status", how,
			"crashes", g.crashes, "max_tries", rc.MaxTries)
		// The generation stays, without a process, so that its sockets
		// (and their backlog) live on while an upgrade in progress may still
		// take over; if none can, baton stops.
		g.gaveUp = true
		s.emit(Event{Kind: EventGaveUp, Gen: g.id, PID: p.pid, Reason: how})
		s.giveUpIfNothingLeft()
		return
	}
	delay := rc.Backoff << (g.crashes - 1)
	if delay > rc.MaxBackoff || delay <= 0 {
		delay = rc.MaxBackoff
	}
	level := "process crashed; restarting"
	if p.notReady {
		level = "process was not ready in time; restarting"
	}
	s.log.Warn(level, "gen", g.id, "pid", p.pid, "status", how, "in", delay,
		"attempt", g.crashes, "max_tries", rc.MaxTries)
	s.emit(Event{Kind: EventCrashed, Gen: g.id, PID: p.pid, Reason: how})
	g.restartTimer = s.after(delay, restartDue{gen: g})
}

func (s *Supervisor) restart(g *generation) {
	if g != s.serving || g.proc != nil || s.stopping {
		return
	}
	g.restarts++
	if err := s.spawn(g); err != nil {
		s.log.Error("restart failed", "gen", g.id, "err", err)
		s.onCrash(g, &process{gen: g, started: time.Now()}, err.Error())
	}
}

func exitText(st *os.ProcessState, err error) string {
	if err != nil {
		return "wait failed: " + err.Error()
	}
	return st.String()
}

func signalName(sig syscall.Signal) string {
	if name := signalNames[sig]; name != "" {
		return name
	}
	return "signal " + strconv.Itoa(int(sig))
}

var signalNames = func() map[syscall.Signal]string {
	m := map[syscall.Signal]string{}
	for name, sig := range map[string]syscall.Signal{
		"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
		"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
		"SIGWINCH": syscall.SIGWINCH, "SIGKILL": syscall.SIGKILL,
	} {
		m[sig] = name
	}
	return m
}()
