package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is one listening socket baton holds. Its fd is close-on-exec and
// non-blocking; baton never accepts on it. The fd stays valid until Close.
// A Socket is owned by the supervisor's event loop and is not safe for
// concurrent Close.
type Socket struct {
	spec ListenerSpec // spec.Address is the bound address (actual port when 0 was asked)
	fd   int
	// shutdownOnClose: Close stops the socket listening for every holder,
	// not only closes baton's fd (see ShutdownOnClose).
	shutdownOnClose bool
	// For unix sockets created by baton: the socket file's identity, so that
	// Close removes our file and never one that replaced it.
	unixDev, unixIno uint64
}

// Listen creates the socket for spec: TCP without MPTCP and with SO_REUSEADDR,
// and with SO_REUSEPORT when reusePort is set (so that sibling sockets can
// join its group, see JoinGroup). A stale unix socket file (nobody listening)
// is replaced; a live one or any other file at the path is an error.
func Listen(spec ListenerSpec, reusePort bool) (*Socket, error) {
	if spec.IsUnix() && reusePort {
		return nil, fmt.Errorf("%s: unix sockets have no SO_REUSEPORT", spec)
	}
	if reusePort && !spec.IsUnix() {
		// Joining a reuseport group is silent: make sure nobody else holds
		// the address first, or we would share a foreign process's group.
		if err := probeFree(spec); err != nil {
			return nil, err
		}
	}
	return listen(spec, reusePort)
}

// JoinGroup creates another socket in the SO_REUSEPORT group already bound
// to spec.Address (a bound address, with its actual port), as Listen with
// reusePort made it.
func JoinGroup(spec ListenerSpec) (*Socket, error) {
	return listen(spec, true)
}

// FD returns the socket's file descriptor. It is valid until Close.
func (s *Socket) FD() int { return s.fd }

// Spec returns the listener spec with the address the socket is bound to.
func (s *Socket) Spec() ListenerSpec { return s.spec }

// Addr returns the bound address, e.g. "127.0.0.1:41235" or a unix path.
func (s *Socket) Addr() string { return s.spec.Address }

// QueueLen reports what waits in the socket: connections in a TCP listener's
// accept queue, or bytes in a UDP socket's receive queue.
func (s *Socket) QueueLen() (int, error) { return QueueLen(s.fd, s.spec.IsPacket()) }

// Close closes baton's fd. The socket itself lives on while a child holds a
// copy. A unix socket file that baton created is removed when it is still
// the same file.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	if s.shutdownOnClose {
		_ = unix.Shutdown(s.fd, unix.SHUT_RDWR) // ENOTCONN for a socket that is not listening: nothing to stop
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if s.spec.IsUnix() && s.unixIno != 0 {
		var st unix.Stat_t
		if unix.Stat(s.spec.Address, &st) == nil && st.Dev == s.unixDev && st.Ino == s.unixIno {
			_ = os.Remove(s.spec.Address) // best effort: the file is only a name for a closed socket
		}
	}
	if err != nil {
		return fmt.Errorf("%s: close: %w", s.spec, err)
	}
	return nil
}

// ShutdownOnClose makes Close shut the socket down first (shutdown(2)), so
// that it stops listening for every process that still holds a copy,
// instead of staying in its SO_REUSEPORT group with nobody accepting. For a
// socket whose other holders are leftovers, never a service manager that
// still needs it.
func (s *Socket) ShutdownOnClose() { s.shutdownOnClose = true }

// KeepFile makes Close leave a unix socket's file in place: the socket was
// handed to a successor that goes on listening on it.
func (s *Socket) KeepFile() { s.unixIno = 0 }

// NonBlocking reports whether the socket's open file description has
// O_NONBLOCK set. Children share that description, so this is what they see.
func (s *Socket) NonBlocking() (bool, error) {
	fl, err := unix.FcntlInt(uintptr(s.fd), unix.F_GETFL, 0)
	if err != nil {
		return false, fmt.Errorf("%s: F_GETFL: %w", s.spec, err)
	}
	return fl&unix.O_NONBLOCK != 0, nil
}

func listenConfig(reusePort bool) *net.ListenConfig {
	lc := &net.ListenConfig{
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if strings.HasPrefix(network, "unix") {
					return
				}
				// TCP only: on UDP, SO_REUSEADDR would let another user's
				// socket share the port.
				if strings.HasPrefix(network, "tcp") {
					if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
						serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
						return
					}
				}
				if reusePort {
					if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
						serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	// Go makes TCP listeners MPTCP where the kernel has it; an MPTCP socket
	// cannot join a BPF socket array, and plain TCP is what clients expect.
	lc.SetMultipathTCP(false)
	return lc
}

func listen(spec ListenerSpec, reusePort bool) (*Socket, error) {
	lc := listenConfig(reusePort)
	ctx := context.Background()
	var (
		rc   syscall.RawConn
		addr net.Addr
		done func()
	)
	switch {
	case spec.IsPacket():
		pc, err := lc.ListenPacket(ctx, spec.Network, spec.Address)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		uc := pc.(*net.UDPConn)
		rc, _ = uc.SyscallConn()
		addr = uc.LocalAddr()
		done = func() { _ = uc.Close() } // our dup keeps the socket
	case spec.IsUnix():
		if err := removeStaleUnix(spec); err != nil {
			return nil, err
		}
		l, err := lc.Listen(ctx, "unix", spec.Address)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		ul := l.(*net.UnixListener)
		ul.SetUnlinkOnClose(false) // the file belongs to our dup now
		rc, _ = ul.SyscallConn()
		addr = ul.Addr()
		done = func() { _ = ul.Close() }
	default:
		l, err := lc.Listen(ctx, spec.Network, spec.Address)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		tl := l.(*net.TCPListener)
		rc, _ = tl.SyscallConn()
		addr = tl.Addr()
		done = func() { _ = tl.Close() }
	}
	defer done()

	// Keep a close-on-exec duplicate that nothing in Go's runtime knows
	// about: it shares the open file description (and its O_NONBLOCK).
	fd := -1
	var derr error
	if err := rc.Control(func(raw uintptr) {
		fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", spec, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("%s: dup: %w", spec, derr)
	}

	s := &Socket{spec: spec, fd: fd}
	if spec.IsUnix() {
		if err := s.finishUnix(); err != nil {
			_ = s.Close()
			return nil, err
		}
	} else {
		s.spec.Address = addr.String()
	}
	return s, nil
}

func (s *Socket) finishUnix() error {
	if strings.HasPrefix(s.spec.Address, "@") {
		return nil // abstract: no file
	}
	if s.spec.Mode != 0 {
		if err := os.Chmod(s.spec.Address, s.spec.Mode.Perm()); err != nil {
			return fmt.Errorf("%s: set mode %04o: %w", s.spec, s.spec.Mode.Perm(), err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(s.spec.Address, &st); err != nil {
		return fmt.Errorf("%s: stat: %w", s.spec, err)
	}
	s.unixDev, s.unixIno = st.Dev, st.Ino
	return nil
}

// removeStaleUnix removes a socket file nobody listens on any more. A live
// socket or a file of another type is left alone and reported.
func removeStaleUnix(spec ListenerSpec) error {
	if strings.HasPrefix(spec.Address, "@") {
		return nil
	}
	fi, err := os.Lstat(spec.Address)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", spec, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s: %s exists and is not a socket; refusing to replace it", spec, spec.Address)
	}
	c, err := net.Dial("unix", spec.Address)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("%s: address already in use: another process listens on %s", spec, spec.Address)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: check for a stale socket file: %w", spec, err)
	}
	if err := os.Remove(spec.Address); err != nil {
		return fmt.Errorf("%s: remove stale socket file: %w", spec, err)
	}
	return nil
}

// probeFree binds the address once without SO_REUSEPORT and lets it go, so
// that an address held by another process is an error instead of a silent
// join of that process's reuseport group. Port 0 is always free.
func probeFree(spec ListenerSpec) error {
	if _, port, err := net.SplitHostPort(spec.Address); err == nil && port == "0" {
		return nil
	}
	lc := listenConfig(false)
	if spec.IsPacket() {
		pc, err := lc.ListenPacket(context.Background(), spec.Network, spec.Address)
		if err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
		return pc.Close()
	}
	l, err := lc.Listen(context.Background(), spec.Network, spec.Address)
	if err != nil {
		return fmt.Errorf("%s: %w", spec, err)
	}
	return l.Close()
}
