//go:build linux

package supervisor

// Stopping a generation, and what happens when a process exits: retiring
// a stopped generation, restarting a crashed one, giving up on one that
// keeps crashing. Called by the event loop only.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// stopGeneration asks every instance of g to stop, without draining.
func (s *Supervisor) stopGeneration(g *generation, why string) {
	if g.stepTimer != nil {
		g.stepTimer.Stop()
	}
	g.state = genStopping
	if len(g.instances) == 0 {
		s.retire(g)
		return
	}
	for _, in := range append([]*instance(nil), g.instances...) {
		if in.state != instStopping {
			s.stopInstance(in, why)
		}
	}
}

// stopInstance sends in's process its stop signal (SIGKILL to its group
// after the drain timeout); in is retired once the process has exited.
func (s *Supervisor) stopInstance(in *instance, why string) {
	g := in.gen
	in.state, in.routed = instStopping, false
	if in.restartTimer != nil {
		in.restartTimer.Stop()
	}
	if in.drainTimer != nil {
		in.drainTimer.Stop()
	}
	if in.proc == nil {
		s.retireInstance(in)
		return
	}
	s.log.Info("stopping", "gen", g.id, "instance", in.index, "pid", in.proc.pid,
		"signal", signalName(g.cfg.Drain.Signal), "reason", why)
	s.emit(Event{Kind: EventStopping, Gen: g.id, Instance: in.index, PID: in.proc.pid, Reason: why})
	s.signal(in.proc, g.cfg.Drain.Signal)
}

// signal sends sig to the main process and arms the SIGKILL deadline.
func (s *Supervisor) signal(p *process, sig syscall.Signal) {
	if p.stopSent {
		return
	}
	p.stopSent = true
	p.stopTimers()
	if err := p.p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("cannot signal process", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid, "err", err)
	}
	p.killTimer = s.after(p.gen.cfg.Drain.Timeout, killTimeout{proc: p})
}

// retireInstance forgets an instance whose process has exited (or never
// ran again) and closes its sockets; the generation retires with its last
// instance. A rolling update waiting for the instance to be gone goes on.
func (s *Supervisor) retireInstance(in *instance) {
	g := in.gen
	if in.restartTimer != nil {
		in.restartTimer.Stop()
	}
	in.closeSockets()
	for i, x := range g.instances {
		if x == in {
			g.instances = append(g.instances[:i], g.instances[i+1:]...)
			break
		}
	}
	if len(g.instances) == 0 && g != s.serving && g != s.candidate {
		s.retire(g)
	} else if len(g.instances) == 0 && g.state >= genDraining {
		s.retire(g)
	}
	if c := s.candidate; c != nil && !s.stopping {
		s.advance(c)
	}
}

// retire forgets a generation whose instances are all gone.
func (s *Supervisor) retire(g *generation) {
	for _, in := range g.instances {
		in.closeSockets()
	}
	g.instances = nil
	if g.exeFile != nil {
		_ = g.exeFile.Close() // O_PATH: nothing to flush; a rollback keeps its own copy
		g.exeFile = nil
	}
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	if s.serving == g {
		s.serving = nil
	}
	if s.candidate == g {
		s.candidate = nil
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
	g, in := p.gen, p.inst
	// Leftovers of the process group would be orphans: the main process
	// is gone, so the group goes too (systemd's KillMode=mixed does the
	// same). The main process is not reaped yet, so its pid, which is the
	// group's id, cannot have been reused by anyone else.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // ESRCH when nothing is left
	s.spawner.Reaped(p.pid)                   // before the pid can be reused
	st, werr := p.p.Wait()                    // reaps at once: it has exited
	how := exitText(st, werr)
	if in.proc == p {
		in.proc = nil
	}
	switch {
	case in.state != instRunning || g.state >= genDraining:
		s.log.Info("process exited", "gen", g.id, "instance", in.index, "pid", p.pid, "status", how)
		if in.state == instRunning {
			in.state = instStopping
		}
		s.retireInstance(in)
	case s.stopping:
		s.retireInstance(in)
	case g == s.candidate:
		what := "exited before it was ready: "
		if p.ready {
			what = "crashed: "
		}
		s.log.Warn("process exited", "gen", g.id, "instance", in.index, "pid", p.pid, "status", how)
		in.state = instStopping
		s.failUpgrade(g, fmt.Sprintf("instance %d %s%s", in.index, what, how))
		if in.proc == nil && slices.Contains(g.instances, in) {
			s.retireInstance(in)
		}
	case g == s.probation:
		g.crashes++
		s.log.Warn("process exited during probation", "gen", g.id, "instance", in.index, "pid", p.pid, "status", how)
		s.revert(g, CauseCrash, fmt.Sprintf("instance %d crashed during probation: %s", in.index, how))
		if g == s.serving {
			s.onCrash(in, p, how) // it serves until the reverted generation is ready
		} else if in.state == instRunning {
			s.drainInstance(in, "reverted")
		}
	default:
		g.crashes++
		s.onCrash(in, p, how)
	}
}

// onCrash restarts a serving instance's process with exponential backoff,
// or gives up after [restart] max_tries consecutive crashes. The instance
// keeps its sockets, so connections wait for the restart in its queues and
// the other instances' shares do not move.
func (s *Supervisor) onCrash(in *instance, p *process, how string) {
	g := in.gen
	rc := g.cfg.Restart
	if p.ready && time.Since(p.started) >= rc.ResetAfter {
		in.crashes = 0
	}
	in.crashes++
	if in.crashes > rc.MaxTries {
		s.log.Error("process keeps crashing; giving up", "gen", g.id, "instance", in.index, "pid", p.pid, "status", how,
			"crashes", in.crashes, "max_tries", rc.MaxTries)
		s.emit(Event{Kind: EventGaveUp, Gen: g.id, Instance: in.index, PID: p.pid, Reason: how})
		in.gaveUp = true
		if others := len(routedInstances(g)) - 1; others > 0 && in.routed {
			// The others take its share; connections in its queues move
			// to them as its sockets close.
			in.routed = false
			if err := s.reroute(); err != nil {
				s.log.Error("cannot take a crashed instance out of the steering", "gen", g.id, "instance", in.index, "err", err)
			}
			g.want--
			in.state = instStopping
			s.retireInstance(in)
			return
		}
		// The last instance stays, without a process, so that its sockets
		// (and their backlog) live on while an upgrade in progress may still
		// take over; if none can, baton stops.
		g.gaveUp = true
		s.maybeFinishAbort()
		s.giveUpIfNothingLeft()
		return
	}
	delay := rc.Backoff << (in.crashes - 1)
	if delay > rc.MaxBackoff || delay <= 0 {
		delay = rc.MaxBackoff
	}
	level := "process crashed; restarting"
	switch {
	case p.notReady:
		level = "process was not ready in time; restarting"
	case p.unhealthy != "":
		level = "process stopped after a liveness failure; restarting"
	}
	s.log.Warn(level, "gen", g.id, "instance", in.index, "pid", p.pid, "status", how, "in", delay,
		"attempt", in.crashes, "max_tries", rc.MaxTries)
	s.emit(Event{Kind: EventCrashed, Gen: g.id, Instance: in.index, PID: p.pid, Reason: how})
	in.restartTimer = s.after(delay, restartDue{inst: in})
}

func (s *Supervisor) restart(in *instance) {
	g := in.gen
	if (g != s.serving && g != s.standby) || in.proc != nil || in.state != instRunning || s.stopping {
		return
	}
	in.restarts++
	if err := s.spawn(in); err != nil {
		s.log.Error("restart failed", "gen", g.id, "instance", in.index, "err", err)
		s.onCrash(in, &process{inst: in, gen: g, started: time.Now()}, err.Error())
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
