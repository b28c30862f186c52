//go:build linux

package supervisor

// A handover passes the listeners to a successor baton (a self-upgrade),
// without closing any socket and without losing a connection:
//
//  1. The old baton makes, for each steered listener, a new socket in the
//     listener's group (it gets no traffic: the program routes to the old
//     serving generation) and hands it over with the group's program and
//     map; a shared listener's one socket is handed over as it is.
//  2. The new baton adopts them (Options.Handover) and starts its first
//     generation unrouted. Once it is ready, the new baton routes the group
//     to it in the shared map, in one update (Options.OnServing fires).
//  3. The old baton then drains as at any promotion: its serving generation
//     is unrouted already, its accept queue empties, it gets its stop
//     signal, and the old baton exits.
// If the successor fails, the old baton closes what it made for it and goes
// on as before: nothing was routed away from it.

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
)

// steeringFDPrefixes name the fds that carry a listener's steering program
// and maps (to a successor, or in systemd's fd store): the prefix, then the
// listener's name. Each goes with the field of handoff.WeightedFDs it fills.
var steeringFDPrefixes = []struct {
	prefix string
	field  func(*handoff.WeightedFDs) *int
}{
	{"baton.bpf-prog.", func(f *handoff.WeightedFDs) *int { return &f.Program }},
	{"baton.bpf-map.", func(f *handoff.WeightedFDs) *int { return &f.Sockets }},
	{"baton.bpf-state.", func(f *handoff.WeightedFDs) *int { return &f.State }},
	{"baton.bpf-counters.", func(f *handoff.WeightedFDs) *int { return &f.Counters }},
}

// steeringFDs are a steered listener's program and maps, named.
func steeringFDs(l *listener) []handoff.Inherited {
	fds := l.steer.FDs()
	var out []handoff.Inherited
	for _, p := range steeringFDPrefixes {
		out = append(out, handoff.Inherited{FD: *p.field(&fds), Name: p.prefix + l.spec.Name})
	}
	return out
}

// steeringPart tells whether an fd name is one of steeringFDs': if so, the
// listener it is for and the field it fills, else field is nil.
func steeringPart(name string) (listener string, field func(*handoff.WeightedFDs) *int) {
	for _, p := range steeringFDPrefixes {
		if l, ok := strings.CutPrefix(name, p.prefix); ok {
			return l, p.field
		}
	}
	return "", nil
}

type (
	handoverReq struct {
		reply chan<- handoverResult
	}
	handoverResult struct {
		fds []handoff.Inherited
		err error
	}
	handoverDone struct {
		ok    bool
		reply chan<- struct{}
	}
)

// PrepareHandover makes and returns the fds a successor baton needs, named
// as Options.Activated expects them. The fds stay valid until
// FinishHandover; the caller passes them on (duplicating them) and must not
// close them.
func (s *Supervisor) PrepareHandover(ctx context.Context) ([]handoff.Inherited, error) {
	reply := make(chan handoverResult, 1)
	r, err := ask(s, ctx, handoverReq{reply: reply}, reply)
	if err != nil {
		return nil, err
	}
	return r.fds, r.err
}

// FinishHandover ends a handover. ok: the successor serves, so this
// supervisor drains every generation and Run returns nil once they are
// gone. !ok: the successor failed; what PrepareHandover made is closed and
// nothing else changes.
func (s *Supervisor) FinishHandover(ok bool) {
	reply := make(chan struct{})
	if s.send(handoverDone{ok: ok, reply: reply}) {
		select {
		case <-reply:
		case <-s.done:
		}
	}
}

func (s *Supervisor) prepareHandover() handoverResult {
	if s.stopping {
		return handoverResult{err: fmt.Errorf("baton is stopping")}
	}
	if s.busy() {
		return handoverResult{err: fmt.Errorf("an upgrade is in progress (generation %d); upgrade baton once it is decided", max(idOf(s.candidate), idOf(s.probation)))}
	}
	s.closeHandover()
	var fds []handoff.Inherited
	for _, l := range s.listeners {
		if l.mode == ModePrivate {
			continue // the successor makes them per instance
		}
		if l.steer == nil {
			fds = append(fds, handoff.Inherited{FD: l.shared.FD(), Name: l.spec.Name})
			continue
		}
		sock, err := handoff.JoinGroup(l.bound)
		if err != nil {
			s.closeHandover()
			return handoverResult{err: fmt.Errorf("%s: a socket for the successor: %w", l.spec, err)}
		}
		s.handover = append(s.handover, sock)
		fds = append(fds, handoff.Inherited{FD: sock.FD(), Name: l.spec.Name})
		fds = append(fds, steeringFDs(l)...)
	}
	s.log.Info("handing the listeners over to a new baton", "fds", len(fds))
	return handoverResult{fds: fds}
}

func (s *Supervisor) finishHandover(ok bool) {
	if !ok {
		// The successor may have routed the group to its socket before it
		// failed: route back, and stop the sockets made for it from
		// listening for every holder (tableflip keeps a copy of them).
		for _, sock := range s.handover {
			_ = unix.Shutdown(sock.FD(), unix.SHUT_RDWR) // its queue is empty or migrates: it is unrouted
		}
		s.closeHandover()
		if s.serving != nil {
			if err := s.routeOnly(s.serving); err != nil {
				s.log.Error("cannot route back to the serving generation", "gen", s.serving.id, "err", err)
			}
		}
		s.log.Warn("the new baton did not take over; this one goes on")
		return
	}
	s.closeHandover() // the successor holds its own copies
	s.log.Info("the new baton serves; draining every generation of this one")
	for _, l := range s.listeners {
		if l.shared != nil {
			l.shared.KeepFile() // the successor listens on it
		}
	}
	s.stopping, s.handedOver = true, true
	if s.candidate != nil {
		s.failUpgrade(s.candidate, "baton is handing over to a new baton")
	}
	s.replyQueued(upgradeResult{err: fmt.Errorf("%w: baton handed over to a new baton", ErrUpgradeFailed)})
	for _, g := range append([]*generation(nil), s.gens...) {
		if g.state == genServing {
			for _, in := range g.instances {
				in.routed = false // the successor routed the group to itself
			}
			s.drainGeneration(g, "handed over to a new baton")
		}
	}
}

// closeHandover closes the sockets made for a successor.
func (s *Supervisor) closeHandover() {
	for _, sock := range s.handover {
		_ = sock.Close() // the successor, if any, has its own copy
	}
	s.handover = nil
}

// HandoverNames are the names under which a predecessor hands over the fds
// for cfg's listeners: each listener's socket, and its steering program and
// maps where it is steered.
func HandoverNames(cfg *Config) []string {
	var names []string
	for _, l := range cfg.Listeners {
		names = append(names, l.Name)
		for _, p := range steeringFDPrefixes {
			names = append(names, p.prefix+l.Name)
		}
	}
	return names
}
