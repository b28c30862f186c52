//go:build linux

package handoff

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustListen(t *testing.T, spec ListenerSpec, reuse bool) *Socket {
	t.Helper()
	s, err := Listen(spec, reuse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestListenTCPIsPlainTCPNonBlockingCloexec(t *testing.T) {
	for _, spec := range []ListenerSpec{
		{Name: "v4", Network: "tcp", Address: "127.0.0.1:0"},
		{Name: "v6", Network: "tcp6", Address: "[::1]:0"},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			s := mustListen(t, spec, true)
			proto, err := unix.GetsockoptInt(s.FD(), unix.SOL_SOCKET, unix.SO_PROTOCOL)
			if err != nil || proto != unix.IPPROTO_TCP {
				t.Fatalf("SO_PROTOCOL = %d, %v; want IPPROTO_TCP (MPTCP must be off)", proto, err)
			}
			for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
				if v, err := unix.GetsockoptInt(s.FD(), unix.SOL_SOCKET, opt); err != nil || v != 1 {
					t.Errorf("sockopt %d = %d, %v; want 1", opt, v, err)
				}
			}
			if nb, err := s.NonBlocking(); err != nil || !nb {
				t.Errorf("NonBlocking = %v, %v", nb, err)
			}
			fdfl, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_GETFD, 0)
			if fdfl&unix.FD_CLOEXEC == 0 {
				t.Error("socket fd is not close-on-exec")
			}
			if strings.HasSuffix(s.Addr(), ":0") {
				t.Errorf("Addr %q: want the bound port", s.Addr())
			}
			// A sibling joins the same port.
			sib, err := JoinGroup(s.Spec())
			if err != nil {
				t.Fatal(err)
			}
			defer sib.Close()
			if sib.Addr() != s.Addr() {
				t.Errorf("sibling on %s, want %s", sib.Addr(), s.Addr())
			}
			c, err := net.DialTimeout("tcp", s.Addr(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

func TestListenRefusesAddressInUse(t *testing.T) {
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, reuse := range []bool{false, true} {
		_, err := Listen(ListenerSpec{Name: "x", Network: "tcp", Address: other.Addr().String()}, reuse)
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("reuse=%v: err = %v, want EADDRINUSE", reuse, err)
		}
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")

	t.Run("mode and removal", func(t *testing.T) {
		s := mustListen(t, ListenerSpec{Name: "u", Network: "unix", Address: path, Mode: 0o600}, false)
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket file mode = %v, %v; want 0600", fi.Mode(), err)
		}
		s.Close()
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("socket file still there after Close: %v", err)
		}
	})
	t.Run("stale file replaced", func(t *testing.T) {
		stale, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		stale.(*net.UnixListener).SetUnlinkOnClose(false)
		stale.Close() // leaves the file, nobody listens
		mustListen(t, ListenerSpec{Name: "u", Network: "unix", Address: path}, false)
	})
	t.Run("live socket refused", func(t *testing.T) {
		live := filepath.Join(dir, "live.sock")
		l, err := net.Listen("unix", live)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err := Listen(ListenerSpec{Name: "u", Network: "unix", Address: live}, false); err == nil ||
			!strings.Contains(err.Error(), "in use") {
			t.Errorf("err = %v, want address in use", err)
		}
	})
	t.Run("regular file refused", func(t *testing.T) {
		file := filepath.Join(dir, "file")
		os.WriteFile(file, []byte("keep me"), 0o644)
		if _, err := Listen(ListenerSpec{Name: "u", Network: "unix", Address: file}, false); err == nil {
			t.Error("replaced a regular file")
		}
		if b, _ := os.ReadFile(file); string(b) != "keep me" {
			t.Error("regular file was touched")
		}
	})
	t.Run("no reuseport for unix", func(t *testing.T) {
		if _, err := Listen(ListenerSpec{Name: "u", Network: "unix", Address: path}, true); err == nil {
			t.Error("unix socket with reusePort accepted")
		}
	})
}

func TestListenUDP(t *testing.T) {
	s := mustListen(t, ListenerSpec{Name: "dns", Network: "udp", Address: "127.0.0.1:0"}, true)
	typ, _ := unix.GetsockoptInt(s.FD(), unix.SOL_SOCKET, unix.SO_TYPE)
	if typ != unix.SOCK_DGRAM {
		t.Errorf("SO_TYPE = %d, want SOCK_DGRAM", typ)
	}
}

// TestSpawnHandsOverExactlyTheListeners: the child sees fds 0-2 and its
// listeners, with LISTEN_PID its own pid, and the held sockets stay
// non-blocking.
func TestSpawnHandsOverExactlyTheListeners(t *testing.T) {
	a := mustListen(t, ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}, false)
	b := mustListen(t, ListenerSpec{Name: "admin", Network: "unix", Address: filepath.Join(t.TempDir(), "a.sock")}, false)
	// A stray fd without close-on-exec, as a careless parent might leave:
	// CloseOnExecInherited (run by TestMain, as by baton at start) must keep it
	// from the child.
	stray, err := unix.Open("/dev/null", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(stray)
	if err := CloseOnExecInherited(); err != nil {
		t.Fatal(err)
	}

	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report")
	exe, _ := os.Executable()
	// The shell lists its own fds from another process (ls), so that no fd
	// of the listing itself shows; unlike a Go program, dash opens none.
	script := `exec >"$REPORT"; ls -m /proc/$$/fd; env | grep -E '^(LISTEN_|NOTIFY_SOCKET=)'`
	p, err := sp.Start(Child{
		Shim: exe, Path: "/bin/sh", Args: []string{"sh", "-c", script},
		Env:     []string{"REPORT=" + report, "LISTEN_PID=1", "LISTEN_FDS=9", "LISTEN_PIDFDID=7"},
		Sockets: []*Socket{a, b}, Names: []string{"http", "admin"},
		Stdout: 1, Stderr: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *os.ProcessState, 1)
	go func() { st, _ := p.Wait(); done <- st }()
	select {
	case st := <-done:
		if !st.Success() {
			t.Fatalf("child: %v", st)
		}
	case <-time.After(10 * time.Second):
		p.Kill()
		t.Fatal("child did not exit")
	}
	out, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, want := range []string{
		"0, 1, 2, 3, 4\n", "LISTEN_FDS=2\n", "LISTEN_FDNAMES=http:admin\n",
		"LISTEN_PID=" + strconv.Itoa(p.Pid) + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("child report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "LISTEN_PIDFDID") {
		t.Errorf("a stale LISTEN_PIDFDID reached the child:\n%s", got)
	}
	for _, s := range []*Socket{a, b} {
		if nb, err := s.NonBlocking(); err != nil || !nb {
			t.Errorf("%s: non-blocking = %v, %v after spawning", s.Spec(), nb, err)
		}
	}
}

func TestSpawnReportsMissingProgram(t *testing.T) {
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	p, err := sp.Start(Child{Shim: exe, Path: "/nonexistent/app", Args: []string{"app"}, Stdout: 1, Stderr: 2})
	if err != nil {
		t.Fatal(err) // the shim starts; it is the exec that fails
	}
	st, _ := p.Wait()
	if st.ExitCode() != 127 {
		t.Errorf("exit code %d, want 127", st.ExitCode())
	}
}

func TestParseNotify(t *testing.T) {
	good := map[string]map[string]string{
		"READY=1":                      {"READY": "1"},
		"READY=1\nSTATUS=warming up\n": {"READY": "1", "STATUS": "warming up"},
		"STATUS=a=b":                   {"STATUS": "a=b"},
		"\n\nSTOPPING=1\n":             {"STOPPING": "1"},
		"X_1=\nX_1=2":                  {"X_1": "2"},
	}
	for in, want := range good {
		got, err := ParseNotify([]byte(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%q: got %v want %v", in, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%q: %s=%q, want %q", in, k, got[k], v)
			}
		}
	}
	for _, in := range []string{"", "\n", "READY", "READY=1\nbogus", "=1", "1A=2", "RE ADY=1", "READY=1\x00", strings.Repeat("A", MaxNotifyMessage+1)} {
		if _, err := ParseNotify([]byte(in)); !errors.Is(err, ErrNotifyMessage) {
			t.Errorf("%.30q: err = %v, want ErrNotifyMessage", in, err)
		}
	}
}

func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{"READY=1", "STATUS=x\nREADY=1\n", "MAINPID=12", "bogus", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := ParseNotify(b)
		if err != nil {
			if !errors.Is(err, ErrNotifyMessage) || fields != nil {
				t.Fatalf("err %v fields %v", err, fields)
			}
			return
		}
		for k := range fields {
			if !validNotifyKey(k) {
				t.Fatalf("invalid key %q accepted", k)
			}
		}
	})
}

func TestNotifySocketAttributesSender(t *testing.T) {
	ns, err := ListenNotify()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	to := &net.UnixAddr{Name: ns.Addr(), Net: "unixgram"}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // unconnected, to send fds

	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A message with an fd attached: baton must close it, not keep it.
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if _, _, err := c.WriteMsgUnix([]byte("READY=1\nSTATUS=up"), unix.UnixRights(int(r.Fd())), to); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix([]byte("garbage"), nil, to); err != nil {
		t.Fatal(err)
	}
	before := countFDs(t)
	n, err := ns.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if n.PID != os.Getpid() || n.Err != nil || n.Fields["READY"] != "1" || n.Fields["STATUS"] != "up" {
		t.Errorf("got %+v", n)
	}
	if after := countFDs(t); after > before {
		t.Errorf("fds %d -> %d: the fd sent along was kept", before, after)
	}
	n, err = ns.Receive()
	if err != nil || !errors.Is(n.Err, ErrNotifyMessage) || n.PID != os.Getpid() {
		t.Errorf("garbage: got %+v, %v", n, err)
	}
	ns.Close()
	if _, err := ns.Receive(); err == nil {
		t.Error("Receive after Close did not fail")
	}
}

func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestShimClearsAmbientCapabilities: capabilities baton holds in its ambient
// set (AmbientCapabilities= under systemd) do not reach the service.
func TestShimClearsAmbientCapabilities(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv (util-linux)")
	}
	exe, _ := os.Executable()
	ambient := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(setpriv, append([]string{"--inh-caps", "+net_bind_service", "--ambient-caps", "+net_bind_service", "--"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	report := []string{"/bin/sh", "sh", "-c", "grep CapAmb /proc/self/status"}
	if got := ambient(report[0], report[2], report[3]); strings.HasSuffix(got, "0000000000000000") {
		t.Fatalf("control run without the shim shows no ambient capability (%q): the test cannot tell", got)
	}
	if got := ambient(append([]string{exe, ShimArg}, report...)...); !strings.HasSuffix(got, "0000000000000000") {
		t.Errorf("through the shim: %q, want no ambient capabilities", got)
	}
}
