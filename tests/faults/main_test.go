//go:build linux

// Package faults_test is baton's fault suite: the real bin/baton runs
// tests/faults/faultapp, a service that serves like examples/hello and
// misbehaves in one precise way on request (FAULT=...), under real traffic
// on loopback (internal/loadgen). Each fault is a subtest of TestFaults
// that asserts, by counting, that no request failed while an old
// generation served, and that nothing is left once baton has exited: no
// process of the service (every faultapp records its pid and start time,
// so a test knows each one that ever ran) and no listening socket.
//
// It needs root (kernel steering, as in production); otherwise it skips.
package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// The real binaries, built once by TestMain.
var batonBin, appBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-faults")
	if err != nil {
		panic(err)
	}
	batonBin, appBin = filepath.Join(dir, "baton"), filepath.Join(dir, "faultapp")
	for bin, pkg := range map[string]string{batonBin: "../../cmd/baton", appBin: "./faultapp"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault suite runs baton kernel-steered, as in production: it needs root (CAP_BPF)")
	}
}

// Bounds of every wait.
const (
	logWait     = 20 * time.Second // for a log line
	exitWait    = 30 * time.Second // for baton to exit
	goneWait    = 10 * time.Second // for a process to be gone
	upgradeWait = "30s"            // `baton upgrade --wait --timeout`
)

// service is the config of one baton under test, and where its processes
// leave their traces.
type service struct {
	dir     string
	cfg     string   // the config file
	sock    string   // the control socket
	pidDir  string   // FAULT_PIDDIR: one file per faultapp process that ever ran
	content string   // the config as last written
	guards  []procID // the guard of each baton that got ready
}

// serviceConfig is what a test changes in the config; the rest is fixed.
type serviceConfig struct {
	fault     string // FAULT for the processes of the generation
	only      string // FAULT_INSTANCE: the one instance that misbehaves; "" : all
	version   string // GREETING_VERSION
	instances int    // 0: 1
	address   string // "" : 127.0.0.1:0
	extra     string // more TOML, after the [control] section
	readiness string // [readiness] timeout; "" : 10s
	drain     string // [drain] timeout; "" : 10s
	command   string // the program; "" : faultapp as built
	directory string // [service] directory; "" : none
}

func newService(t *testing.T) *service {
	dir := t.TempDir()
	s := &service{dir: dir, cfg: filepath.Join(dir, "baton.toml"), sock: filepath.Join(dir, "control.sock"), pidDir: filepath.Join(dir, "pids")}
	if err := os.Mkdir(s.pidDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// write writes the config; a later upgrade reads it.
func (s *service) write(t *testing.T, c serviceConfig) {
	t.Helper()
	c.instances = max(c.instances, 1)
	c.address = cmpOr(c.address, "127.0.0.1:0")
	c.version = cmpOr(c.version, "1")
	c.readiness = cmpOr(c.readiness, "10s")
	c.drain = cmpOr(c.drain, "10s")
	c.command = cmpOr(c.command, appBin)
	dir := ""
	if c.directory != "" {
		dir = fmt.Sprintf("directory = %q\n", c.directory)
	}
	s.content = fmt.Sprintf(`[service]
command = [%q]
%senvironment = { FAULT = %q, FAULT_INSTANCE = %q, GREETING_VERSION = %q, FAULT_PIDDIR = %q }
instances = %d

[[listener]]
name = "http"
address = %q

[readiness]
timeout = %q

[drain]
timeout = %q
grace = "20ms"

[control]
socket = %q
%s`, c.command, dir, c.fault, c.only, c.version, s.pidDir, c.instances, c.address, c.readiness, c.drain, s.sock, c.extra)
	s.writeRaw(t, s.content)
}

func (s *service) writeRaw(t *testing.T, content string) {
	t.Helper()
	// Written whole and renamed, as a deploy tool would: baton never reads
	// half a file.
	tmp := s.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.cfg); err != nil {
		t.Fatal(err)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// baton is a running `baton run` and its JSON log, kept whole so that a
// line can be waited for after it has been written.
type baton struct {
	t    *testing.T
	svc  *service
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's, once done is closed

	mu      sync.Mutex
	lines   []map[string]any // JSON lines of stderr, in order
	raw     bytes.Buffer     // all of stderr, for failures
	changed chan struct{}    // closed and replaced at every new line, and at the end
	ended   bool             // stderr is closed
}

// start starts `baton run -c svc.cfg`. Its stdout goes to stdout (nil:
// /dev/null), extraEnv is added to its environment.
func (s *service) start(t *testing.T, stdout *os.File, extraEnv ...string) *baton {
	t.Helper()
	cmd := exec.Command(batonBin, "run", "-c", s.cfg, "--log-format", "json")
	cmd.Env = append(cleanEnv(), extraEnv...)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	return s.startCmd(t, cmd)
}

// cleanEnv is this process's environment without what would make baton
// believe it runs under systemd.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startCmd starts a prepared `baton run` command and follows its log. When
// the test ends, baton is killed if it still runs, and its log is shown if
// the test failed.
func (s *service) startCmd(t *testing.T, cmd *exec.Cmd) *baton {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &baton{t: t, svc: s, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			ok := json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] != nil
			b.mu.Lock()
			b.raw.Write(sc.Bytes())
			b.raw.WriteByte('\n')
			if ok {
				b.lines = append(b.lines, m)
			}
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		}
		b.mu.Lock()
		b.ended = true
		close(b.changed)
		b.mu.Unlock()
		b.err = cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = cmd.Process.Kill() // the test ended early; its children die with it
			<-b.done
		}
		if t.Failed() {
			t.Logf("baton's log:\n%s", b.log())
		}
	})
	return b
}

func (b *baton) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

// find returns the first log line from index from on that matches, and its
// index, or -1.
func (b *baton) find(from int, match func(map[string]any) bool) (map[string]any, int, chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := from; i < len(b.lines); i++ {
		if match(b.lines[i]) {
			return b.lines[i], i, nil, b.ended
		}
	}
	return nil, -1, b.changed, b.ended
}

// waitFor waits (bounded) for a log line that matches and returns it.
func (b *baton) waitFor(what string, match func(map[string]any) bool) map[string]any {
	b.t.Helper()
	m, err := b.waitForErr(what, logWait, match)
	if err != nil {
		b.t.Fatal(err)
	}
	return m
}

func (b *baton) waitForErr(what string, timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	return b.waitFrom(0, what, timeout, match)
}

// waitFrom waits (bounded) for a log line that matches, from the line of
// index from on.
func (b *baton) waitFrom(from int, what string, timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	deadline := time.After(timeout)
	for {
		m, i, changed, ended := b.find(from, match)
		if i >= 0 {
			return m, nil
		}
		if ended {
			return nil, fmt.Errorf("baton exited without logging %s", what)
		}
		select {
		case <-changed:
		case <-deadline:
			return nil, fmt.Errorf("no %s in baton's log within %v", what, timeout)
		}
	}
}

// has reports whether a line that matches has been logged so far.
func (b *baton) has(match func(map[string]any) bool) bool {
	_, i, _, _ := b.find(0, match)
	return i >= 0
}

// all returns every line logged so far that matches.
func (b *baton) all(match func(map[string]any) bool) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, m := range b.lines {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// msg matches a log line by its message and, if gen > 0, its generation.
func msg(text string, gen int) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["msg"] == text && (gen == 0 || num(m["gen"]) == gen)
	}
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// ready waits for generation 1 to serve and returns the address of the
// listener and the pid of generation 1's first process.
func (b *baton) ready() (addr string, pid int) {
	b.t.Helper()
	addr = str(b.waitFor(`"listener ready"`, msg("listener ready", 0))["address"])
	pid = num(b.waitFor(`"process ready" of generation 1`, msg("process ready", 1))["pid"])
	b.svc.guards = append(b.svc.guards, b.guard())
	return addr, pid
}

// guard returns baton's guard process (its child "baton-guard", which
// kills the service's process groups if baton dies without doing so).
func (b *baton) guard() procID {
	b.t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("baton-guard\x00")) {
			continue
		}
		if ppid(pid) == b.pid() {
			_, start, _ := procStat(pid)
			return procID{pid, start}
		}
	}
	b.t.Fatal("baton runs no guard")
	return procID{}
}

// ppid is the parent of process pid, 0 if unknown.
func ppid(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(fields[1])
	return n
}

// readyAll waits for n instances of generation gen to be ready and
// returns their pids, in instance order.
func (b *baton) readyAll(gen, n int) []int {
	b.t.Helper()
	pids := make([]int, n)
	for i := range n {
		pids[i] = num(b.waitFor(fmt.Sprintf(`"process ready" of generation %d instance %d`, gen, i), func(m map[string]any) bool {
			return msg("process ready", gen)(m) && num(m["instance"]) == i
		})["pid"])
	}
	return pids
}

// pid is the baton process's.
func (b *baton) pid() int { return b.cmd.Process.Pid }

// exit waits (bounded) for baton to exit and returns its exit code.
func (b *baton) exit() int {
	b.t.Helper()
	select {
	case <-b.done:
	case <-time.After(exitWait):
		b.t.Fatalf("baton did not exit within %v", exitWait)
	}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if b.err != nil {
		b.t.Fatal(b.err)
	}
	return 0
}

// stop sends SIGTERM and checks that baton drains and exits 0.
func (b *baton) stop() {
	b.t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.t.Fatal(err)
	}
	if code := b.exit(); code != 0 {
		b.t.Errorf("baton exited %d after SIGTERM, want 0", code)
	}
}

// ctl runs a baton client command against the service's control socket
// and returns its output and exit code.
func (s *service) ctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runBaton(t, append(args, "--socket", s.sock)...)
}

// upgrade runs `baton upgrade --wait` and returns its output and exit code.
func (s *service) upgrade(t *testing.T) (string, int) {
	t.Helper()
	return s.ctl(t, "upgrade", "--wait", "--timeout", upgradeWait)
}

// mustUpgrade upgrades and fails the test unless the upgrade succeeded.
func (s *service) mustUpgrade(t *testing.T) {
	t.Helper()
	if out, code := s.upgrade(t); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", code, out)
	}
}

func runBaton(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, code := runBatonNoT(args...)
	if code < 0 {
		t.Fatalf("baton %s: %s", strings.Join(args, " "), out)
	}
	return out, code
}

// runBatonNoT runs a baton command (bounded: 60 s) and returns its output
// and exit code; -1 and the error if it could not run or was killed.
func runBatonNoT(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, batonBin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		return fmt.Sprintf("%v\n%s", err, out), -1
	}
	return string(out), 0
}

// startLoad puts the address under load: 8 clients, half on a fresh
// connection per request, half keep-alive, every 10th request slow.
func startLoad(t *testing.T, addr string) *loadgen.Load {
	t.Helper()
	l := loadgen.Run(context.Background(), loadgen.Options{URL: "http://" + addr, Clients: 8, SlowEvery: 10, SlowMS: 50, Timeout: 15 * time.Second})
	t.Cleanup(func() { l.Stop() })
	waitSent(t, l, 50)
	return l
}

// waitSent waits (bounded) until the load has sent n requests in all.
func waitSent(t *testing.T, l *loadgen.Load, n int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); l.Snapshot().Sent < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("load stalled before %d requests: %+v", n, l.Snapshot())
		}
	}
}

// noFailures stops the load and checks that every request it sent
// succeeded, and that it sent some.
func noFailures(t *testing.T, l *loadgen.Load) loadgen.Result {
	t.Helper()
	r := l.Stop()
	t.Logf("load: sent %d, failed %d, by generation %v", r.Sent, r.Failed, r.Generations)
	if r.Failed != 0 || r.Sent == 0 {
		t.Errorf("sent %d, failed %d: %v; want none failed", r.Sent, r.Failed, r.Errors)
	}
	return r
}

// answeredBy waits (bounded) until the address answers from generation gen.
func answeredBy(t *testing.T, addr string, gen int) string {
	t.Helper()
	body, err := loadgen.WaitFor(context.Background(), "http://"+addr, func(body string) bool {
		return loadgen.Generation(body) == strconv.Itoa(gen)
	}, 10*time.Second)
	if err != nil {
		t.Fatalf("generation %d does not answer: %v", gen, err)
	}
	return body
}

// answer is one answer of the address (bounded).
func answer(addr string) (string, error) {
	return loadgen.WaitFor(context.Background(), "http://"+addr, func(string) bool { return true }, 10*time.Second)
}

// started lists the faultapp processes that ever ran for the service (and
// the grandchildren they started), by pid and start time.
func (s *service) started(t *testing.T) []procID {
	t.Helper()
	entries, err := os.ReadDir(s.pidDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []procID
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(s.pidDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var p procID
			if _, err := fmt.Sscan(line, &p.pid, &p.start); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// waitStarted waits (bounded) until n processes have recorded themselves.
func (s *service) waitStarted(t *testing.T, n int) []procID {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		procs := s.started(t)
		if len(procs) >= n {
			return procs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes recorded themselves, want %d: %v", len(procs), n, procs)
		}
	}
}

// procID names a process across pid reuse: its pid and its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot).
type procID struct {
	pid   int
	start uint64
}

// alive reports whether the process still runs (a zombie does not).
func (p procID) alive() bool {
	state, start, ok := procStat(p.pid)
	return ok && start == p.start && state != "Z"
}

func procStat(pid int) (state string, start uint64, ok bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return "", 0, false
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0], start, err == nil
}

// waitGone waits (bounded) until none of the processes runs.
func waitGone(t *testing.T, procs ...procID) {
	t.Helper()
	deadline := time.Now().Add(goneWait)
	for _, p := range procs {
		for p.alive() {
			if time.Now().After(deadline) {
				t.Errorf("process %d still runs %v after it should have gone", p.pid, goneWait)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// pidGone waits (bounded) until the process with this pid, started before
// now, is gone.
func pidGone(t *testing.T, pid int) {
	t.Helper()
	_, start, ok := procStat(pid)
	if !ok {
		return
	}
	waitGone(t, procID{pid, start})
}

// nothingLeft checks, once baton has exited, that no process of the
// service (nor baton's guard) runs any more and that nothing listens on
// the addresses.
func (s *service) nothingLeft(t *testing.T, addrs ...string) {
	t.Helper()
	procs := s.started(t)
	if len(procs) == 0 {
		t.Log("no process of the service ever ran")
	}
	waitGone(t, append(procs, s.guards...)...)
	for _, addr := range addrs {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Errorf("%s still listening after baton exited", addr)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s after baton exited: %v; want connection refused", addr, err)
		}
	}
	if _, err := os.Stat(s.sock); err == nil {
		t.Errorf("control socket %s left behind", s.sock)
	}
}

// fds lists the fds baton holds, with what each refers to.
func fds(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		n, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		// Sockets and pipes differ by inode; what matters is the kind. A
		// file deleted (or renamed over) since it was opened is still the
		// same fd.
		if k, _, ok := strings.Cut(target, ":["); ok {
			target = k
		}
		target = strings.TrimSuffix(target, " (deleted)")
		out[n] = target
	}
	return out
}

// fdKinds counts fds by what they refer to, for a readable comparison.
func fdKinds(m map[int]string) map[string]int {
	out := map[string]int{}
	for _, v := range m {
		out[v]++
	}
	return out
}

// settledFDs waits (bounded) until baton holds exactly as many fds of each
// kind as want, reports the difference if it never does, and returns what
// it holds.
func settledFDs(t *testing.T, pid int, want map[string]int, what string) map[string]int {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = fdKinds(fds(t, pid)); mapsEqual(got, want) {
			return got
		}
	}
	var diff []string
	for _, k := range sortedKeys(got, want) {
		if got[k] != want[k] {
			diff = append(diff, fmt.Sprintf("%s: %d, was %d", k, got[k], want[k]))
		}
	}
	t.Errorf("%s: baton's fds differ from before: %s", what, strings.Join(diff, "; "))
	return got
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys(ms ...map[string]int) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}
