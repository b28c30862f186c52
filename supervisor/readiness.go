//go:build linux

package supervisor

// Readiness: when a started process may get traffic, and what happens
// when it does or does not get there. Called by the event loop only.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

// readyBackstop is how long after its deadline a readiness check that has
// not returned counts as failed anyway.
const readyBackstop = time.Second

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
	if why := s.socketsLost(p); why != "" {
		s.onNotReady(p, why)
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

// socketsLost says why process p cannot be ready if it (and its process
// group) no longer holds one of the sockets it was handed: baton's own copy
// keeps such a socket listening, and connections routed to it would wait
// where nobody accepts. "" if it holds them all (or /proc cannot tell).
func (s *Supervisor) socketsLost(p *process) string {
	in := p.inst
	var inodes []uint64
	names := map[uint64]string{}
	for i, sock := range in.sockets {
		if in.private[i] {
			continue // for probes; a service may serve them as it likes
		}
		ino, err := sock.Inode()
		if err != nil {
			return ""
		}
		inodes = append(inodes, ino)
		names[ino] = s.listeners[i].spec.Name
	}
	missing, err := handoff.NotHeld(p.pid, inodes)
	if err != nil || len(missing) == 0 {
		return ""
	}
	var ls []string
	for _, ino := range missing {
		ls = append(ls, strconv.Quote(names[ino]))
	}
	return fmt.Sprintf("it says it is ready but no longer holds its socket of listener %s (closed it?): connections would wait where nobody accepts",
		strings.Join(ls, ", "))
}
