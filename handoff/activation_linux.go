package handoff

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Inherited is one socket passed to baton itself by socket activation (a
// systemd .socket unit, or systemd's fd store after a restart).
type Inherited struct {
	FD   int
	Name string // its LISTEN_FDNAMES entry; "" when none was given
}

// TakeActivated returns the sockets passed to this process (LISTEN_FDS
// from fd 3, meant for us when LISTEN_PID is our pid), marks them
// close-on-exec and removes LISTEN_* from the environment, as
// sd_listen_fds(3) does with unset_environment. No sockets is not an error.
func TakeActivated() ([]Inherited, error) {
	defer func() {
		for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID"} {
			_ = os.Unsetenv(k) // cannot fail for a valid name
		}
	}()
	fds := os.Getenv("LISTEN_FDS")
	if fds == "" || os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 4096 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count of fds", fds)
	}
	var names []string
	if v := os.Getenv("LISTEN_FDNAMES"); v != "" {
		names = strings.Split(v, ":")
	}
	out := make([]Inherited, n)
	for i := range out {
		fd := 3 + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fmt.Errorf("socket activation: fd %d: %w", fd, err)
		}
		out[i].FD = fd
		if i < len(names) {
			out[i].Name = names[i]
		}
	}
	return out, nil
}

// Adopt makes an inherited socket the socket of spec, after checking that
// it is what spec describes: the same kind of socket, listening (for
// streams), on the configured address (any port when spec's port is 0).
// baton then owns that fd like one it created itself, but never removes a
// unix socket's file, which belongs to whoever made it.
func Adopt(in Inherited, spec ListenerSpec) (*Socket, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: the socket passed as fd %d (%q) does not fit: %s", spec, in.FD, in.Name, fmt.Sprintf(format, args...))
	}
	typ, err := unix.GetsockoptInt(in.FD, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fail("not a socket (%v)", err)
	}
	wantType := unix.SOCK_STREAM
	if spec.IsPacket() {
		wantType = unix.SOCK_DGRAM
	}
	if typ != wantType {
		return nil, fail("it is a %s socket, the listener wants %s", sockType(typ), sockType(wantType))
	}
	if typ == unix.SOCK_STREAM {
		if on, err := unix.GetsockoptInt(in.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
			return nil, fail("it is not listening")
		}
	}
	sa, err := unix.Getsockname(in.FD)
	if err != nil {
		return nil, fail("getsockname: %v", err)
	}
	bound, err := checkAddress(spec, sa)
	if err != nil {
		return nil, fail("%v", err)
	}
	// baton's sockets are non-blocking (see the package doc); a manager may
	// pass them blocking (systemd's default), and so does a parent that
	// handed them over through os/exec.
	if err := unix.SetNonblock(in.FD, true); err != nil {
		return nil, fail("set O_NONBLOCK: %v", err)
	}
	s := &Socket{spec: spec, fd: in.FD}
	s.spec.Address = bound
	// Sockets baton adds to this one's group must have its family and
	// IPV6_V6ONLY, or they form a group of their own: "tcp" with
	// "0.0.0.0:80" would be a dual-stack IPv6 socket.
	if !spec.IsUnix() {
		s.spec.Network = ipNetwork(in.FD, sa, spec.IsPacket())
	}
	return s, nil
}

// ReusePort reports whether the socket has SO_REUSEPORT, which kernel
// steering needs to add per-generation sockets to its group.
func (s *Socket) ReusePort() bool {
	on, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	return err == nil && on == 1
}

// PlainTCP reports whether a stream socket is TCP and not MPTCP, which the
// kernel program cannot steer.
func (s *Socket) PlainTCP() bool {
	p, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	return err == nil && p == unix.IPPROTO_TCP
}

// ipNetwork is the Go network name that makes sockets like fd: "tcp4" for
// IPv4, "tcp6" for IPv6 only, "tcp" for dual-stack IPv6 (udp likewise).
func ipNetwork(fd int, sa unix.Sockaddr, packet bool) string {
	base := "tcp"
	if packet {
		base = "udp"
	}
	if _, ok := sa.(*unix.SockaddrInet4); ok {
		return base + "4"
	}
	if only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err == nil && only == 1 {
		return base + "6"
	}
	return base
}

func sockType(t int) string {
	switch t {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "datagram"
	}
	return "type " + strconv.Itoa(t)
}

// checkAddress compares the socket's address with spec's and returns the
// bound address in spec's notation.
func checkAddress(spec ListenerSpec, sa unix.Sockaddr) (string, error) {
	if spec.IsUnix() {
		u, ok := sa.(*unix.SockaddrUnix)
		if !ok {
			return "", errors.New("it is not a unix socket")
		}
		name := u.Name
		if strings.HasPrefix(name, "\x00") {
			name = "@" + name[1:]
		}
		if name != spec.Address {
			return "", fmt.Errorf("it is bound to %q, not %q", name, spec.Address)
		}
		return name, nil
	}
	var got netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if strings.HasSuffix(spec.Network, "6") {
			return "", errors.New("it is IPv4, the listener wants IPv6")
		}
		got = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		if strings.HasSuffix(spec.Network, "4") {
			return "", errors.New("it is IPv6, the listener wants IPv4")
		}
		got = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	default:
		return "", errors.New("it is not an IP socket")
	}
	host, port, err := net.SplitHostPort(spec.Address)
	if err != nil {
		return "", err
	}
	if port != "0" && port != strconv.Itoa(int(got.Port())) {
		return "", fmt.Errorf("it is bound to port %d, not %s", got.Port(), port)
	}
	if host != "" {
		want, err := netip.ParseAddr(host)
		if err != nil {
			return "", err
		}
		if want.Unmap() != got.Addr().Unmap() {
			return "", fmt.Errorf("it is bound to %s, not %s", got.Addr(), want)
		}
	} else if !got.Addr().IsUnspecified() {
		return "", fmt.Errorf("it is bound to %s, the listener wants all addresses", got.Addr())
	}
	return netip.AddrPortFrom(got.Addr().Unmap(), got.Port()).String(), nil
}
