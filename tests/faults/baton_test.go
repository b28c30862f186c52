//go:build linux

package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

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
