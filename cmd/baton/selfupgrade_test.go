//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"golang.org/x/sys/unix"
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
	// A fake systemd, to hear MAINPID= with the new baton's pid.
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	mainpid := make(chan string, 1)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, oobn, _, _, err := notify.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) > 0 {
				for _, m := range msgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil {
						for _, fd := range fds {
							unix.Close(fd) // fd store entries: not what this test is about
						}
					}
				}
			}
			if v, ok := strings.CutPrefix(string(buf[:n]), "MAINPID="); ok {
				mainpid <- v
			}
		}
	}()
	cmd := exec.Command(batonBin, "run", "-c", cfg, "--log-format", "json")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	b := runBatonCmd(t, cmd)
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
	select {
	case v := <-mainpid:
		if v != strconv.Itoa(newBaton) {
			t.Errorf("MAINPID=%s, want the new baton's pid %d", v, newBaton)
		}
	case <-time.After(5 * time.Second):
		t.Error("no MAINPID= sent to systemd")
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

// TestSelfUpgradeFailureKeepsOld: a new baton that cannot start its
// service fails the self-upgrade; the old baton goes on serving, with its
// control socket back.
func TestSelfUpgradeFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	addr := b.addr(t)
	child := int(b.waitLog("process ready")["pid"].(float64))
	// The new baton reads the config anew: its service exits at once.
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), fmt.Sprintf("%q", helloBin), `"/bin/false"`, 1)), 0o644)
	b.cmd.Process.Signal(syscall.SIGUSR2)
	failed := b.waitLog("self-upgrade")
	if !strings.Contains(fmt.Sprint(failed["err"]), "this baton goes on") {
		t.Errorf("log: %v", failed)
	}
	if !alive(child) {
		t.Error("the old generation is gone")
	}
	body, err := loadgen.WaitFor(context.Background(), "http://"+addr, func(string) bool { return true }, 5*time.Second)
	if err != nil || pidOfBody(body) != child {
		t.Errorf("after a failed self-upgrade: %q, %v; want the old generation (pid %d)", body, err, child)
	}
	if out, code := runBaton(t, "status", "-c", cfg); code != 0 {
		t.Errorf("control socket not back: exit %d\n%s", code, out)
	}
}

// TestSelfUpgradeFailingAfterRouting: a new baton that routed the group to
// itself and then failed (here: it cannot write its pid file, so it cannot
// tell the old baton it serves) leaves the old baton serving again: the
// old one routes back to its own generation.
func TestSelfUpgradeFailingAfterRouting(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	addr := b.addr(t)
	child := int(b.waitLog("process ready")["pid"].(float64))
	// The old baton wrote its pid file at start; a directory in its place
	// makes the new baton's write fail after it has routed to itself.
	os.Remove(filepath.Join(dir, "control.pid"))
	if err := os.Mkdir(filepath.Join(dir, "control.pid"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.cmd.Process.Signal(syscall.SIGUSR2)
	failed := b.waitLog("self-upgrade")
	if !strings.Contains(fmt.Sprint(failed["err"]), "this baton goes on") {
		t.Fatalf("log: %v", failed)
	}
	for i := 0; i < 50; i++ {
		body, err := loadgen.WaitFor(context.Background(), "http://"+addr, func(string) bool { return true }, 5*time.Second)
		if err != nil || pidOfBody(body) != child {
			t.Fatalf("request %d after the failed self-upgrade: %q, %v; want the old generation (pid %d)", i, body, err, child)
		}
	}
}
