//go:build linux

package supervisor

// Watching a process once it is ready: the [health] check on a
// Kubernetes-like schedule, and the watchdog (WATCHDOG=1 keep-alives).
// Either one failing is a liveness failure: a serving instance is
// restarted, a canary is aborted, a generation on probation is reverted.
// Every check reaches the instance it judges through its own socket of a
// private listener, never the shared address. Called by the event loop
// only, except the probers' own goroutines, which only send events.

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/baton-sh/baton/probe"
)

type (
	healthChange struct {
		proc *process
		tr   probe.Transition
	}
	watchdogMissed struct{ proc *process }
)

// probeCheck builds the check of the given kind aimed at process p: its
// instance's socket of the target's private listener, or the command.
func (s *Supervisor) probeCheck(p *process, kind string, t ProbeTarget, command []string, env []string) (probe.Check, error) {
	switch kind {
	case "exec":
		return probe.Exec{
			Command:    command,
			Dir:        p.gen.cfg.Service.Directory,
			Env:        checkEnv(env, p.pid),
			Credential: credential(p.gen.cfg.Service.Credentials),
		}, nil
	case "http", "tcp":
		i := slices.IndexFunc(s.listeners, func(l *listener) bool { return l.spec.Name == t.Listener })
		if i < 0 || p.inst.address(i) == "" {
			return nil, fmt.Errorf("no socket of private listener %q", t.Listener)
		}
		addr := p.inst.address(i)
		if kind == "tcp" {
			return probe.TCP{Address: addr}, nil
		}
		return probe.HTTP{Address: addr, Path: t.Path, Host: t.Host, Body: t.Body}, nil
	}
	return nil, fmt.Errorf("unknown check %q", kind)
}

// startHealth starts watching a process that just became ready.
func (s *Supervisor) startHealth(p *process) {
	hc := p.gen.cfg.Health
	if hc.Watchdog > 0 {
		p.watchdogTimer = s.after(hc.Watchdog, watchdogMissed{proc: p})
	}
	if hc.Check == "" {
		return
	}
	check, err := s.probeCheck(p, hc.Check, hc.Target, hc.Command, s.childEnv(p.inst))
	if err != nil {
		s.log.Error("health check not started", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid, "err", err)
		return
	}
	prober, err := probe.NewProber(check, hc.Schedule, func(tr probe.Transition) {
		s.send(healthChange{proc: p, tr: tr})
	})
	if err != nil {
		s.log.Error("health check not started", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.prober, p.healthCancel = prober, cancel
	go func() { _ = prober.Run(ctx) }() // returns nil once cancelled, when the process stops
}

// onHealthChange applies a prober's transition.
func (s *Supervisor) onHealthChange(p *process, tr probe.Transition) {
	if p.exited || p.stopSent {
		return
	}
	switch tr.To {
	case probe.Healthy:
		if tr.From == probe.Unhealthy {
			s.log.Info("health check passes again", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid)
		}
	case probe.Unhealthy:
		s.onUnhealthy(p, fmt.Sprintf("health check failed %d times in a row: %v", p.gen.cfg.Health.Schedule.FailureThreshold, tr.Err))
	}
}

// onWatchdog applies a WATCHDOG= notify message.
func (s *Supervisor) onWatchdog(p *process, value string) {
	switch {
	case value == "trigger":
		s.onUnhealthy(p, "the service asked for it (WATCHDOG=trigger)")
	case value != "1":
	case p.watchdogTimer != nil:
		p.watchdogTimer.Stop()
		p.watchdogTimer = s.after(p.gen.cfg.Health.Watchdog, watchdogMissed{proc: p})
	}
}

// onUnhealthy handles a liveness failure of process p.
func (s *Supervisor) onUnhealthy(p *process, why string) {
	if p.exited || p.stopSent {
		return
	}
	g, in := p.gen, p.inst
	s.log.Warn("liveness failure", "gen", g.id, "instance", in.index, "pid", p.pid, "reason", why)
	s.emit(Event{Kind: EventUnhealthy, Gen: g.id, Instance: in.index, PID: p.pid, Reason: why})
	g.unhealthy++
	switch {
	case g == s.candidate:
		s.failUpgrade(g, fmt.Sprintf("instance %d: %s", in.index, why))
	case g == s.probation:
		s.revert(g, CauseLiveness, fmt.Sprintf("instance %d: %s", in.index, why))
	case g == s.serving || g == s.standby:
		// Restarted like a crash (same backoff and limit).
		p.unhealthy = why
		s.signal(p, g.cfg.Drain.Signal)
	}
}

// watchdogEnv is the child's WATCHDOG_USEC, or nothing.
func watchdogEnv(cfg *Config) (string, bool) {
	if cfg.Health.Watchdog <= 0 {
		return "", false
	}
	return strconv.FormatInt(cfg.Health.Watchdog.Microseconds(), 10), true
}
