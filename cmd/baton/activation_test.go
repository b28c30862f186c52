//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/internal/loadgen"
	"golang.org/x/sys/unix"
)

// startWithSockets starts `baton run` as a service manager would after
// socket activation or a restart with a filled fd store: the sockets from
// fd 3 on, LISTEN_FDS and LISTEN_FDNAMES, and LISTEN_PID set to baton's own
// pid (by baton's exec shim, as systemd sets it between fork and exec).
// prefix runs before baton, e.g. systemd-socket-activate.
func startWithSockets(t *testing.T, cfg string, socks []*os.File, names string, extraEnv []string, prefix ...string) *batonProc {
	// argv: baton __baton-exec PROGRAM ARGV0 ARGS...; the shim sets
	// LISTEN_PID to its pid, which PROGRAM keeps.
	batonArgs := []string{"run", "-c", cfg, "--log-format", "json"}
	args := []string{handoff.ShimArg}
	if len(prefix) == 0 {
		args = append(args, batonBin, "baton")
	} else {
		args = append(append(args, prefix...), batonBin) // PROGRAM ARGV0 ARGS... then baton
	}
	args = append(args, batonArgs...)
	cmd := exec.Command(batonBin, args...)
	cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(socks)), "LISTEN_FDNAMES="+names)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.ExtraFiles = socks
	return runBatonCmd(t, cmd)
}

// reuseportSocket makes a listening TCP socket with SO_REUSEPORT, as a
// .socket unit with ReusePort=yes does.
func reuseportSocket(t *testing.T) (*os.File, string) {
	s, err := handoff.Listen(handoff.ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(s.FD())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return os.NewFile(uintptr(fd), "http"), s.Addr()
}

// TestSocketActivationIn: baton started by Debian's systemd-socket-activate
// (which passes on the socket given to it, as a .socket unit with
// ReusePort=yes would) adopts the socket instead of binding, steers it, and
// serves through an upgrade without a failed request.
func TestSocketActivationIn(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	sock, addr := reuseportSocket(t)
	defer sock.Close()
	cfg := writeHelloConfig(t, dir, "1", "")
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), "127.0.0.1:0", addr, 1)), 0o644)

	b := startWithSockets(t, cfg, []*os.File{sock}, "http", nil, activate, "systemd-socket-activate", "--fdname=http")
	// systemd-socket-activate starts baton at the first connection; that
	// client waits in the backlog until the first generation serves it.
	url := "http://" + addr
	first := make(chan error, 1)
	go func() {
		_, err := loadgen.WaitFor(context.Background(), url, func(string) bool { return true }, 20*time.Second)
		first <- err
	}()
	ready := b.waitLog("listener ready")
	if ready["mode"] != "steered" || ready["passed_by_manager"] != true || ready["address"] != addr {
		t.Errorf("listener: %v; want the passed socket, steered", ready)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	load := loadgen.Run(context.Background(), loadgen.Options{URL: url, Clients: 8, SlowEvery: 10, SlowMS: 100})
	defer load.Stop()
	writeHelloConfig(t, dir, "2", "")
	content, _ = os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), "127.0.0.1:0", addr, 1)), 0o644)
	if out, code := runBaton(t, "upgrade", "--wait", "-c", cfg); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", code, out)
	}
	res := load.Stop()
	if res.Failed != 0 || res.Generations["2"] == 0 {
		t.Errorf("sent %d failed %d (%v), by generation %v", res.Sent, res.Failed, res.Errors, res.Generations)
	}
}

// TestSocketActivationWithoutReusePort: a passed socket without
// SO_REUSEPORT is adopted in shared mode, and baton says why.
func TestSocketActivationWithoutReusePort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := l.(*net.TCPListener).File()
	l.Close()
	defer f.Close()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startWithSockets(t, cfg, []*os.File{f}, "http", nil)
	ready := b.waitLog("listener ready")
	if ready["mode"] != "shared" || !strings.Contains(ready["why"].(string), "ReusePort=yes") {
		t.Errorf("listener: %v; want shared mode naming ReusePort=yes", ready)
	}
	b.waitLog("process ready")
	if _, err := loadgen.WaitFor(context.Background(), "http://"+ready["address"].(string), func(string) bool { return true }, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// TestSocketActivationMismatch: a passed socket that does not fit its
// listener (another address) stops baton with a clear message.
func TestSocketActivationMismatch(t *testing.T) {
	sock, _ := reuseportSocket(t)
	defer sock.Close()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), "127.0.0.1:0", "127.0.0.2:9", 1)), 0o644)
	b := startWithSockets(t, cfg, []*os.File{sock}, "http", nil)
	if code := b.wait(); code != 1 || !strings.Contains(b.log.String(), "does not fit") {
		t.Errorf("exit %d, log:\n%s", code, b.log.String())
	}
}

// TestFDStoreRoundTrip: under systemd, baton puts its sockets into the fd
// store; when baton is killed, a new baton given the stored sockets serves
// on them, and no client connecting in between is refused.
func TestFDStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sd := newFakeFDStore(t) // NOTIFY_SOCKET for baton: it runs "under systemd"
	cfg := writeHelloConfig(t, dir, "1", "")
	b1 := startBaton(t, cfg)
	addr := b1.addr(t)
	pid := int(b1.waitLog("process ready")["pid"].(float64))
	// The listener's socket, and its steering program and its three maps.
	var files []*os.File
	var names []string
	for len(files) < 5 {
		m := sd.waitFor(t, "FDSTORE=1", 10*time.Second, has("FDSTORE", "1"))
		if len(m.files) != 1 {
			t.Fatalf("FDSTORE=1 with %d fds: %s", len(m.files), m)
		}
		name := m.fields["FDNAME"]
		files, names = append(files, m.files[0]), append(names, name)
		defer m.files[0].Close()
		// systemd must not poll a BPF map: it polls as broken.
		if strings.Contains(name, "bpf") != (m.fields["FDPOLL"] == "0") {
			t.Errorf("stored %q with %s; want FDPOLL=0 exactly for the program and maps", name, m)
		}
	}

	url := "http://" + addr
	load := loadgen.Run(context.Background(), loadgen.Options{URL: url, Clients: 8, Timeout: 20 * time.Second})
	defer load.Stop()
	waitSentN(t, load, 100)
	b1.cmd.Process.Kill() // a crash of baton: its children die with it
	b1.wait()
	waitGone(t, pid)
	// Clients keep connecting while no baton runs: they wait in the
	// stored socket's backlog.
	time.Sleep(200 * time.Millisecond) // a real gap, not a handshake: the restart delay of systemd
	b2 := startWithSockets(t, cfg, files, strings.Join(names, ":"), nil)
	ready := b2.waitLog("listener ready")
	if ready["passed_by_manager"] != true || ready["address"] != addr ||
		!strings.Contains(ready["why"].(string), "program and maps passed along") {
		t.Errorf("new baton: %v; want the stored socket, steered with the stored program and maps", ready)
	}
	b2.waitLog("process ready")
	waitSentN(t, load, load.Snapshot().Sent+100)
	res := load.Stop()
	t.Logf("sent %d, failed %d: %v; by generation %v", res.Sent, res.Failed, res.Errors, res.Generations)
	for reason := range res.Errors {
		if strings.Contains(reason, "refused") {
			t.Errorf("a client was refused while baton restarted: %v", res.Errors)
		}
	}
	if res.Failed > 8 {
		t.Errorf("%d requests failed; at most the 8 in flight when baton was killed may", res.Failed)
	}
}

func waitSentN(t *testing.T, load *loadgen.Load, n int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); load.Snapshot().Sent < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("load stalled: %+v", load.Snapshot())
		}
	}
}
