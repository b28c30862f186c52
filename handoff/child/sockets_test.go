package child

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketsByName: a real process started with five fds (a TCP
// listener, a unix listener, a UDP socket, a pipe and an unnamed TCP
// listener) finds each by its LISTEN_FDNAMES name, serves on it, and gets a
// clear error for a name or kind that was not passed.
func TestSocketsByName(t *testing.T) {
	dir := t.TempDir()
	tcp := listen(t, "tcp", "127.0.0.1:0")
	unixLn := listen(t, "unix", filepath.Join(dir, "admin.sock"))
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	unnamed := listen(t, "tcp", "127.0.0.1:0")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	notify := fakeNotify(t)

	files := []*os.File{fileOf(t, tcp), fileOf(t, unixLn), fileOf(t, udp), pr, fileOf(t, unnamed)}
	h := startHelper(t, "sockets", []string{"LISTEN_FDS=5", "LISTEN_FDNAMES=http:admin:dns:pipe"}, files...)
	for _, f := range files {
		_ = f.Close() // the helper holds them now
	}

	if got := receive(t, notify); got != "READY=1" {
		t.Fatalf("notify message %q, want READY=1", got)
	}
	for _, c := range []struct{ network, addr, want string }{
		{"tcp", tcp.Addr().String(), "http"},
		{"unix", unixLn.Addr().String(), "admin"},
		{"tcp", unnamed.Addr().String(), "LISTEN_FD_7"},
	} {
		if got := roundTrip(t, c.network, c.addr); got != c.want {
			t.Errorf("%s %s answered %q, want %q", c.network, c.addr, got, c.want)
		}
	}
	if got := roundTrip(t, "udp", udp.LocalAddr().String()); got != "dns" {
		t.Errorf("udp answered %q, want dns", got)
	}
	if _, err := pw.WriteString("through the pipe\n"); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()

	got := h.rest(t)
	if err := h.wait(); err != nil {
		t.Fatalf("helper: %v; stderr: %s", err, h.stderr.String())
	}
	want := []string{
		"environment: LISTEN_FDS= LISTEN_FDNAMES= LISTEN_PID=",
		"socket http 3 tcp listener",
		"socket admin 4 unix listener",
		"socket dns 5 udp datagram socket",
		"socket pipe 6 other",
		"socket LISTEN_FD_7 7 tcp listener",
		"close-on-exec: true",
		"same listener twice: true",
		"pipe: through the pipe",
		`missing name: ErrNoSocket true: child: listener "metrics": no such socket passed; passed: http (fd 3, tcp listener), admin (fd 4, unix listener), dns (fd 5, udp datagram socket), pipe (fd 6, other), LISTEN_FD_7 (fd 7, tcp listener)`,
		`wrong kind: ErrNoSocket true`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("helper said:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSocketsNotOurs: with LISTEN_PID naming another process (a
// grandchild that inherited the environment), nothing is taken, the
// variables are removed all the same, and asking by name says why.
func TestSocketsNotOurs(t *testing.T) {
	tcp := listen(t, "tcp", "127.0.0.1:0")
	h := startHelper(t, "sockets", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "CHILD_TEST_LISTEN_PID=1"}, fileOf(t, tcp))
	got := h.rest(t)
	if err := h.wait(); err != nil {
		t.Fatalf("helper: %v; stderr: %s", err, h.stderr.String())
	}
	want := []string{
		"environment: LISTEN_FDS= LISTEN_FDNAMES= LISTEN_PID=",
		`no sockets: ErrNoSocket true: child: listener "http": no such socket passed: none at all (not started by socket activation with LISTEN_FDS, or LISTEN_PID is not this process)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("helper said:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// socketsHelper reports what it was passed and serves one request on each
// socket. With CHILD_TEST_LISTEN_PID it overrides the shim's LISTEN_PID.
func socketsHelper() error {
	if pid := os.Getenv("CHILD_TEST_LISTEN_PID"); pid != "" {
		_ = os.Setenv("LISTEN_PID", pid) // cannot fail for a valid name
	}
	socks, err := Sockets()
	if err != nil {
		return err
	}
	fmt.Printf("environment: LISTEN_FDS=%s LISTEN_FDNAMES=%s LISTEN_PID=%s\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_PID"))
	if len(socks) == 0 {
		_, err := Listener("http")
		fmt.Printf("no sockets: ErrNoSocket %v: %v\n", errors.Is(err, ErrNoSocket), err)
		return nil
	}

	for _, s := range socks {
		fmt.Printf("socket %s %d %s\n", s.Name, s.FD, s.kind())
	}

	if err := Ready(); err != nil {
		return err
	}
	cloexec := true
	for _, name := range []string{"http", "admin", "LISTEN_FD_7"} {
		ln, err := Listener(name)
		if err != nil {
			return err
		}
		cloexec = cloexec && isCloseOnExec(ln.(syscall.Conn))
		if err := answerOne(ln, name); err != nil {
			return err
		}
	}
	pc, err := PacketConn("dns")
	if err != nil {
		return err
	}
	cloexec = cloexec && isCloseOnExec(pc.(syscall.Conn))
	buf := make([]byte, 64)
	_, from, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	if _, err := pc.WriteTo([]byte("dns"), from); err != nil {
		return err
	}
	fmt.Printf("close-on-exec: %v\n", cloexec)
	again, _ := Listener("http")
	first, _ := Listeners()
	fmt.Printf("same listener twice: %v\n", again == first["http"][0])
	data, err := io.ReadAll(socks[3].File)
	if err != nil {
		return err
	}
	fmt.Printf("pipe: %s", data)
	_, err = Listener("metrics")
	fmt.Printf("missing name: ErrNoSocket %v: %v\n", errors.Is(err, ErrNoSocket), err)
	_, err = Listener("dns")
	fmt.Printf("wrong kind: ErrNoSocket %v\n", errors.Is(err, ErrNoSocket))
	return nil
}

// answerOne accepts one connection on ln, reads the client's byte and
// answers name.
func answerOne(ln net.Listener, name string) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return err
	}
	_, err = io.WriteString(c, name)
	return err
}

func isCloseOnExec(c syscall.Conn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) }); err != nil || ferr != nil {
		return false
	}
	return flags&unix.FD_CLOEXEC != 0
}

// roundTrip sends a byte to addr and returns the answer, within 5 s.
func roundTrip(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("?")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("%s %s: %v", network, addr, err)
	}
	return string(buf[:n])
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// fileOf is a duplicate of a socket's fd, for ExtraFiles.
func fileOf(t *testing.T, s any) *os.File {
	t.Helper()
	f, err := s.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
