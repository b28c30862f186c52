//go:build linux

package supervisor

// Deciding an upgrade: promotion, and undoing a candidate that will not
// be promoted. Called by the event loop only.

import (
	"fmt"
	"time"
)

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
