//go:build linux

package supervisor

// Draining: an instance that no longer gets new connections empties its
// accept queues before it is asked to stop, the way net/http's Shutdown
// stops taking work before it waits for what is in flight. Called by the
// event loop only.

import (
	"fmt"
	"time"
)

// drainPoll is how often a draining instance's accept queues are read.
const drainPoll = 10 * time.Millisecond

// drainGeneration drains every instance of g, which the steering no longer
// routes to.
func (s *Supervisor) drainGeneration(g *generation, why string) {
	if g.stepTimer != nil {
		g.stepTimer.Stop()
	}
	g.state = genDraining
	if len(g.instances) == 0 {
		s.retire(g)
		return
	}
	s.log.Info("draining", "gen", g.id, g.pidAttrs())
	s.emit(Event{Kind: EventDraining, Gen: g.id, PID: firstPID(g)})
	for _, in := range append([]*instance(nil), g.instances...) {
		if in.state == instRunning {
			s.drainInstance(in, why)
		}
	}
}

// drainInstance waits until the accept queues of in's own (steered)
// sockets are empty, plus the grace, then stops it. An instance that was
// never routed, or has only the shared socket, has nothing to wait for.
func (s *Supervisor) drainInstance(in *instance, why string) {
	in.state, in.drainWhy = instDraining, why
	in.routed = false
	if in.restartTimer != nil {
		in.restartTimer.Stop()
	}
	if !in.steered() || !in.everRouted || in.proc == nil {
		s.stopInstance(in, why)
		return
	}
	in.drainUntil = time.Now().Add(in.gen.cfg.Drain.Timeout)
	s.checkDrained(in)
}

func (s *Supervisor) checkDrained(in *instance) {
	if in.state != instDraining {
		return
	}
	g := in.gen
	waiting := 0
	for i, sock := range in.sockets {
		if !in.owned[i] {
			continue
		}
		n, err := sock.QueueLen()
		if err != nil {
			s.log.Warn("cannot read accept queue; stopping without waiting", "gen", g.id, "instance", in.index, "err", err)
			waiting = 0
			break
		}
		waiting += n
	}
	switch {
	case waiting == 0:
		in.drainTimer = s.after(g.cfg.Drain.Grace, graceOver{inst: in})
	case time.Now().After(in.drainUntil):
		s.log.Warn("accept queue did not empty in time; stopping anyway",
			"gen", g.id, "instance", in.index, "waiting", waiting, "timeout", g.cfg.Drain.Timeout)
		s.stopInstance(in, fmt.Sprintf("drain timeout (%s)", in.drainWhy))
	default:
		in.drainTimer = s.after(drainPoll, drainTick{inst: in})
	}
}
