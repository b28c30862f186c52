package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const steerWait = 5 * time.Second // bound on every wait in these tests

// testSocket is a raw socket fd closed at the end of the test unless the test
// closed it first (closing an fd number twice could close someone else's fd).
type testSocket struct {
	fd     int
	closed bool
}

func (s *testSocket) close() {
	if !s.closed {
		s.closed = true
		_ = unix.Close(s.fd) // test teardown: nothing to do about a failure
	}
}

func newSteering(t *testing.T) *Steering {
	t.Helper()
	s, err := NewSteering()
	if errors.Is(err, ErrSteeringUnsupported) {
		t.Skipf("kernel steering unavailable: %v", err)
	}
	if err != nil {
		t.Fatalf("NewSteering: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reuseportSocket makes an IPv4 socket of the given type and protocol with
// SO_REUSEADDR and SO_REUSEPORT, bound to 127.0.0.1:port, and calls listen if
// listen is true. It returns the socket and the bound port.
func reuseportSocket(t *testing.T, typ, proto, port int, listen bool) (*testSocket, int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	s := &testSocket{fd: fd}
	t.Cleanup(s.close)
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			t.Fatalf("setsockopt %d: %v", opt, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:%d: %v", port, err)
	}
	if listen {
		if err := unix.Listen(fd, 1024); err != nil {
			t.Fatalf("listen: %v", err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return s, sa.(*unix.SockaddrInet4).Port
}

// steeredGroup returns two listening TCP sockets on one port with the
// program attached to their group.
func steeredGroup(t *testing.T, s *Steering) (a, b *testSocket, port int) {
	t.Helper()
	a, port = reuseportSocket(t, unix.SOCK_STREAM, 0, 0, true)
	b, _ = reuseportSocket(t, unix.SOCK_STREAM, 0, port, true)
	if err := s.Attach(a.fd); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	return a, b, port
}

// dial opens n TCP connections to 127.0.0.1:port and returns them by local address.
func dial(t *testing.T, port, n int) map[string]net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: steerWait}
	d.SetMultipathTCP(false)
	conns := make(map[string]net.Conn, n)
	for range n {
		c, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("dial %d of %d: %v", len(conns)+1, n, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns[c.LocalAddr().String()] = c
	}
	return conns
}

func queueLen(t *testing.T, s *testSocket) int {
	t.Helper()
	n, err := QueueLen(s.fd, false)
	if err != nil {
		t.Fatalf("QueueLen: %v", err)
	}
	return n
}

// waitQueues polls until the accept queues of socks hold want connections in
// total (the server side of a loopback handshake may finish just after the
// client's connect returns), and returns the length of each queue.
func waitQueues(t *testing.T, want int, socks ...*testSocket) []int {
	t.Helper()
	deadline := time.Now().Add(steerWait)
	for {
		lens, total := make([]int, len(socks)), 0
		for i, s := range socks {
			lens[i] = queueLen(t, s)
			total += lens[i]
		}
		if total == want {
			return lens
		}
		if total > want || time.Now().After(deadline) {
			t.Fatalf("accept queues hold %v, want %d in total", lens, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// acceptAll accepts exactly n connections from the listener s and returns the
// server-side fds by peer address. The queue must then be empty.
func acceptAll(t *testing.T, s *testSocket, n int) map[string]int {
	t.Helper()
	fds := make(map[string]int, n)
	for range n {
		fd, sa, err := unix.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatalf("accept %d of %d: %v", len(fds)+1, n, err)
		}
		t.Cleanup(func() { _ = unix.Close(fd) })
		in4 := sa.(*unix.SockaddrInet4)
		fds[net.JoinHostPort(net.IP(in4.Addr[:]).String(), strconv.Itoa(in4.Port))] = fd
	}
	if fd, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC); err == nil {
		_ = unix.Close(fd)
		t.Fatalf("accepted more than %d connections", n)
	} else if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("accept on an empty queue: %v", err)
	}
	return fds
}

// sameConns checks that the accepted connections are exactly the dialled ones.
func sameConns(t *testing.T, accepted map[string]int, dialled map[string]net.Conn) {
	t.Helper()
	for addr := range dialled {
		if _, ok := accepted[addr]; !ok {
			t.Fatalf("connection from %s was not accepted on the selected socket", addr)
		}
	}
}

func TestSteeringSelectsSlot0(t *testing.T) {
	s := newSteering(t)
	a, b, port := steeredGroup(t, s)

	for _, step := range []struct {
		name      string
		to, other *testSocket
	}{{"A", a, b}, {"B", b, a}} {
		if err := s.Select(step.to.fd); err != nil {
			t.Fatalf("Select(%s): %v", step.name, err)
		}
		conns := dial(t, port, 200)
		lens := waitQueues(t, 200, step.to, step.other)
		if lens[0] != 200 || lens[1] != 0 {
			t.Fatalf("after Select(%s): queues %v, want [200 0]", step.name, lens)
		}
		sameConns(t, acceptAll(t, step.to, 200), conns)
		acceptAll(t, step.other, 0)
	}

	// Selecting the socket already in slot 0 changes nothing.
	if err := s.Select(b.fd); err != nil {
		t.Fatalf("Select(B) again: %v", err)
	}
	// The group keeps the program and the map after Close.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	conns := dial(t, port, 20)
	if lens := waitQueues(t, 20, b, a); lens[0] != 20 {
		t.Fatalf("after Close: queues %v, want [20 0]", lens)
	}
	sameConns(t, acceptAll(t, b, 20), conns)
}

func TestSteeringEmptyMapFallsBackToHash(t *testing.T) {
	s := newSteering(t)
	a, b, port := steeredGroup(t, s)

	conns := dial(t, port, 50)
	lens := waitQueues(t, 50, a, b)
	t.Logf("hash spread with an empty map: %v", lens)
	accepted := acceptAll(t, a, lens[0])
	for addr, fd := range acceptAll(t, b, lens[1]) {
		accepted[addr] = fd
	}
	sameConns(t, accepted, conns)
}

func TestSteeringMigratesQueuedConnections(t *testing.T) {
	s := newSteering(t)
	if !s.Migrates() {
		t.Skip("kernel cannot migrate queued connections (needs Linux 5.14)")
	}
	a, b, port := steeredGroup(t, s)

	if err := s.Select(a.fd); err != nil {
		t.Fatalf("Select(A): %v", err)
	}
	conns := dial(t, port, 50)
	waitQueues(t, 50, a)
	if err := s.Select(b.fd); err != nil {
		t.Fatalf("Select(B): %v", err)
	}
	a.close()
	waitQueues(t, 50, b)
	accepted := acceptAll(t, b, 50)
	sameConns(t, accepted, conns)

	for addr, c := range conns {
		fd := accepted[addr]
		if _, err := unix.Write(fd, []byte{'s'}); err != nil {
			t.Fatalf("server write to %s: %v", addr, err)
		}
		buf := make([]byte, 1)
		_ = c.SetDeadline(time.Now().Add(steerWait)) // a plain net.Conn: cannot fail
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("client %s read after migration: %v", addr, err)
		}
		if _, err := c.Write([]byte{'c'}); err != nil {
			t.Fatalf("client %s write after migration: %v", addr, err)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int(steerWait.Milliseconds())); n != 1 || err != nil {
			t.Fatalf("server poll %s: n=%d err=%v", addr, n, err)
		}
		if n, err := unix.Read(fd, buf); n != 1 || err != nil || buf[0] != 'c' {
			t.Fatalf("server read from %s: n=%d err=%v byte=%q", addr, n, err, buf[0])
		}
	}
}

func TestSelectRejectsUnsteerableSockets(t *testing.T) {
	s := newSteering(t)
	_, _, port := steeredGroup(t, s)

	mptcp := func(t *testing.T) *testSocket {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
		if err != nil {
			t.Skipf("kernel refuses MPTCP sockets: %v", err)
		}
		_ = unix.Close(fd)
		m, _ := reuseportSocket(t, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, port, true)
		return m
	}
	notListening := func(t *testing.T) *testSocket {
		fd, _ := reuseportSocket(t, unix.SOCK_STREAM, 0, 0, false)
		return fd
	}
	noReuseport := func(t *testing.T) *testSocket {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("socket: %v", err)
		}
		sock := &testSocket{fd: fd}
		t.Cleanup(sock.close)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatalf("bind: %v", err)
		}
		if err := unix.Listen(fd, 16); err != nil {
			t.Fatalf("listen: %v", err)
		}
		return sock
	}
	for _, tc := range []struct {
		name   string
		socket func(*testing.T) *testSocket
		want   error
	}{
		{"MPTCP listener in the group", mptcp, unix.Errno(524)},
		{"bound, not listening", notListening, unix.EINVAL},
		{"listening without SO_REUSEPORT", noReuseport, unix.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := tc.socket(t)
			err := s.Select(sock.fd)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Select: %v, want an error wrapping %v", err, tc.want)
			}
			if errors.Is(err, ErrSteeringUnsupported) {
				t.Fatalf("Select: %v: a bad socket is not missing kernel support", err)
			}
			t.Log(err)
		})
	}
}

func TestQueueLen(t *testing.T) {
	t.Run("UDP socket with datagrams waiting", func(t *testing.T) {
		recv, port := reuseportSocket(t, unix.SOCK_DGRAM, 0, 0, false)
		if n, err := QueueLen(recv.fd, true); n != 0 || err != nil {
			t.Fatalf("QueueLen of an empty UDP socket: %d, %v", n, err)
		}
		c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("dial udp: %v", err)
		}
		defer c.Close()
		for _, size := range []int{10, 20, 30} {
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatalf("send %d bytes: %v", size, err)
			}
		}
		fds := []unix.PollFd{{Fd: int32(recv.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int(steerWait.Milliseconds())); n != 1 || err != nil {
			t.Fatalf("poll: n=%d err=%v", n, err)
		}
		n, err := QueueLen(recv.fd, true)
		if err != nil || n <= 0 {
			t.Fatalf("QueueLen: %d, %v; want > 0", n, err)
		}
		t.Logf("QueueLen with datagrams of 10, 20 and 30 bytes waiting: %d (the next datagram's size)", n)
	})
	t.Run("TCP socket not listening", func(t *testing.T) {
		sock, _ := reuseportSocket(t, unix.SOCK_STREAM, 0, 0, false)
		if n, err := QueueLen(sock.fd, false); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("QueueLen: %d, %v; want an error wrapping EINVAL", n, err)
		}
	})
}

func TestSteeringCloseReleasesDescriptors(t *testing.T) {
	count := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatalf("read /proc/self/fd: %v", err)
		}
		return len(entries)
	}
	before := count()
	s, err := NewSteering()
	if errors.Is(err, ErrSteeringUnsupported) {
		t.Skipf("kernel steering unavailable: %v", err)
	}
	if err != nil {
		t.Fatalf("NewSteering: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if after := count(); after != before {
		t.Fatalf("open descriptors: %d before NewSteering, %d after Close", before, after)
	}
}
