package handoff

import (
	"errors"
	"net"
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

func TestQueueLen(t *testing.T) {
	t.Run("TCP listener with connections waiting", func(t *testing.T) {
		l, port := reuseportSocket(t, unix.SOCK_STREAM, 0, 0, true)
		if n := queueLen(t, l); n != 0 {
			t.Fatalf("QueueLen of a fresh listener: %d", n)
		}
		d := net.Dialer{Timeout: steerWait}
		d.SetMultipathTCP(false)
		for range 5 {
			c, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
		}
		waitQueues(t, 5, l)
		for range 2 {
			fd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			_ = unix.Close(fd) // only taken off the queue
		}
		if n := queueLen(t, l); n != 3 {
			t.Fatalf("QueueLen after accepting 2 of 5: %d, want 3", n)
		}
		acceptAll(t, l, 3)
		if n := queueLen(t, l); n != 0 {
			t.Fatalf("QueueLen after accepting all: %d, want 0", n)
		}
	})
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
