//go:build linux

package supervisor

// Moving traffic to a candidate generation by its strategy:
//
//   - blue-green: every instance starts; once all are ready, the candidate
//     takes every new connection (promote).
//   - canary: the candidate takes the weight of each step in turn. A step
//     lasts its pause, or, without one, until Promote. After the last step
//     comes promotion. With exact weights every instance starts at once;
//     in shared mode the candidate runs as many instances as approximate
//     the step's weight (canaryInstances).
//   - rolling: one new instance at a time; once it is ready it is routed
//     and one old instance is unrouted and drained; the next new instance
//     starts only when that old one has exited, so there is at most one
//     process more than the service's instances.
//
// Abort (or any failure) undoes the upgrade at any step: see failUpgrade.
// Called by the event loop only.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNoCanary is wrapped by the error of Promote or Abort when no upgrade
// they could act on is in progress.
var ErrNoCanary = errors.New("no upgrade in progress")

// Promote moves the canary in progress to its next step now, without
// waiting for the current step's pause or hold; all moves it straight to
// 100%. The upgrade goes on as before: Upgrade's callers learn its outcome.
func (s *Supervisor) Promote(ctx context.Context, all bool) error {
	return s.gradual(ctx, gradualReq{all: all})
}

// Abort undoes the upgrade in progress, whatever its strategy and step:
// the serving generation gets every new connection back and the candidate
// drains. During probation it reverts, as Rollback does.
func (s *Supervisor) Abort(ctx context.Context) error {
	return s.gradual(ctx, gradualReq{abort: true})
}

func (s *Supervisor) gradual(ctx context.Context, req gradualReq) error {
	reply := make(chan error, 1)
	req.reply = reply
	return answer(ask(s, ctx, req, reply))
}

func (s *Supervisor) onGradual(req gradualReq) error {
	if p := s.probation; req.abort && s.candidate == nil && p != nil {
		s.log.Info("abort asked for during probation: reverting", "gen", p.id)
		s.revert(p, CauseAbort, "aborted by `baton abort` during probation")
		return nil
	}
	g := s.candidate
	if g == nil || g.aborting != "" {
		return fmt.Errorf("%w: nothing to promote or abort", ErrNoCanary)
	}
	if req.abort {
		s.log.Info("abort asked for", "gen", g.id, "state", g.state.String())
		g.aborted = true
		s.failUpgrade(g, "aborted by `baton abort`")
		return nil
	}
	if g.strategy() != StrategyCanary {
		return fmt.Errorf("%w: generation %d is a %s upgrade; promote moves canary steps only", ErrNoCanary, g.id, g.strategy())
	}
	next := g.step + 1
	if req.all || g.step < 0 {
		next = len(g.cfg.Upgrade.Steps)
		if !req.all {
			next = 0
		}
	}
	if g.step < 0 && !req.all {
		return fmt.Errorf("generation %d is not ready yet; its first step (%d%%) begins when it is", g.id, g.cfg.Upgrade.Steps[0].Weight)
	}
	s.log.Info("promote asked for", "gen", g.id, "from_step", g.step+1, "to_step", next+1)
	s.enterStep(g, next)
	return nil
}

// advance moves the candidate g on by its strategy once every instance it
// runs now is ready: promotion (blue-green), the current or next canary
// step, or the next instance (rolling).
func (s *Supervisor) advance(g *generation) {
	if g != s.candidate || g.aborting != "" || !g.allReady() {
		return
	}
	switch g.strategy() {
	case StrategyBlueGreen:
		s.promote(g)
	case StrategyRolling:
		s.rollingNext(g)
	case StrategyCanary:
		switch {
		case g.step < 0:
			s.enterStep(g, 0)
		case g.step >= len(g.cfg.Upgrade.Steps):
			s.promote(g)
		case !g.stepBegun:
			s.beginStep(g)
		}
	}
}

// enterStep moves the canary g to step i (len(Steps): promotion): it starts
// the instances the step needs, and the step begins once they are ready.
func (s *Supervisor) enterStep(g *generation, i int) {
	if g.stepTimer != nil {
		g.stepTimer.Stop()
	}
	g.step, g.stepBegun, g.holding = i, false, false
	if i >= len(g.cfg.Upgrade.Steps) {
		g.want = g.cfg.Service.Instances
	} else {
		g.want = max(g.want, s.canaryInstances(g, g.cfg.Upgrade.Steps[i].Weight))
	}
	for len(g.live()) < g.want {
		if _, err := s.addInstance(g); err != nil {
			s.failUpgrade(g, err.Error())
			return
		}
	}
	s.advance(g)
}

// beginStep gives the canary g the weight of its current step and arms the
// step's pause, or holds until Promote.
func (s *Supervisor) beginStep(g *generation) {
	step := g.cfg.Upgrade.Steps[g.step]
	for _, in := range g.live() {
		in.routed, in.everRouted = true, true
	}
	g.state, g.stepBegun, g.stepStart = genCanary, true, time.Now()
	if err := s.reroute(); err != nil {
		s.failUpgrade(g, err.Error())
		return
	}
	exact := s.exactWeights()
	args := []any{"gen", g.id, "step", g.step + 1, "of", len(g.cfg.Upgrade.Steps), "weight", step.Weight,
		"instances", len(g.live())}
	if !exact {
		args = append(args, "approximate_share", fmt.Sprintf("%.0f%%", 100*s.instanceShareOf(g)), "why", "shared mode: weights by instance count")
	}
	if step.Pause > 0 {
		args = append(args, "pause", step.Pause)
		g.stepTimer = s.after(step.Pause, stepDue{gen: g, step: g.step})
	} else {
		g.holding = true
		args = append(args, "until", "baton promote")
	}
	s.log.Info("canary step", args...)
	if g.step == 0 {
		s.startAnalysis(g, s.serving, "canary")
	}
	s.emit(Event{Kind: EventStep, Gen: g.id, PID: firstPID(g), Weight: step.Weight, Duration: step.Pause,
		Step: g.step + 1, Steps: len(g.cfg.Upgrade.Steps)})
}

// canaryInstances is how many instances the candidate g runs at a canary
// weight. With exact weights, all of them: the program gives them their
// share. In shared mode every process takes connections by merely
// accepting, so the share is approximated by the number of processes: k
// new beside the serving generation's m, with k/(m+k) as close to weight
// as 1 <= k <= [service] instances allows.
func (s *Supervisor) canaryInstances(g *generation, weight int) int {
	n := g.cfg.Service.Instances
	if s.exactWeights() {
		return n
	}
	m := 1
	if s.serving != nil {
		m = max(1, len(s.serving.live()))
	}
	k := (weight*m + (100-weight)/2) / (100 - weight) // weight*m/(100-weight), rounded
	return min(max(k, 1), n)
}

// rollingNext takes the rolling update to g one instance further: it
// routes g's ready instances, unroutes and drains one old instance where
// there are more than the service's instances, and starts the next new
// instance once no old one is still on its way out. When all of g's
// instances run, g is promoted.
func (s *Supervisor) rollingNext(g *generation) {
	o := s.serving
	n := g.cfg.Service.Instances
	for _, in := range g.live() {
		if !in.routed && in.proc != nil && in.proc.ready {
			in.routed, in.everRouted = true, true
			if g.state == genStarting {
				g.state = genCanary
				s.startAnalysis(g, o, "canary")
			}
		}
	}
	if len(g.live()) >= n {
		s.promote(g)
		return
	}
	if o != nil {
		if old := routedInstances(o); len(old) > 0 && len(old)+len(g.live()) > n {
			last := old[len(old)-1]
			last.routed = false
			if err := s.reroute(); err != nil {
				s.failUpgrade(g, err.Error())
				return
			}
			s.log.Info("rolling: instance replaced", "gen", o.id, "instance", last.index, "by_gen", g.id,
				"old_instances", len(old)-1, "new_instances", len(g.live()), "weight", s.weight)
			s.emit(Event{Kind: EventStep, Gen: g.id, PID: firstPID(g), Weight: s.weight})
			s.drainInstance(last, fmt.Sprintf("replaced by generation %d", g.id))
			return // the next instance starts once this one has exited
		}
		for _, in := range o.instances {
			if in.state != instRunning {
				return // still on its way out: at most one process more than [service] instances
			}
		}
	}
	if err := s.reroute(); err != nil {
		s.failUpgrade(g, err.Error())
		return
	}
	g.want = len(g.live()) + 1
	if _, err := s.addInstance(g); err != nil {
		s.failUpgrade(g, err.Error())
	}
}

// routedInstances are g's instances in the steering program's slots (in
// shared mode: the ones counted as taking traffic), in slot order.
func routedInstances(g *generation) []*instance {
	var out []*instance
	for _, in := range g.instances {
		if in.routed && in.state == instRunning {
			out = append(out, in)
		}
	}
	return out
}

// targetWeight is the candidate's share of new connections (percent) by
// its strategy and how far it is: the step's weight for a canary, its part
// of the routed instances for a rolling update, 0 while it has none routed.
func (s *Supervisor) targetWeight() int {
	g := s.candidate
	if g == nil || g.aborting != "" {
		return 0
	}
	nb := len(routedInstances(g))
	if nb == 0 {
		return 0
	}
	na := 0
	if s.serving != nil {
		na = len(routedInstances(s.serving))
	}
	if na == 0 {
		return 100
	}
	if g.strategy() == StrategyCanary && g.step >= 0 && g.step < len(g.cfg.Upgrade.Steps) {
		return g.cfg.Upgrade.Steps[g.step].Weight
	}
	w := (100*nb + (na+nb)/2) / (na + nb)
	return min(max(w, 1), 99)
}

// reroute makes the steering match the routed flags of the serving
// generation (A) and the candidate (B) and the candidate's target weight.
// The weight goes down before sockets leave and up after they arrive, so
// no generation ever has a share without sockets.
func (s *Supervisor) reroute() error {
	w := s.targetWeight()
	if w < s.weight {
		if err := s.routeWeight(w); err != nil {
			return err
		}
	}
	if err := s.routeSet(genA, s.serving); err != nil {
		return err
	}
	b := s.candidate
	if b == nil {
		b = s.standby
	}
	if err := s.routeSet(genB, b); err != nil {
		return err
	}
	if w >= s.weight {
		if err := s.routeWeight(w); err != nil {
			return err
		}
	}
	s.weight = w
	return nil
}
