//go:build linux

package supervisor_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// TestChildSeesOnlyItsListeners runs a shell-script service that reports its
// fds and environment, then says READY=1 through Debian's real
// systemd-notify. The child must see fds 0-2 and its listeners, correct
// LISTEN_* values, baton's notify socket, and none of baton's own
// LISTEN_*, NOTIFY_SOCKET or WATCHDOG_* variables.
func TestChildSeesOnlyItsListeners(t *testing.T) {
	notify, err := exec.LookPath("systemd-notify")
	if err != nil {
		t.Skip("systemd-notify not installed (Debian package systemd)")
	}
	// What baton itself might have been given by systemd.
	t.Setenv("LISTEN_FDS", "4")
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDNAMES", "a:b:c:d")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	report := filepath.Join(t.TempDir(), "report")
	script := fmt.Sprintf(`exec >%q; echo "pid=$$"; printf fds=; ls -m /proc/$$/fd; env; %s --ready; exec sleep 60`, report, notify)
	a := app{
		RawCommand: []string{"/bin/sh", "-c", script},
		Listeners: fmt.Sprintf("[[listener]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n"+
			"[[listener]]\nname = \"admin\"\nnetwork = \"unix\"\naddress = %q\n", filepath.Join(t.TempDir(), "admin.sock")),
		Steering: "auto",
	}
	h := start(t, a)
	out, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	st := h.status()
	want := map[string]string{
		"fds":              "0, 1, 2, 3, 4",
		"LISTEN_FDS":       "2",
		"LISTEN_FDNAMES":   "web:admin",
		"LISTEN_PID":       vars["pid"],
		"BATON_GENERATION": "1",
		"pid":              strconv.Itoa(st.Generations[0].PID),
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
	if !strings.HasPrefix(vars["NOTIFY_SOCKET"], "@baton/") {
		t.Errorf("NOTIFY_SOCKET = %q, want baton's own", vars["NOTIFY_SOCKET"])
	}
	for _, k := range []string{"WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PIDFDID"} {
		if v, ok := vars[k]; ok {
			t.Errorf("child inherited %s=%s", k, v)
		}
	}
	if st.Listeners[0].Mode != supervisor.ModeSteered || st.Listeners[1].Mode != supervisor.ModeShared {
		t.Errorf("modes %+v: want tcp steered, unix shared", st.Listeners)
	}
}

// TestUnixListenerUpgrade: unix sockets run in shared mode and serve across
// an upgrade; the socket file is removed when baton stops.
func TestUnixListenerUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	listeners := fmt.Sprintf("[[listener]]\nname = \"http\"\nnetwork = \"unix\"\naddress = %q\nmode = \"0600\"\n", path)
	h := start(t, app{Version: "v1", Steering: "auto", Listeners: listeners})
	get := func() string {
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return b.String()
	}
	if got := get(); !strings.Contains(got, "generation 1 ") {
		t.Fatalf("got %q", got)
	}
	if _, err := h.upgrade(app{Version: "v2", Steering: "auto", Listeners: listeners}); err != nil {
		t.Fatal(err)
	}
	h.settled() // shared mode: the old process accepts until it has stopped
	if got := get(); !strings.Contains(got, "generation 2 ") {
		t.Errorf("after upgrade got %q", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file: %v, %v", fi, err)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
}

// TestSteeringBPFRefusesUnix: steering = "bpf" refuses to run where a
// listener cannot be steered.
func TestSteeringBPFRefusesUnix(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "baton.toml")
	a := app{Steering: "bpf", Listeners: fmt.Sprintf("[[listener]]\nname = \"u\"\nnetwork = \"unix\"\naddress = %q\n", filepath.Join(dir, "s"))}
	os.WriteFile(cfgPath, []byte(a.toml()), 0o644)
	cfg, err := supervisor.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sup, _ := supervisor.New(supervisor.Options{ConfigPath: cfgPath, Config: cfg, Logger: testLogger(&syncBuffer{})})
	err = sup.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "steering") {
		t.Errorf("Run: %v, want a steering error", err)
	}
}

// TestNoLeaksAcrossUpgrades: baton's fds and goroutines do not grow across
// 50 upgrades, and every socket it holds stays non-blocking.
func TestNoLeaksAcrossUpgrades(t *testing.T) {
	h := start(t, app{Version: "v1"})
	if _, err := h.upgrade(app{Version: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	h.settled()
	fds0, gor0 := settle(t, -1, -1)
	for i := 0; i < 50; i++ {
		if _, err := h.upgrade(app{Version: "v" + strconv.Itoa(i)}); err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
	}
	h.settled()
	fds1, gor1 := settle(t, fds0, gor0)
	if fds1 != fds0 || gor1 != gor0 {
		t.Errorf("after 50 upgrades: fds %d -> %d, goroutines %d -> %d", fds0, fds1, gor0, gor1)
	}
	checkNonBlockingSockets(t)
}

// settle waits (bounded) until the fd and goroutine counts reach the
// wanted values (timers and exiting goroutines come and go), and returns
// the last counts. -1 means take the first stable reading.
func settle(t *testing.T, wantFDs, wantGoroutines int) (int, int) {
	var fds, gor int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		fds, gor = countFDs(t), runtime.NumGoroutine()
		if wantFDs < 0 || (fds == wantFDs && gor == wantGoroutines) {
			break
		}
	}
	return fds, gor
}

func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) - 1 // ReadDir's own
}

// checkNonBlockingSockets: every socket of this process (baton's held
// listeners among them) has O_NONBLOCK, although children took them over.
func checkNonBlockingSockets(t *testing.T) {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if flags&0o4000 == 0 {
					t.Errorf("fd %s (%s) is blocking: flags %s", e.Name(), link, strings.TrimSpace(v))
				}
			}
		}
	}
}

// TestUDPListenerUpgrade: a UDP listener is steered like TCP: datagrams go
// to the serving generation only, before and after an upgrade.
func TestUDPListenerUpgrade(t *testing.T) {
	listeners := "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\n" +
		"[[listener]]\nname = \"dns\"\nnetwork = \"udp\"\naddress = \"127.0.0.1:0\"\n"
	h := start(t, app{Version: "v1", Listeners: listeners})
	st := h.status()
	if st.Listeners[1].Mode != supervisor.ModeSteered {
		t.Fatalf("udp listener mode %+v", st.Listeners[1])
	}
	ask := func() string {
		c, err := net.Dial("udp", st.Listeners[1].Address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 200)
		// Datagrams may be lost; retry a few times, each bounded.
		for try := 0; try < 5; try++ {
			c.Write([]byte("who?"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(buf); err == nil {
				return string(buf[:n])
			}
		}
		t.Fatal("no answer over UDP")
		return ""
	}
	for i := 0; i < 20; i++ {
		if got := ask(); !strings.Contains(got, "generation 1 ") {
			t.Fatalf("got %q, want generation 1", got)
		}
	}
	if _, err := h.upgrade(app{Version: "v2", Listeners: listeners}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if got := ask(); !strings.Contains(got, "generation 2 ") {
			t.Fatalf("after upgrade got %q, want generation 2", got)
		}
	}
}

// TestSameProtocolAsSystemd runs one reporting script under Debian's
// systemd-socket-activate (systemd's own socket-activation sender) and under
// baton, and checks that the child sees the same protocol from both: one
// listener on fd 3 and nothing else, LISTEN_FDS, LISTEN_FDNAMES, and
// LISTEN_PID equal to its own pid.
func TestSameProtocolAsSystemd(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	script := `exec >"$REPORT.tmp"; echo "pid=$$"; printf fds=; ls -m /proc/$$/fd; env | grep ^LISTEN_; mv "$REPORT.tmp" "$REPORT"; exec sleep 60`
	report := func(path string) map[string]string {
		t.Helper()
		var out []byte
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if out, err = os.ReadFile(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no report at %s", path)
			}
		}
		vars := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		return vars
	}

	// systemd's side: it starts the command at the first connection.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sysReport := filepath.Join(dir, "systemd")
	cmd := exec.Command(activate, "-l", addr, "--fdname=http", "-E", "REPORT="+sysReport, "/bin/sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer c.Close()
	fromSystemd := report(sysReport)

	batonReport := filepath.Join(dir, "baton")
	start(t, app{
		RawCommand: []string{"/bin/sh", "-c", script},
		Env:        map[string]string{"REPORT": batonReport},
		Readiness:  "check = \"delay\"\ndelay = \"10ms\"",
		Steering:   "auto",
	})
	fromBaton := report(batonReport)

	for _, r := range []map[string]string{fromSystemd, fromBaton} {
		if r["LISTEN_PID"] != r["pid"] {
			t.Errorf("LISTEN_PID %q, own pid %q", r["LISTEN_PID"], r["pid"])
		}
	}
	for _, k := range []string{"fds", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if fromSystemd[k] != fromBaton[k] {
			t.Errorf("%s: systemd-socket-activate gives %q, baton %q", k, fromSystemd[k], fromBaton[k])
		}
	}
	t.Logf("systemd: %v\nbaton:   %v", fromSystemd, fromBaton)
}
