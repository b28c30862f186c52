//go:build linux

package supervisor

// Probation: a promoted generation stays under watch for [upgrade]
// probation. A crash, a liveness failure or a failed analysis in that time
// reverts to the generation it replaced:
//
//   - where every listener is steered, the replaced generation keeps
//     running at weight 0 (standby) in the steering program's B half, so
//     the revert is a weight change: it takes every new connection back in
//     one store, and the failing generation drains;
//   - otherwise the replaced generation was drained at promotion, and the
//     revert starts it again from its pinned executable and config; it
//     must be ready before the failing one drains (a blue-green rollback).
//
// Callers waiting for the upgrade learn its outcome when probation ends.
// More than [upgrade] max_reverts reverts within revert_window put the
// service in the failed state. Called by the event loop only.

import (
	"errors"
	"fmt"
	"time"
)

type probationOver struct{ gen *generation }

// ErrFailedState is wrapped by the error of an upgrade refused because the
// service is in the failed state.
var ErrFailedState = errors.New("service is in the failed state after repeated reverts")

// startProbation puts the just promoted g on probation; old is the
// generation it replaced, kept as standby when keep is set.
func (s *Supervisor) startProbation(g, old *generation, keep bool) {
	d := g.cfg.Upgrade.Probation
	s.probation = g
	g.probationEnd = time.Now().Add(d)
	g.probationTimer = s.after(d, probationOver{gen: g})
	s.probationWaiters = append(s.probationWaiters, s.candidateWaiters...)
	s.candidateWaiters = nil
	if keep {
		s.standby = old
		old.state = genStandby
		s.startAnalysis(g, old, "probation")
		s.log.Info("on probation; the replaced generation stands by at weight 0", "gen", g.id, "for", d, "standby", old.id)
	} else {
		s.log.Info("on probation; a revert would start the replaced generation again from its pinned executable",
			"gen", g.id, "for", d, "replaced", old.id, "why", "not every listener is steered")
		s.startAnalysis(g, nil, "probation")
	}
}

// confirm ends g's probation: the standby drains and the upgrade is final.
func (s *Supervisor) confirm(g *generation) {
	if s.probation != g {
		return
	}
	s.probation = nil
	s.stopAnalysis()
	s.log.Info("probation passed", "gen", g.id, "after", g.cfg.Upgrade.Probation)
	s.emit(Event{Kind: EventConfirmed, Gen: g.id, PID: firstPID(g), Duration: g.cfg.Upgrade.Probation})
	if st := s.standby; st != nil {
		s.standby = nil
		for _, in := range st.instances {
			in.routed = false
		}
		if err := s.reroute(); err != nil {
			s.log.Error("cannot take the standby generation out of the steering", "gen", st.id, "err", err)
		}
		s.drainGeneration(st, fmt.Sprintf("generation %d passed its probation", g.id))
	}
	s.replyProbation(upgradeResult{gen: g.id})
	s.runHook("post_promote", g, "")
	s.nextQueued()
}

func (s *Supervisor) replyProbation(r upgradeResult) {
	for _, w := range s.probationWaiters {
		w <- r
	}
	s.probationWaiters = nil
}

// revert undoes the promotion of g, on probation, because of why (cause
// is one of the Cause constants).
func (s *Supervisor) revert(g *generation, cause, why string) {
	if s.probation != g || g.reverting != "" {
		return
	}
	s.probation = nil
	s.stopAnalysis()
	g.reverting = why
	if g.probationTimer != nil {
		g.probationTimer.Stop()
	}
	back := s.standby
	if back == nil && (s.previous == nil || s.previous.file == nil) {
		s.log.Error("cannot revert: nothing pinned to go back to; the generation keeps serving", "gen", g.id, "reason", why)
		s.replyProbation(upgradeResult{err: fmt.Errorf("%w: generation %d failed during probation (%s) and there is nothing to revert to", ErrUpgradeFailed, g.id, why)})
		return
	}
	s.log.Error("reverting", "gen", g.id, "reason", why, "cause", cause, "to", previousID(back, s.previous))
	s.emit(Event{Kind: EventReverted, Gen: g.id, PID: firstPID(g), Reason: why, Cause: cause, Replaces: previousID(back, s.previous)})
	s.countRevert(g, why)
	s.replyProbation(upgradeResult{err: fmt.Errorf("%w: generation %d reverted during probation: %s", ErrUpgradeFailed, g.id, why)})
	if back == nil {
		s.revertByRestart(g, why)
		return
	}
	s.standby = nil
	for _, in := range back.live() {
		in.routed, in.everRouted = true, true
	}
	if err := s.routePromote(back, false); err != nil {
		s.log.Error("cannot route back to the standby generation", "gen", back.id, "err", err)
	}
	back.state, s.serving = genServing, back
	s.setPrevious(g)
	for _, in := range g.instances {
		in.routed = false
	}
	s.drainGeneration(g, "reverted: "+why)
	s.runHook("post_revert", back, why)
	s.nextQueued()
}

func previousID(standby *generation, p *pinned) int {
	switch {
	case standby != nil:
		return standby.id
	case p != nil:
		return p.id
	}
	return 0
}

// revertByRestart starts the generation g replaced again from its pinned
// executable and config; g serves until it is ready and promoted.
func (s *Supervisor) revertByRestart(g *generation, why string) {
	if s.candidate != nil {
		s.failUpgrade(s.candidate, "a revert takes precedence")
	}
	if err := s.startCandidate(s.previous.cfg, true, nil); err != nil {
		s.log.Error("cannot revert: the replaced generation does not start", "gen", g.id, "err", err)
		return
	}
	s.candidate.revertOf, s.candidate.revertOfGen = why, g.id
}

// countRevert records a revert and enters the failed state when there were
// more than [upgrade] max_reverts within revert_window.
func (s *Supervisor) countRevert(g *generation, why string) {
	now := time.Now()
	window, most := g.cfg.Upgrade.RevertWindow, g.cfg.Upgrade.MaxReverts
	kept := s.reverts[:0]
	for _, t := range s.reverts {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	s.reverts = append(kept, now)
	if len(s.reverts) <= most || s.failed != "" {
		return
	}
	s.failed = fmt.Sprintf("%d reverts within %s; the last: generation %d: %s", len(s.reverts), window, g.id, why)
	s.log.Error("service in the failed state: upgrades are refused until one is forced", "reason", s.failed)
	s.emit(Event{Kind: EventFailedState, Gen: g.id, Reason: s.failed})
}
