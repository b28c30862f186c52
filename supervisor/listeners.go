//go:build linux

package supervisor

import (
	"errors"
	"fmt"

	"github.com/baton-sh/baton/handoff"
)

// Routing modes of a listener.
const (
	ModeSteered = "steered" // a socket per generation, chosen by a BPF program
	ModeShared  = "shared"  // one socket held by every generation
)

// listener is one configured listener and how its traffic is routed.
type listener struct {
	spec   handoff.ListenerSpec // as configured
	bound  handoff.ListenerSpec // with the address actually bound (port 0 resolved)
	mode   string
	reason string // why this mode
	// Steered mode: the group's program and map, and a socket made ahead
	// for the next generation (the first one, created at setup).
	steer *handoff.Steering
	next  *handoff.Socket
	// Shared mode: the one socket.
	shared *handoff.Socket
}

// socketFor returns the socket a new generation gets and whether the
// generation owns it (steered) or only borrows the shared one.
func (l *listener) socketFor() (*handoff.Socket, bool, error) {
	if l.steer == nil {
		return l.shared, false, nil
	}
	if l.next != nil {
		sock := l.next
		l.next = nil
		return sock, true, nil
	}
	sock, err := handoff.JoinGroup(l.bound)
	if err != nil {
		return nil, false, err
	}
	return sock, true, nil
}

func (l *listener) close() {
	if l.next != nil {
		_ = l.next.Close() // never handed to a generation; nothing waits in it
		l.next = nil
	}
	if l.shared != nil {
		_ = l.shared.Close() // every child has exited: the socket goes now
	}
	if l.steer != nil {
		_ = l.steer.Close() // the program goes with the group's last socket
	}
}

// setupListeners binds every listener and chooses its mode, once.
func (s *Supervisor) setupListeners() error {
	want := s.base.Upgrade.Steering
	for _, spec := range s.base.Listeners {
		l := &listener{spec: spec}
		s.listeners = append(s.listeners, l)
		if err := l.open(want); err != nil {
			return err
		}
		s.log.Info("listener ready", "listener", spec.Name, "network", spec.Network,
			"address", l.bound.Address, "mode", l.mode, "why", l.reason)
	}
	return nil
}

func (l *listener) open(want string) error {
	spec := l.spec
	var reason error
	switch {
	case want == "shared":
		reason = errors.New(`[upgrade] steering = "shared"`)
	case spec.IsUnix():
		reason = errors.New("unix sockets cannot be steered (no SO_REUSEPORT)")
	default:
		reason = l.openSteered()
		if reason == nil {
			return nil
		}
		if !errors.Is(reason, handoff.ErrSteeringUnsupported) {
			return reason // e.g. address in use: not a reason to fall back
		}
	}
	if want == "bpf" {
		return fmt.Errorf("%s: [upgrade] steering = \"bpf\" but kernel steering is not possible: %w", spec, reason)
	}
	sock, err := handoff.Listen(spec, false)
	if err != nil {
		return err
	}
	l.mode, l.reason, l.shared, l.bound = ModeShared, reason.Error(), sock, sock.Spec()
	return nil
}

// openSteered binds the listener's first reuseport socket and routes the
// group to it. Errors that mean steering is impossible here wrap
// handoff.ErrSteeringUnsupported.
func (l *listener) openSteered() error {
	st, err := handoff.NewSteering()
	if err != nil {
		return err
	}
	sock, err := handoff.Listen(l.spec, true)
	if err != nil {
		_ = st.Close()
		return err
	}
	if err := st.Attach(sock.FD()); err != nil {
		_ = sock.Close()
		_ = st.Close()
		return fmt.Errorf("%s: %w: %w", l.spec, handoff.ErrSteeringUnsupported, err)
	}
	if err := st.Select(sock.FD()); err != nil {
		_ = sock.Close()
		_ = st.Close()
		return fmt.Errorf("%s: %w: %w", l.spec, handoff.ErrSteeringUnsupported, err)
	}
	why := "kernel steering available"
	if !st.Migrates() {
		why += " (without select-or-migrate: kernel older than 5.14)"
	}
	l.mode, l.reason, l.steer, l.next, l.bound = ModeSteered, why, st, sock, sock.Spec()
	return nil
}

// route sends every new connection of each steered listener to g's
// sockets. On failure the listeners already switched go back to prev.
func (s *Supervisor) route(g, prev *generation) error {
	for i, l := range s.listeners {
		if l.steer == nil {
			continue
		}
		if err := l.steer.Select(g.sockets[i].FD()); err != nil {
			for j := 0; j < i && prev != nil; j++ {
				if s.listeners[j].steer != nil {
					_ = s.listeners[j].steer.Select(prev.sockets[j].FD()) // best effort undo; the old sockets are live
				}
			}
			return fmt.Errorf("route %s to generation %d: %w", l.spec, g.id, err)
		}
	}
	return nil
}
