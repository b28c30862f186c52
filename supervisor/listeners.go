//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"strings"

	"github.com/baton-sh/baton/handoff"
	"golang.org/x/sys/unix"
)

// Routing modes of a listener.
const (
	ModeSteered = "steered" // a socket per instance, chosen by a BPF program
	ModeShared  = "shared"  // one socket held by every generation
	ModePrivate = "private" // a socket per instance on a port of its own, for probes
)

// listener is one configured listener and how its traffic is routed.
type listener struct {
	spec   handoff.ListenerSpec // as configured
	bound  handoff.ListenerSpec // with the address actually bound (port 0 resolved)
	mode   string
	reason string // why this mode
	// Steered mode: the group's program and maps, and a socket made ahead
	// for the first instance of the first generation, created at setup.
	steer *handoff.WeightedSteering
	next  *handoff.Socket
	// base: the program's counters when the routing last changed; the
	// shares since then are measured against it (status, metrics).
	base handoff.WeightedCounts
	// Shared mode: the one socket.
	shared *handoff.Socket
	// adopted: the socket was passed to baton (socket activation or the
	// fd store), not made by it.
	adopted bool
}

// socketFor returns the socket a new generation gets and whether the
// generation owns it (steered) or only borrows the shared one.
func (l *listener) socketFor() (*handoff.Socket, bool, error) {
	if l.mode == ModePrivate {
		sock, err := handoff.Listen(l.spec, false)
		return sock, err == nil, err
	}
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

// setupListeners binds every listener, or adopts the socket passed to baton
// for it, and chooses its mode, once.
func (s *Supervisor) setupListeners() error {
	want := s.base.Upgrade.Steering
	passed, steering, err := s.matchActivated()
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range steering {
			for _, fd := range []int{p.fds.Program, p.fds.Sockets, p.fds.State, p.fds.Counters} {
				_ = unix.Close(fd) // taken over as duplicates, or not used
			}
		}
	}()
	for i, spec := range s.base.Listeners {
		l := &listener{spec: spec}
		s.listeners = append(s.listeners, l)
		if spec.Private {
			if in, ok := passed[i]; ok {
				s.log.Warn("socket passed for a private listener closed: each instance gets its own", "listener", spec.Name, "fd", in.FD)
				_ = unix.Close(in.FD) // not used: private sockets are made per instance
			}
			l.mode, l.reason, l.bound = ModePrivate, "a socket per instance on a free port, for probes", spec
			s.log.Info("listener ready", "listener", spec.Name, "network", spec.Network,
				"address", spec.Address, "mode", l.mode, "why", l.reason)
			continue
		}
		if in, ok := passed[i]; ok {
			sock, err := handoff.Adopt(in, spec)
			if err != nil {
				return err
			}
			l.adopted = true
			if err := l.openAdopted(want, sock, steering[spec.Name], !s.opts.Handover); err != nil {
				return err
			}
			if s.opts.Handover && l.steer != nil {
				// A generation's own socket, held besides by tableflip's
				// leftover copy only: when the generation retires, it
				// stops listening for both.
				sock.ShutdownOnClose()
			}
		} else if err := l.open(want); err != nil {
			return err
		}
		s.log.Info("listener ready", "listener", spec.Name, "network", spec.Network,
			"address", l.bound.Address, "mode", l.mode, "why", l.reason, "passed_by_manager", l.adopted)
		if s.opts.FDStore && !l.adopted {
			s.store(l)
		}
	}
	return nil
}

// store puts a socket baton made into its service manager's fd store, so
// that it survives a restart or crash of baton. Failing is logged only:
// the socket works as before, it just does not outlive baton.
func (s *Supervisor) store(l *listener) {
	sock := l.shared
	if sock == nil {
		sock = l.next
	}
	fds := []handoff.Inherited{{FD: sock.FD(), Name: l.spec.Name}}
	if l.steer != nil {
		// The program and map too: a restarted baton takes them over and
		// steers the same group with the same map.
		fds = append(fds, steeringFDs(l)...)
	}
	for i, f := range fds {
		// systemd drops a stored fd that polls as broken, and a BPF map
		// polls as EPOLLERR: the program and maps are stored unpolled.
		if ok, err := handoff.StoreFD(f.Name, f.FD, i == 0); err != nil {
			s.log.Warn("not stored in the service manager's fd store", "listener", l.spec.Name, "fd_name", f.Name, "err", err)
			return
		} else if !ok {
			return
		}
	}
	s.log.Info("listener stored in the service manager's fd store", "listener", l.spec.Name, "fds", len(fds))
}

// passedSteering is a steering program and its maps passed with a
// listener's socket (by a predecessor baton, or from the fd store); the
// zero value means none.
type passedSteering struct{ fds handoff.WeightedFDs }

func (p passedSteering) ok() bool { return p.fds.Program > 0 }

// matchActivated pairs the sockets passed to baton (socket activation, or
// the fd store after a restart) with listeners: by LISTEN_FDNAMES where any
// name matches a listener's, else by order when the counts agree. The
// result maps listener index to socket. A passed socket that matches no
// listener is closed and logged. Steering programs and maps passed along
// are returned by listener name.
func (s *Supervisor) matchActivated() (map[int]handoff.Inherited, map[string]passedSteering, error) {
	out := map[int]handoff.Inherited{}
	steering := map[string]passedSteering{}
	var passed []handoff.Inherited
	parts := map[string]*passedSteering{} // by listener name
	for _, in := range s.opts.Activated {
		name, field := steeringPart(in.Name)
		if field == nil {
			passed = append(passed, in)
			continue
		}
		p := parts[name]
		if p == nil {
			p = &passedSteering{}
			parts[name] = p
		}
		if *field(&p.fds) > 0 {
			_ = unix.Close(in.FD) // a second copy: the first is used
			continue
		}
		*field(&p.fds) = in.FD
	}
	for name, p := range parts {
		f := p.fds
		if f.Program > 0 && f.Sockets > 0 && f.State > 0 && f.Counters > 0 {
			steering[name] = *p
			continue
		}
		s.log.Warn("incomplete steering program and maps passed to baton; not used", "listener", name)
		for _, fd := range []int{f.Program, f.Sockets, f.State, f.Counters} {
			if fd > 0 {
				_ = unix.Close(fd) // of no use without the others
			}
		}
	}
	if len(passed) == 0 {
		return out, steering, nil
	}
	index := map[string]int{}
	for i, spec := range s.base.Listeners {
		index[spec.Name] = i
	}
	byName := false
	for _, in := range passed {
		if _, ok := index[in.Name]; ok {
			byName = true
		}
	}
	switch {
	case byName:
		for _, in := range passed {
			i, ok := index[in.Name]
			if !ok {
				s.log.Warn("passed socket matches no listener; closed", "fd", in.FD, "name", in.Name)
				_ = unix.Close(in.FD) // not ours to use
				continue
			}
			if _, dup := out[i]; dup {
				return nil, nil, fmt.Errorf("two sockets named %q were passed to baton; listener %q takes one", in.Name, in.Name)
			}
			out[i] = in
		}
	case len(passed) == len(s.base.Listeners):
		s.log.Info("passed sockets matched to listeners by order: their names match none", "count", len(passed))
		for i, in := range passed {
			out[i] = in
		}
	default:
		var names []string
		for _, in := range passed {
			names = append(names, fmt.Sprintf("%q", in.Name))
		}
		return nil, nil, fmt.Errorf("%d sockets were passed to baton (names %s) and none is named after a listener; "+
			"name them with FileDescriptorName= in the .socket unit, or pass one per listener in order", len(passed), strings.Join(names, ", "))
	}
	return out, steering, nil
}

func (l *listener) open(want string) error {
	reason := l.unsteerable(want)
	if reason == nil {
		sock, err := handoff.Listen(l.spec, true)
		if err != nil {
			return err
		}
		if reason = l.steerGroup(sock, passedSteering{}, true); reason == nil {
			return nil
		}
		_ = sock.Close() // nothing was routed to it: steering failed before Select
	}
	if err := refuseShared(want, l.spec, reason); err != nil {
		return err
	}
	sock, err := handoff.Listen(l.spec, false)
	if err != nil {
		return err
	}
	l.useShared(sock, reason)
	return nil
}

// unsteerable says why the listener is shared whatever the kernel allows,
// or nil.
func (l *listener) unsteerable(want string) error {
	switch {
	case want == "shared":
		return errors.New(`[upgrade] steering = "shared"`)
	case l.spec.IsUnix():
		return errors.New("unix sockets cannot be steered (no SO_REUSEPORT)")
	}
	return nil
}

// refuseShared is the error for a listener that cannot be steered when the
// config demands steering (steering = "bpf"), else nil.
func refuseShared(want string, spec handoff.ListenerSpec, reason error) error {
	if want == "bpf" {
		return fmt.Errorf("%s: [upgrade] steering = \"bpf\" but kernel steering is not possible: %w", spec, reason)
	}
	return nil
}

// useShared makes sock the one socket every generation is handed.
func (l *listener) useShared(sock *handoff.Socket, reason error) {
	l.mode, l.reason, l.shared, l.bound = ModeShared, reason.Error(), sock, sock.Spec()
}

// openAdopted is open for a socket passed to baton: steered where the
// socket allows it (SO_REUSEPORT, plain TCP or UDP), else shared.
func (l *listener) openAdopted(want string, sock *handoff.Socket, passed passedSteering, route bool) error {
	reason := l.unsteerable(want)
	switch {
	case reason != nil: // shared, whatever the socket allows
	case !sock.ReusePort():
		reason = errors.New("the socket passed to baton lacks SO_REUSEPORT (set ReusePort=yes in the .socket unit)")
	case !l.spec.IsPacket() && !sock.PlainTCP():
		reason = errors.New("the socket passed to baton is not plain TCP (MPTCP?)")
	default:
		reason = l.steerGroup(sock, passed, route)
		if reason == nil {
			// A sibling proves baton may join the socket's group (same
			// user); it gets no traffic: it never enters the program's slots.
			sib, err := handoff.JoinGroup(l.bound)
			if err == nil {
				_ = sib.Close() // empty: nothing was ever routed to it
				return nil
			}
			// The program stays attached, but with nothing in its slots it
			// leaves the choice to the kernel's hash, and sock is the
			// group's only socket baton can use: shared mode.
			_ = l.steer.Close() // the group keeps the program
			l.steer, l.next = nil, nil
			reason = fmt.Errorf("cannot add sockets to the passed socket's group (was it made by another user?): %w", err)
		}
	}
	if err := refuseShared(want, l.spec, reason); err != nil {
		return err
	}
	if passed.ok() && !route {
		// Handed over by a baton that steers this listener: the socket is
		// unrouted and would stay so in shared mode.
		return fmt.Errorf("%s: the previous baton steers this listener, and this one cannot: %w", l.spec, reason)
	}
	l.useShared(sock, reason)
	return nil
}

// steerGroup loads the program and attaches it to sock's reuseport group,
// or takes over the program and maps passed along with sock (already
// attached to its group). sock becomes the first instance's socket of the
// first generation; routing waits for that generation (see routeOnly).
// Errors that mean steering is impossible here wrap
// handoff.ErrSteeringUnsupported.
func (l *listener) steerGroup(sock *handoff.Socket, passed passedSteering, route bool) error {
	var st *handoff.WeightedSteering
	var err error
	why := "kernel steering available"
	if passed.ok() {
		why = "kernel steering, with the program and maps passed along"
		if !route {
			why = "kernel steering taken over from the previous baton"
		}
		st, err = handoff.WeightedSteeringFromFDs(passed.fds)
		if err != nil {
			return fmt.Errorf("%s: %w: %w", l.spec, handoff.ErrSteeringUnsupported, err)
		}
	} else {
		if st, err = handoff.NewWeightedSteering(); err != nil {
			return err
		}
		if err := st.Attach(sock.FD()); err != nil {
			_ = st.Close()
			return fmt.Errorf("%s: %w: %w", l.spec, handoff.ErrSteeringUnsupported, err)
		}
	}
	if !st.Migrates() {
		why += " (without select-or-migrate: kernel older than 5.14)"
	}
	l.mode, l.reason, l.steer, l.next, l.bound = ModeSteered, why, st, sock, sock.Spec()
	return nil
}
