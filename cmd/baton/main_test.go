//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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

	"github.com/cilium/ebpf"

	"github.com/baton-sh/baton/internal/loadgen"
)

// The real binaries, built once by TestMain.
var batonBin, helloBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-cmd-test")
	if err != nil {
		panic(err)
	}
	// Readable by every user: some tests run the service as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	batonBin, helloBin = filepath.Join(dir, "baton"), filepath.Join(dir, "hello")
	for bin, pkg := range map[string]string{batonBin: ".", helloBin: "../../examples/hello"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// batonProc is a running `baton run` with its JSON log lines.
type batonProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	log   *strings.Builder
	done  chan error

	listenAddr string
}

func writeHelloConfig(t *testing.T, dir, version, extra string) string {
	cfg := filepath.Join(dir, "baton.toml")
	content := fmt.Sprintf(`[service]
command = [%q]
environment = { GREETING_VERSION = %q }

[[listener]]
name = "http"
address = "127.0.0.1:0"

[readiness]
timeout = "10s"

[control]
socket = %q
%s`, helloBin, version, filepath.Join(dir, "control.sock"), extra)
	if err := os.WriteFile(cfg, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startBaton(t *testing.T, cfg string) *batonProc {
	return runBatonCmd(t, exec.Command(batonBin, "run", "-c", cfg, "--log-format", "json"))
}

// runBatonCmd starts a prepared `baton run` command and follows its log.
func runBatonCmd(t *testing.T, cmd *exec.Cmd) *batonProc {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &batonProc{t: t, cmd: cmd, lines: make(chan map[string]any, 1000), log: &strings.Builder{}, done: make(chan error, 1)}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			b.log.WriteString(sc.Text() + "\n")
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case b.lines <- m:
				default:
				}
			}
		}
		close(b.lines)
	}()
	go func() {
		<-logDone
		b.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("baton log:\n%s", b.log.String())
		}
	})
	return b
}

// addr is the first listener's bound address, from baton's log.
func (b *batonProc) addr(t *testing.T) string {
	if b.listenAddr == "" {
		b.listenAddr = b.waitLog("listener ready")["address"].(string)
	}
	return b.listenAddr
}

// waitLog returns the first log line with msg (bounded).
func (b *batonProc) waitLog(msg string) map[string]any {
	b.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-b.lines:
			if !ok {
				b.t.Fatalf("baton exited before logging %q", msg)
			}
			if m["msg"] == msg {
				return m
			}
		case <-timeout:
			b.t.Fatalf("no %q in baton's log", msg)
		}
	}
}

// wait waits (bounded) for baton to exit and returns its exit code.
func (b *batonProc) wait() int {
	b.t.Helper()
	select {
	case err := <-b.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			b.t.Fatal(err)
		}
		return 0
	case <-time.After(60 * time.Second):
		b.t.Fatal("baton did not exit")
		return -1
	}
}

func alive(pid int) bool {
	// A zombie still "exists": look at its state.
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
	}
}

// TestRunUpgradeAndStop drives the real binary: SIGHUP upgrades the
// example under load without a failed request, SIGTERM drains and exits 0,
// and no child is left.
func TestRunUpgradeAndStop(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	addr := b.waitLog("listener ready")["address"].(string)
	pid1 := int(b.waitLog("process ready")["pid"].(float64))
	url := "http://" + addr
	load := loadgen.Run(context.Background(), loadgen.Options{URL: url, Clients: 8, SlowEvery: 10, SlowMS: 100})
	defer load.Stop()

	writeHelloConfig(t, dir, "2", "")
	b.cmd.Process.Signal(syscall.SIGHUP)
	promoted := b.waitLog("promoted")
	if promoted["gen"].(float64) != 2 {
		t.Errorf("promoted %v", promoted)
	}
	if _, err := loadgen.WaitFor(context.Background(), url, func(body string) bool {
		return strings.Contains(body, "generation 2 ") && strings.Contains(body, "(version 2)")
	}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.waitLog("retired")
	waitGone(t, pid1)
	res := load.Stop()
	if res.Failed != 0 || res.Sent == 0 {
		t.Errorf("sent %d failed %d: %v", res.Sent, res.Failed, res.Errors)
	}

	pid2 := int(promoted["pid"].(float64))
	progs, maps := bpfObjects(t, b.cmd.Process.Pid)
	if len(progs) != 1 || len(maps) != 3 {
		t.Errorf("baton holds BPF programs %v and maps %v; want the steering program and its 3 maps", progs, maps)
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	waitGone(t, pid2)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("address still listening after baton exited")
	}
	// The kernel frees a BPF object once nothing holds it: the program was
	// attached to the group, whose sockets are all closed now. It does so
	// after an RCU grace period, so this polls (bounded).
	gone := func(open func() (interface{ Close() error }, error)) bool {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			o, err := open()
			if errors.Is(err, os.ErrNotExist) {
				return true
			}
			if err == nil {
				o.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	for _, id := range progs {
		if !gone(func() (interface{ Close() error }, error) { return ebpf.NewProgramFromID(ebpf.ProgramID(id)) }) {
			t.Errorf("BPF program %d still exists 10s after baton exited", id)
		}
	}
	for _, id := range maps {
		if !gone(func() (interface{ Close() error }, error) { return ebpf.NewMapFromID(ebpf.MapID(id)) }) {
			t.Errorf("BPF map %d still exists 10s after baton exited", id)
		}
	}
}

// bpfObjects lists the ids of the BPF programs and maps process pid holds
// open, from /proc/PID/fdinfo.
func bpfObjects(t *testing.T, pid int) (progs, maps []uint32) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			switch {
			case !ok || err != nil:
			case k == "prog_id":
				progs = append(progs, uint32(id))
			case k == "map_id":
				maps = append(maps, uint32(id))
			}
		}
	}
	return progs, maps
}

// TestSIGKILLLeavesNoOrphans: children die with baton even when baton is
// SIGKILLed (PR_SET_PDEATHSIG, set for the spawning thread).
func TestSIGKILLLeavesNoOrphans(t *testing.T) {
	b := startBaton(t, writeHelloConfig(t, t.TempDir(), "1", ""))
	pid := int(b.waitLog("process ready")["pid"].(float64))
	b.cmd.Process.Kill()
	b.wait()
	waitGone(t, pid)
}

// TestBadInputExits2: every class of bad config, and bad usage, exits 2
// with a message naming the problem, and starts nothing.
func TestBadInputExits2(t *testing.T) {
	bad, err := filepath.Glob("../../supervisor/testdata/config/bad-*.toml")
	if err != nil || len(bad) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, f := range bad {
		for _, sub := range []string{"run", "check"} {
			out, code := runBaton(t, sub, "-c", f)
			if code != 2 || !strings.Contains(out, filepath.Base(f)) {
				t.Errorf("baton %s -c %s: exit %d, output %q; want 2 and the file named", sub, filepath.Base(f), code, out)
			}
		}
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"run"}, {"run", "-c"}, {"run", "-c", "x", "extra"},
		{"run", "-c", "/nonexistent.toml"}, {"run", "-c", "x", "--log-format", "xml"}} {
		if out, code := runBaton(t, args...); code != 2 || out == "" {
			t.Errorf("baton %q: exit %d, output %q; want 2 and a message", args, code, out)
		}
	}
}

func TestCheckAndVersion(t *testing.T) {
	if out, code := runBaton(t, "check", "-c", writeHelloConfig(t, t.TempDir(), "1", "")); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("check: exit %d %q", code, out)
	}
	if out, code := runBaton(t, "version"); code != 0 || !strings.HasPrefix(out, "baton ") {
		t.Errorf("version: exit %d %q", code, out)
	}
}

// TestAddressInUse: baton refuses to start on an address another process
// holds, instead of joining its reuseport group.
func TestAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), "127.0.0.1:0", l.Addr().String(), 1)), 0o644)
	out, code := runBaton(t, "run", "-c", cfg)
	if code != 1 || !strings.Contains(out, "address already in use") {
		t.Errorf("exit %d, output %q; want 1 and 'address already in use'", code, out)
	}
}

func runBaton(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, batonBin, args...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestInheritedFDsDoNotReachTheService: an fd baton inherited without
// close-on-exec (from a careless parent) is not passed on to the service.
func TestInheritedFDsDoNotReachTheService(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report")
	cfg := filepath.Join(dir, "baton.toml")
	script := `exec >"$REPORT.tmp"; ls -m /proc/$$/fd; mv "$REPORT.tmp" "$REPORT"; exec sleep 60`
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[service]
command = ["/bin/sh", "-c", %q]
environment = { REPORT = %q }
[[listener]]
name = "http"
address = "127.0.0.1:0"
[readiness]
check = "delay"
delay = "10ms"
[control]
socket = %q
`, script, report, filepath.Join(dir, "control.sock"))), 0o644)
	leak, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	cmd := exec.Command(batonBin, "run", "-c", cfg)
	// fds 3, 4 and 5 in baton, not close-on-exec (the listener lands on 3 in
	// the child, so the leak shows on 4 and 5 if it gets through).
	cmd.ExtraFiles = []*os.File{leak, leak, leak}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var out []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if out, err = os.ReadFile(report); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no report from the service")
		}
	}
	if got := strings.TrimSpace(string(out)); got != "0, 1, 2, 3" {
		t.Errorf("service fds: %q, want 0, 1, 2, 3 (its one listener)", got)
	}
}

// TestSIGKILLMidUpgradeLeavesNoOrphans: baton SIGKILLed while a new
// generation is starting leaves neither the old nor the new process.
func TestSIGKILLMidUpgradeLeavesNoOrphans(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	old := int(b.waitLog("process ready")["pid"].(float64))
	// The next version takes its time to get ready.
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), fmt.Sprintf("command = [%q]", helloBin),
		fmt.Sprintf("command = [%q, \"-startup-delay\", \"30s\"]", helloBin), 1)), 0o644)
	b.cmd.Process.Signal(syscall.SIGHUP)
	started := b.waitLog("process started")
	candidate := int(started["pid"].(float64))
	if candidate == old {
		t.Fatal("no new process started")
	}
	b.cmd.Process.Kill()
	b.wait()
	waitGone(t, old)
	waitGone(t, candidate)
}
