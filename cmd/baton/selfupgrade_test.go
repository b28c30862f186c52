//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// pidOfBody is P in "hello from generation G pid P (version V)".
func pidOfBody(body string) int {
	f := strings.Fields(body)
	for i := range f {
		if f[i] == "pid" && i+1 < len(f) {
			n, _ := strconv.Atoi(f[i+1])
			return n
		}
	}
	return 0
}

// TestSelfUpgradeUnderLoad: SIGUSR2 makes baton start a new baton (the
// same binary here) that inherits the listeners, starts its own generation
// and takes over once it is ready; the old baton drains and exits. No
// request fails, and the new baton answers on the control socket.
func TestSelfUpgradeUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	sd := newFakeSystemd(t) // to hear MAINPID= with the new baton's pid
	b := startBaton(t, cfg)
	addr := b.addr(t)
	oldChild := int(b.waitLog("process ready")["pid"].(float64))
	url := "http://" + addr
	load := loadgen.Run(context.Background(), loadgen.Options{URL: url, Clients: 8, SlowEvery: 10, SlowMS: 100})
	defer load.Stop()
	waitSentN(t, load, 100)

	// As an operator would: `baton upgrade --self` signals the baton it
	// finds through the control socket.
	if out, code := runBaton(t, "upgrade", "--self", "-c", cfg); code != 0 || !strings.Contains(out, "self-upgrade of baton") {
		t.Fatalf("upgrade --self: exit %d\n%s", code, out)
	}
	b.waitLog("self-upgrade: the new baton serves; this one drains and exits")
	waitGone(t, b.cmd.Process.Pid)
	waitGone(t, oldChild)
	pidBytes, err := os.ReadFile(filepath.Join(dir, "control.pid"))
	if err != nil {
		t.Fatal(err)
	}
	newBaton, _ := strconv.Atoi(strings.TrimSpace(string(pidBytes)))
	if newBaton == b.cmd.Process.Pid || !alive(newBaton) {
		t.Fatalf("new baton pid %d (old %d) not running", newBaton, b.cmd.Process.Pid)
	}
	defer func() {
		syscall.Kill(newBaton, syscall.SIGTERM)
		waitGone(t, newBaton)
	}()
	mainpid := sd.waitFor(t, "MAINPID=", 5*time.Second, func(m notifyMessage) bool { _, ok := m.fields["MAINPID"]; return ok })
	if v := mainpid.fields["MAINPID"]; v != strconv.Itoa(newBaton) {
		t.Errorf("MAINPID=%s, want the new baton's pid %d", v, newBaton)
	}
	waitSentN(t, load, load.Snapshot().Sent+100)
	res := load.Stop()
	if res.Failed != 0 {
		t.Errorf("sent %d, failed %d: %v", res.Sent, res.Failed, res.Errors)
	}
	body, err := loadgen.WaitFor(context.Background(), url, func(string) bool { return true }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p := pidOfBody(body); p == oldChild || p == 0 {
		t.Errorf("answered by %q; want the new baton's generation", body)
	}
	if out, code := runBaton(t, "status", "--json", "-c", cfg); code != 0 || !strings.Contains(out, fmt.Sprintf(`"baton_pid": %d`, newBaton)) {
		t.Errorf("status after self-upgrade: exit %d\n%s", code, out)
	}
}

// failSelfUpgrade starts baton, lets breakIt spoil what the new baton will
// need, asks for a self-upgrade, and checks that it failed and that the old
// generation still answers every request. It returns the config file.
func failSelfUpgrade(t *testing.T, breakIt func(dir, cfg string)) string {
	t.Helper()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	addr := b.addr(t)
	child := int(b.waitLog("process ready")["pid"].(float64))
	breakIt(dir, cfg)
	b.cmd.Process.Signal(syscall.SIGUSR2)
	failed := b.waitLog("self-upgrade")
	if !strings.Contains(fmt.Sprint(failed["err"]), "this baton goes on") {
		t.Fatalf("log: %v", failed)
	}
	if !alive(child) {
		t.Fatal("the old generation is gone")
	}
	for i := 0; i < 50; i++ {
		body, err := loadgen.WaitFor(context.Background(), "http://"+addr, func(string) bool { return true }, 5*time.Second)
		if err != nil || pidOfBody(body) != child {
			t.Fatalf("request %d after the failed self-upgrade: %q, %v; want the old generation (pid %d)", i, body, err, child)
		}
	}
	return cfg
}

// TestSelfUpgradeFailureKeepsOld: a new baton that cannot start its
// service fails the self-upgrade; the old baton goes on serving, with its
// control socket back.
func TestSelfUpgradeFailureKeepsOld(t *testing.T) {
	cfg := failSelfUpgrade(t, func(_, cfg string) {
		// The new baton reads the config anew: its service exits at once.
		content, _ := os.ReadFile(cfg)
		os.WriteFile(cfg, []byte(strings.Replace(string(content), fmt.Sprintf("%q", helloBin), `"/bin/false"`, 1)), 0o644)
	})
	if out, code := runBaton(t, "status", "-c", cfg); code != 0 {
		t.Errorf("control socket not back: exit %d\n%s", code, out)
	}
}

// TestSelfUpgradeFailingAfterRouting: a new baton that routed the group to
// itself and then failed (here: it cannot write its pid file, so it cannot
// tell the old baton it serves, and stops) leaves the old baton serving
// again. What this covers is the new baton stopping cleanly: its socket
// is shut down as its generation retires, and the old baton routes back.
// A new baton killed outright (tableflip's timeout) relies on the route
// back alone; that case is not exercised here.
func TestSelfUpgradeFailingAfterRouting(t *testing.T) {
	failSelfUpgrade(t, func(dir, _ string) {
		// The old baton wrote its pid file at start; a directory in its
		// place makes the new baton's write fail after it has routed to
		// itself.
		os.Remove(filepath.Join(dir, "control.pid"))
		if err := os.Mkdir(filepath.Join(dir, "control.pid"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
}
