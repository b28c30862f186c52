//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/supervisor"
)

// fakeSystemd is systemd's end of NOTIFY_SOCKET: a unixgram listener in
// t.TempDir() (as go-systemd's sdnotify_test.go does) that records every
// message with its sender's pid, which the kernel attaches (SO_PASSCRED).
type fakeSystemd struct {
	msgs chan notifyMessage
	mu   sync.Mutex
	seen []string // every message, for failure output
}

type notifyMessage struct {
	pid    int
	fields map[string]string
	files  []*os.File // fds sent along, kept only by newFakeFDStore
}

func (m notifyMessage) String() string {
	keys := make([]string, 0, len(m.fields))
	for k, v := range m.fields {
		keys = append(keys, k+"="+v)
	}
	return fmt.Sprintf("pid %d: %s", m.pid, strings.Join(keys, " | "))
}

// newFakeSystemd points NOTIFY_SOCKET at a fresh socket, for this process
// and the processes it starts, and clears WATCHDOG_*. Fds sent along (by
// FDSTORE=1) are closed at once.
func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	return startFakeSystemd(t, false)
}

// newFakeFDStore is newFakeSystemd that keeps the fds sent along, in each
// message's files, as systemd's fd store would; they are closed when the
// test ends.
func newFakeFDStore(t *testing.T) *fakeSystemd {
	t.Helper()
	return startFakeSystemd(t, true)
}

func startFakeSystemd(t *testing.T, keepFDs bool) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	f := &fakeSystemd{msgs: make(chan notifyMessage, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(f.msgs)
		buf, oob := make([]byte, 64<<10), make([]byte, 4096)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return // closed
			}
			m := notifyMessage{fields: map[string]string{}}
			scms, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, scm := range scms {
				if cred, err := unix.ParseUnixCredentials(&scm); err == nil {
					m.pid = int(cred.Pid)
				}
				if fds, err := unix.ParseUnixRights(&scm); err == nil {
					for _, fd := range fds {
						if keepFDs {
							m.files = append(m.files, os.NewFile(uintptr(fd), "stored"))
						} else {
							_ = unix.Close(fd) // a duplicate; the sender keeps its own
						}
					}
				}
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.fields[k] = v
				}
			}
			f.mu.Lock()
			f.seen = append(f.seen, m.String())
			f.mu.Unlock()
			select {
			case f.msgs <- m:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		for m := range f.msgs { // what no test took
			for _, file := range m.files {
				file.Close()
			}
		}
		if t.Failed() {
			f.mu.Lock()
			t.Logf("messages to systemd:\n  %s", strings.Join(f.seen, "\n  "))
			f.mu.Unlock()
		}
	})
	return f
}

// waitFor returns the first message that matches, skipping others,
// within timeout.
func (f *fakeSystemd) waitFor(t *testing.T, what string, timeout time.Duration, match func(notifyMessage) bool) notifyMessage {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-f.msgs:
			if !ok {
				t.Fatalf("socket closed while waiting for %s", what)
			}
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

// none fails if a message that matches arrives within d.
func (f *fakeSystemd) none(t *testing.T, what string, d time.Duration, match func(notifyMessage) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-f.msgs:
			if match(m) {
				t.Fatalf("unexpected %s: %s", what, m)
			}
		case <-deadline:
			return
		}
	}
}

// count counts the messages that match within d.
func (f *fakeSystemd) count(d time.Duration, match func(notifyMessage) bool) int {
	n := 0
	deadline := time.After(d)
	for {
		select {
		case m := <-f.msgs:
			if match(m) {
				n++
			}
		case <-deadline:
			return n
		}
	}
}

func has(key, value string) func(notifyMessage) bool {
	return func(m notifyMessage) bool { v, ok := m.fields[key]; return ok && v == value }
}

func isReady(m notifyMessage) bool { return m.fields["READY"] == "1" }

// fakeSupervisor is the notifier's view of a supervisor: a Status changed
// by the test and an event channel, changed and emitted in that order, as
// the event loop does.
type fakeSupervisor struct {
	events chan supervisor.Event

	mu      sync.Mutex
	st      supervisor.Status
	block   chan struct{} // non-nil: Status waits until it is closed
	stopped bool          // Status returns supervisor.ErrStopped
	subs    int
}

// newFakeSupervisor: generation 1 (pid 101) serving, not ready yet.
func newFakeSupervisor() *fakeSupervisor {
	return &fakeSupervisor{
		events: make(chan supervisor.Event, 64),
		st: supervisor.Status{Serving: 1, Generations: []supervisor.GenerationStatus{
			{ID: 1, State: "serving", PID: 101},
		}},
	}
}

func (f *fakeSupervisor) Subscribe(int) (<-chan supervisor.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs++
	return f.events, func() {}
}

func (f *fakeSupervisor) Status(ctx context.Context) (supervisor.Status, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return supervisor.Status{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return supervisor.Status{}, supervisor.ErrStopped
	}
	st := f.st
	st.Generations = append([]supervisor.GenerationStatus(nil), f.st.Generations...)
	return st, nil
}

// step changes the state, then emits evs.
func (f *fakeSupervisor) step(change func(st *supervisor.Status), evs ...supervisor.Event) {
	f.mu.Lock()
	change(&f.st)
	f.mu.Unlock()
	for _, ev := range evs {
		ev.Time = time.Now()
		f.events <- ev
	}
}

func (f *fakeSupervisor) setBlocked(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on && f.block == nil {
		f.block = make(chan struct{})
	} else if !on && f.block != nil {
		close(f.block)
		f.block = nil
	}
}

// gen changes generation id, adding it if it is new.
func gen(st *supervisor.Status, id int, change func(g *supervisor.GenerationStatus)) {
	for i := range st.Generations {
		if st.Generations[i].ID == id {
			change(&st.Generations[i])
			return
		}
	}
	g := supervisor.GenerationStatus{ID: id, State: "starting"}
	change(&g)
	st.Generations = append(st.Generations, g)
}

func drop(st *supervisor.Status, id int) {
	for i, g := range st.Generations {
		if g.ID == id {
			st.Generations = append(st.Generations[:i], st.Generations[i+1:]...)
			return
		}
	}
}

// Steps of the fake supervisor's life.
func (f *fakeSupervisor) ready(id, pid int) {
	f.step(func(st *supervisor.Status) {
		gen(st, id, func(g *supervisor.GenerationStatus) { g.PID, g.Ready = pid, true })
	}, supervisor.Event{Kind: supervisor.EventReady, Gen: id, PID: pid})
}

func (f *fakeSupervisor) spawnCandidate(id, pid int) {
	f.step(func(st *supervisor.Status) {
		st.Candidate = id
		gen(st, id, func(g *supervisor.GenerationStatus) { g.PID = pid })
	}, supervisor.Event{Kind: supervisor.EventSpawned, Gen: id, PID: pid})
}

func (f *fakeSupervisor) promote(id, pid int, queued bool) {
	var old int
	f.step(func(st *supervisor.Status) {
		old = st.Serving
		st.Serving, st.Candidate, st.Queued = id, 0, queued
		gen(st, id, func(g *supervisor.GenerationStatus) { g.State, g.PID, g.Ready = "serving", pid, true })
		gen(st, old, func(g *supervisor.GenerationStatus) { g.State = "stopping" })
	}, supervisor.Event{Kind: supervisor.EventReady, Gen: id, PID: pid},
		supervisor.Event{Kind: supervisor.EventPromoted, Gen: id, PID: pid, Replaces: old})
}

func (f *fakeSupervisor) failCandidate(id int, why string) {
	f.step(func(st *supervisor.Status) {
		st.Candidate = 0
		drop(st, id)
	}, supervisor.Event{Kind: supervisor.EventFailed, Gen: id, Reason: why},
		supervisor.Event{Kind: supervisor.EventStopping, Gen: id, Reason: "upgrade failed"})
}

// lockedBuffer is a log destination that tests may read while slog writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startNotifier makes a notifier on src and runs it until the test ends,
// checking that Run returns and leaves no goroutine behind.
func startNotifier(t *testing.T, src notifySource) (*systemdNotifier, *lockedBuffer) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	logs := &lockedBuffer{}
	n := newSystemdNotifier(src, slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		if t.Failed() {
			t.Logf("notifier log:\n%s", logs.String())
		}
	})
	return n, logs
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// reload calls Reloading with request and checks the RELOADING=1 message:
// MONOTONIC_USEC read during the call, and no READY=1 in it.
func reload(t *testing.T, sd *fakeSystemd, n *systemdNotifier, request func()) {
	t.Helper()
	before := monotonicUsec(t)
	called := false
	n.Reloading(func() { called = true; request() })
	after := monotonicUsec(t)
	if !called {
		t.Fatal("Reloading did not hand the upgrade to the supervisor")
	}
	m := sd.waitFor(t, "RELOADING=1", 5*time.Second, has("RELOADING", "1"))
	usec, err := strconv.ParseInt(m.fields["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%q, want a time between %d and %d (%v)", m.fields["MONOTONIC_USEC"], before, after, err)
	}
	if _, ok := m.fields["READY"]; ok {
		t.Errorf("READY in the RELOADING message: %s", m)
	}
	if m.pid != os.Getpid() {
		t.Errorf("RELOADING from pid %d, want %d", m.pid, os.Getpid())
	}
}

// TestNotifierReady: READY=1 once the serving generation is ready, and not
// before; the Status, not the event, decides.
func TestNotifierReady(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(f *fakeSupervisor)
	}{
		{"first ready", func(f *fakeSupervisor) {
			f.step(func(*supervisor.Status) {}, supervisor.Event{Kind: supervisor.EventSpawned, Gen: 1, PID: 101})
			time.Sleep(100 * time.Millisecond)
			f.ready(1, 101)
		}},
		// The event is lost (a subscriber that fell behind): Status is
		// read again while systemd waits.
		{"event lost", func(f *fakeSupervisor) {
			f.step(func(st *supervisor.Status) {
				gen(st, 1, func(g *supervisor.GenerationStatus) { g.Ready = true })
			})
		}},
		// A candidate became ready while the first generation was still
		// starting, and its promotion failed: nothing serves yet. Then
		// the first is ready.
		{"candidate ready, not promoted", func(f *fakeSupervisor) {
			f.spawnCandidate(2, 102)
			f.step(func(st *supervisor.Status) {
				gen(st, 2, func(g *supervisor.GenerationStatus) { g.Ready = true })
			}, supervisor.Event{Kind: supervisor.EventReady, Gen: 2, PID: 102})
			f.failCandidate(2, "route: no socket")
			time.Sleep(100 * time.Millisecond)
			f.ready(1, 101)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := newFakeSystemd(t)
			f := newFakeSupervisor()
			startNotifier(t, f)
			m := sd.waitFor(t, "a first STATUS", 5*time.Second, func(m notifyMessage) bool { return m.fields["STATUS"] != "" })
			if isReady(m) || m.fields["STATUS"] != "generation 1 starting (pid 101)" {
				t.Errorf("first message %s, want STATUS=generation 1 starting (pid 101) without READY", m)
			}
			go tc.run(f)
			m = sd.waitFor(t, "READY=1", 5*time.Second, func(m notifyMessage) bool {
				if isReady(m) {
					return true
				}
				if strings.Contains(m.fields["STATUS"], "generation 1 serving") {
					t.Errorf("serving without READY=1: %s", m)
				}
				return false
			})
			if got := m.fields["STATUS"]; !strings.HasSuffix(got, "generation 1 serving (pid 101)") {
				t.Errorf("READY with STATUS=%q, want ...generation 1 serving (pid 101)", got)
			}
			if m.pid != os.Getpid() {
				t.Errorf("READY from pid %d, want %d", m.pid, os.Getpid())
			}
			sd.none(t, "second READY=1", 200*time.Millisecond, isReady)
		})
	}
}

// startedNotifier runs a notifier whose first generation is ready and
// has been announced.
func startedNotifier(t *testing.T) (*fakeSystemd, *fakeSupervisor, *systemdNotifier, *lockedBuffer) {
	t.Helper()
	sd := newFakeSystemd(t)
	f := newFakeSupervisor()
	f.ready(1, 101)
	n, logs := startNotifier(t, f)
	sd.waitFor(t, "READY=1 at start", 5*time.Second, isReady)
	return sd, f, n, logs
}

// TestNotifierReloadPromoted: SIGHUP → RELOADING=1 with a fresh
// MONOTONIC_USEC; READY=1 only once the new generation is promoted.
func TestNotifierReloadPromoted(t *testing.T) {
	sd, f, n, _ := startedNotifier(t)
	reload(t, sd, n, func() { f.spawnCandidate(2, 102) })
	sd.waitFor(t, "STATUS while upgrading", 5*time.Second, has("STATUS", "upgrading to generation 2; generation 1 serving (pid 101)"))
	sd.none(t, "READY=1 while the candidate starts", 300*time.Millisecond, isReady)
	f.promote(2, 102, false)
	m := sd.waitFor(t, "READY=1 after promotion", 5*time.Second, isReady)
	if got := m.fields["STATUS"]; got != "generation 2 serving (pid 102)" {
		t.Errorf("STATUS=%q, want generation 2 serving (pid 102)", got)
	}
	sd.none(t, "second READY=1", 200*time.Millisecond, isReady)

	// Reloads go on working.
	reload(t, sd, n, func() { f.spawnCandidate(3, 103) })
	f.promote(3, 103, false)
	sd.waitFor(t, "READY=1 after the second promotion", 5*time.Second, isReady)
}

// TestNotifierReloadFailed: READY=1 also when the upgrade fails, with a
// STATUS that says so and who serves.
func TestNotifierReloadFailed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request func(f *fakeSupervisor)
		later   func(f *fakeSupervisor)
		want    string
	}{
		{"config broken", func(f *fakeSupervisor) {
			// Decided before Reloading even returns: no candidate at all.
			f.step(func(*supervisor.Status) {}, supervisor.Event{Kind: supervisor.EventFailed,
				Reason: "config not reloaded: baton.toml: line 1: expected '.' or ']'"})
		}, nil, "upgrade failed: config not reloaded: baton.toml: line 1: expected '.' or ']'; generation 1 serving (pid 101)"},
		{"candidate not ready", func(f *fakeSupervisor) { f.spawnCandidate(2, 102) },
			func(f *fakeSupervisor) { f.failCandidate(2, "not ready within 10s") },
			"upgrade failed: generation 2: not ready within 10s; generation 1 serving (pid 101)"},
		{"candidate exited", func(f *fakeSupervisor) { f.spawnCandidate(2, 102) },
			func(f *fakeSupervisor) { f.failCandidate(2, "exited before it was ready:\nexit status 1") },
			"upgrade failed: generation 2: exited before it was ready: exit status 1; generation 1 serving (pid 101)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, f, n, _ := startedNotifier(t)
			reload(t, sd, n, func() { tc.request(f) })
			if tc.later != nil {
				sd.none(t, "READY=1 before the upgrade is decided", 200*time.Millisecond, isReady)
				tc.later(f)
			}
			m := sd.waitFor(t, "READY=1 after the failed upgrade", 5*time.Second, isReady)
			if got := m.fields["STATUS"]; got != tc.want {
				t.Errorf("STATUS=%q\nwant   %q", got, tc.want)
			}
		})
	}
}

// TestNotifierReloadWaitsForQueued: no READY=1 while another upgrade is
// queued or started behind the one decided.
func TestNotifierReloadWaitsForQueued(t *testing.T) {
	t.Run("queued behind an upgrade in progress", func(t *testing.T) {
		sd, f, n, _ := startedNotifier(t)
		f.spawnCandidate(2, 102) // `baton upgrade`, say: no reload for systemd
		reload(t, sd, n, func() {
			f.step(func(st *supervisor.Status) { st.Queued = true })
		})
		// 2 is promoted with 3 queued, and 3 starts at once.
		f.promote(2, 102, true)
		f.spawnCandidate(3, 103)
		f.step(func(st *supervisor.Status) { st.Queued = false })
		sd.none(t, "READY=1 while the queued upgrade runs", 300*time.Millisecond, isReady)
		f.promote(3, 103, false)
		m := sd.waitFor(t, "READY=1 after the queued upgrade", 5*time.Second, isReady)
		if got := m.fields["STATUS"]; got != "generation 3 serving (pid 103)" {
			t.Errorf("STATUS=%q, want generation 3 serving (pid 103)", got)
		}
	})
	// An upgrade already in progress is decided after RELOADING=1 was
	// sent but before the supervisor has this reload's request: that
	// decision must not answer the reload.
	t.Run("older upgrade decided in between", func(t *testing.T) {
		sd, f, n, _ := startedNotifier(t)
		f.spawnCandidate(2, 102)
		reload(t, sd, n, func() {
			f.promote(2, 102, false)
			time.Sleep(200 * time.Millisecond) // the notifier reads a Status that knows no reload
			f.spawnCandidate(3, 103)
		})
		sd.none(t, "READY=1 before this reload's upgrade is decided", 300*time.Millisecond, isReady)
		f.promote(3, 103, false)
		m := sd.waitFor(t, "READY=1", 5*time.Second, isReady)
		if got := m.fields["STATUS"]; got != "generation 3 serving (pid 103)" {
			t.Errorf("STATUS=%q, want generation 3 serving (pid 103)", got)
		}
	})
	// The same with two SIGHUPs: the first reload's upgrade is decided
	// after the second RELOADING=1 went out; one READY=1 answers both,
	// once the second's upgrade is decided.
	t.Run("two reloads", func(t *testing.T) {
		sd, f, n, _ := startedNotifier(t)
		reload(t, sd, n, func() { f.spawnCandidate(2, 102) })
		reload(t, sd, n, func() {
			f.promote(2, 102, false)
			time.Sleep(200 * time.Millisecond)
			f.spawnCandidate(3, 103)
		})
		sd.none(t, "READY=1 before the second reload's upgrade is decided", 300*time.Millisecond, isReady)
		f.promote(3, 103, false)
		m := sd.waitFor(t, "READY=1", 5*time.Second, isReady)
		if got := m.fields["STATUS"]; got != "generation 3 serving (pid 103)" {
			t.Errorf("STATUS=%q, want generation 3 serving (pid 103)", got)
		}
		sd.none(t, "second READY=1", 200*time.Millisecond, isReady)
	})
}

// TestNotifierStatusLines: STATUS= follows the serving generation through
// a crash and its restart, with no second READY=1.
func TestNotifierStatusLines(t *testing.T) {
	sd, f, _, _ := startedNotifier(t)
	f.step(func(st *supervisor.Status) {
		gen(st, 1, func(g *supervisor.GenerationStatus) { g.PID, g.Ready = 0, false })
	}, supervisor.Event{Kind: supervisor.EventCrashed, Gen: 1, PID: 101, Reason: "exit status 3"})
	sd.waitFor(t, "crash STATUS", 5*time.Second, has("STATUS", "generation 1 crashed (exit status 3); restarting"))
	f.step(func(st *supervisor.Status) {
		gen(st, 1, func(g *supervisor.GenerationStatus) { g.PID, g.Restarts = 111, 1 })
	}, supervisor.Event{Kind: supervisor.EventSpawned, Gen: 1, PID: 111})
	sd.waitFor(t, "restart STATUS", 5*time.Second, has("STATUS", "generation 1 restarting (pid 111)"))
	f.ready(1, 111)
	m := sd.waitFor(t, "serving STATUS", 5*time.Second, has("STATUS", "generation 1 serving (pid 111)"))
	if isReady(m) {
		t.Errorf("READY=1 again after a restart: %s", m)
	}
}

// probationPromote promotes generation id (pid) onto probation, the
// serving generation kept as its standby when standby is set.
func (f *fakeSupervisor) probationPromote(id, pid int, standby bool) {
	var old int
	f.step(func(st *supervisor.Status) {
		old = st.Serving
		st.Serving, st.Candidate, st.Probation = id, 0, id
		st.ProbationEnd = time.Now().Add(time.Minute)
		gen(st, id, func(g *supervisor.GenerationStatus) { g.State, g.PID, g.Ready = "serving", pid, true })
		if standby {
			st.Standby = old
			gen(st, old, func(g *supervisor.GenerationStatus) { g.State = "standby" })
		} else {
			gen(st, old, func(g *supervisor.GenerationStatus) { g.State = "stopping" })
		}
	}, supervisor.Event{Kind: supervisor.EventReady, Gen: id, PID: pid},
		supervisor.Event{Kind: supervisor.EventPromoted, Gen: id, PID: pid, Replaces: old})
}

// TestNotifierProbation: STATUS= says which generation is on probation and
// which stands by; READY=1 answers a reload at promotion, once.
func TestNotifierProbation(t *testing.T) {
	sd, f, n, _ := startedNotifier(t)
	reload(t, sd, n, func() { f.spawnCandidate(2, 102) })
	f.probationPromote(2, 102, true)
	m := sd.waitFor(t, "READY=1 at promotion", 5*time.Second, isReady)
	if got := m.fields["STATUS"]; got != "generation 2 on probation (standby 1), serving (pid 102)" {
		t.Errorf("STATUS=%q, want generation 2 on probation (standby 1), serving (pid 102)", got)
	}
	f.step(func(st *supervisor.Status) {
		st.Probation, st.ProbationEnd, st.Standby = 0, time.Time{}, 0
		gen(st, 1, func(g *supervisor.GenerationStatus) { g.State = "draining" })
	}, supervisor.Event{Kind: supervisor.EventConfirmed, Gen: 2, PID: 102, Duration: time.Minute})
	m = sd.waitFor(t, "STATUS once the probation passed", 5*time.Second, has("STATUS", "generation 2 serving (pid 102)"))
	if isReady(m) {
		t.Errorf("READY=1 again at the end of the probation: %s", m)
	}

	// Without a standby (not every listener steered).
	f.step(func(st *supervisor.Status) { drop(st, 1) })
	f.spawnCandidate(3, 103)
	f.probationPromote(3, 103, false)
	sd.waitFor(t, "STATUS on probation without a standby", 5*time.Second,
		has("STATUS", "generation 3 on probation, serving (pid 103)"))
}

// TestNotifierRevert: a revert shows in STATUS= until the next promotion,
// the failed state above all else until a forced upgrade ends it; a
// refused reload is answered.
func TestNotifierRevert(t *testing.T) {
	const why = "instance 0 crashed during probation: exit status 2"
	revert := func(f *fakeSupervisor, failed string) {
		f.step(func(st *supervisor.Status) {
			st.Serving, st.Probation, st.ProbationEnd, st.Standby, st.Failed = 1, 0, time.Time{}, 0, failed
			gen(st, 1, func(g *supervisor.GenerationStatus) { g.State = "serving" })
			gen(st, 2, func(g *supervisor.GenerationStatus) { g.State = "draining" })
		}, supervisor.Event{Kind: supervisor.EventReverted, Gen: 2, PID: 102, Replaces: 1, Reason: why})
	}
	t.Run("to the standby", func(t *testing.T) {
		sd, f, _, _ := startedNotifier(t)
		f.spawnCandidate(2, 102)
		f.probationPromote(2, 102, true)
		revert(f, "")
		sd.waitFor(t, "STATUS after the revert", 5*time.Second,
			has("STATUS", "generation 2 reverted: "+why+"; generation 1 serving (pid 101)"))
		f.step(func(st *supervisor.Status) { drop(st, 2) }, supervisor.Event{Kind: supervisor.EventRetired, Gen: 2})
		sd.none(t, "a STATUS without the revert", 300*time.Millisecond, func(m notifyMessage) bool {
			return m.fields["STATUS"] != "" && !strings.HasPrefix(m.fields["STATUS"], "generation 2 reverted: ")
		})
		f.spawnCandidate(3, 103)
		f.promote(3, 103, false)
		sd.waitFor(t, "STATUS after the next promotion", 5*time.Second, has("STATUS", "generation 3 serving (pid 103)"))
	})
	t.Run("into the failed state", func(t *testing.T) {
		sd, f, n, _ := startedNotifier(t)
		failed := "1 reverts within 1h0m0s; the last: generation 2: " + why
		f.spawnCandidate(2, 102)
		f.probationPromote(2, 102, true)
		revert(f, failed)
		sd.waitFor(t, "STATUS in the failed state", 5*time.Second,
			has("STATUS", "FAILED: "+failed+"; generation 1 serving (pid 101)"))
		// A SIGHUP is refused, and answered; the failed state stays first.
		reload(t, sd, n, func() {
			f.step(func(*supervisor.Status) {}, supervisor.Event{Kind: supervisor.EventFailed,
				Reason: "service is in the failed state after repeated reverts (" + failed + "): force an upgrade (`baton upgrade --force`) to try again"})
		})
		m := sd.waitFor(t, "READY=1 after the refused reload", 5*time.Second, isReady)
		if got := m.fields["STATUS"]; got != "FAILED: "+failed+"; generation 1 serving (pid 101)" {
			t.Errorf("STATUS=%q after the refused reload", got)
		}
		// `baton upgrade --force` ends it.
		f.step(func(st *supervisor.Status) { st.Failed = "" })
		f.spawnCandidate(3, 103)
		f.promote(3, 103, false)
		sd.waitFor(t, "STATUS after the forced upgrade", 5*time.Second, has("STATUS", "generation 3 serving (pid 103)"))
	})
	t.Run("without a standby", func(t *testing.T) {
		// The replaced generation starts again as generation 3 while the
		// reverted one serves; its promotion ends the revert.
		sd, f, _, _ := startedNotifier(t)
		f.spawnCandidate(2, 102)
		f.probationPromote(2, 102, false)
		f.step(func(st *supervisor.Status) {
			st.Probation, st.ProbationEnd = 0, time.Time{}
			drop(st, 1)
		}, supervisor.Event{Kind: supervisor.EventReverted, Gen: 2, PID: 102, Replaces: 1, Reason: why})
		f.step(func(st *supervisor.Status) {
			st.Candidate = 3
			gen(st, 3, func(g *supervisor.GenerationStatus) { g.PID, g.RevertOf = 103, 2 })
		}, supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, PID: 103})
		sd.waitFor(t, "STATUS while the revert starts generation 3", 5*time.Second, has("STATUS",
			"generation 2 reverted: "+why+"; generation 3 starting in place of generation 2; generation 2 serving (pid 102)"))
		f.step(func(st *supervisor.Status) {
			st.Serving, st.Candidate = 3, 0
			gen(st, 3, func(g *supervisor.GenerationStatus) { g.State, g.Ready = "serving", true })
			gen(st, 2, func(g *supervisor.GenerationStatus) { g.State = "draining" })
		}, supervisor.Event{Kind: supervisor.EventPromoted, Gen: 3, PID: 103, Replaces: 2, Rollback: true, RevertOf: 2})
		sd.waitFor(t, "STATUS once the revert is done", 5*time.Second,
			has("STATUS", "generation 2 reverted: "+why+"; generation 3 serving (pid 103)"))
	})
}

// TestNotifierStopping: STOPPING=1 when baton begins to stop, whoever
// asked; nothing but that after it.
func TestNotifierStopping(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(f *fakeSupervisor, n *systemdNotifier)
		want string
	}{
		{"signal", func(f *fakeSupervisor, n *systemdNotifier) { n.Stopping() }, "stopping"},
		{"baton stop", func(f *fakeSupervisor, n *systemdNotifier) {
			f.step(func(st *supervisor.Status) { st.Stopping = true },
				supervisor.Event{Kind: supervisor.EventStopping, Gen: 1, PID: 101, Reason: "asked to stop"})
		}, "stopping"},
		{"gave up", func(f *fakeSupervisor, n *systemdNotifier) {
			f.step(func(st *supervisor.Status) {
				st.Stopping = true
				gen(st, 1, func(g *supervisor.GenerationStatus) { g.PID, g.Ready, g.GaveUp = 0, false, true })
			}, supervisor.Event{Kind: supervisor.EventGaveUp, Gen: 1, PID: 101, Reason: "exit status 1"})
		}, "generation 1 keeps crashing; gave up; stopping"},
		{"supervisor gone", func(f *fakeSupervisor, n *systemdNotifier) {
			f.mu.Lock()
			f.stopped = true
			f.mu.Unlock()
			f.step(func(*supervisor.Status) {}, supervisor.Event{Kind: supervisor.EventRetired, Gen: 1})
		}, "stopping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, f, n, _ := startedNotifier(t)
			tc.stop(f, n)
			m := sd.waitFor(t, "STOPPING=1", 5*time.Second, has("STOPPING", "1"))
			if got := m.fields["STATUS"]; got != tc.want {
				t.Errorf("STATUS=%q, want %q", got, tc.want)
			}
			if isReady(m) {
				t.Errorf("READY in the STOPPING message: %s", m)
			}
			n.Stopping() // a second time: nothing
			requested := false
			n.Reloading(func() { requested = true })
			if !requested {
				t.Error("Reloading did not pass the request on while stopping")
			}
			f.promote(2, 102, false)
			sd.none(t, "a message after STOPPING=1", 300*time.Millisecond, func(notifyMessage) bool { return true })
		})
	}
}

// TestWatchdogPings: WATCHDOG=1 at half of WATCHDOG_USEC while the loop
// answers, none while it does not, none when the watchdog is another
// process's.
func TestWatchdogPings(t *testing.T) {
	isPing := has("WATCHDOG", "1")
	for _, tc := range []struct {
		name  string
		pid   string
		pings bool
	}{
		{"no WATCHDOG_PID", "", true},
		{"WATCHDOG_PID is baton", strconv.Itoa(os.Getpid()), true},
		{"WATCHDOG_PID is another process", strconv.Itoa(os.Getppid()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := newFakeSystemd(t)
			t.Setenv("WATCHDOG_USEC", "200000")
			t.Setenv("WATCHDOG_PID", tc.pid)
			f := newFakeSupervisor()
			f.ready(1, 101)
			startNotifier(t, f)
			// About every 100 ms.
			n := sd.count(time.Second, isPing)
			if !tc.pings {
				if n != 0 {
					t.Errorf("%d pings for a watchdog that is not baton's", n)
				}
				return
			}
			if n < 5 || n > 15 {
				t.Errorf("%d pings in 1s with WATCHDOG_USEC=200000, want about 10", n)
			}
			// A wedged loop: no ping (one may be on its way).
			f.setBlocked(true)
			sd.count(150*time.Millisecond, isPing)
			if n := sd.count(600*time.Millisecond, isPing); n != 0 {
				t.Errorf("%d pings while the supervisor loop did not answer", n)
			}
			f.setBlocked(false)
			sd.waitFor(t, "pings once the loop answers again", 2*time.Second, isPing)
		})
	}
}

// TestWatchdogSkipLogged: a skipped ping is logged, once per episode.
func TestWatchdogSkipLogged(t *testing.T) {
	sd := newFakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "400000")
	f := newFakeSupervisor()
	f.ready(1, 101)
	_, logs := startNotifier(t, f)
	sd.waitFor(t, "READY=1", 5*time.Second, isReady)
	f.setBlocked(true)
	time.Sleep(time.Second)
	f.setBlocked(false)
	if n := strings.Count(logs.String(), "watchdog ping skipped"); n != 1 {
		t.Errorf("%d log lines about skipped pings, want 1:\n%s", n, logs)
	}
}

// TestNotifierNotUnderSystemd: without NOTIFY_SOCKET everything is a
// no-op, and the upgrade is still requested.
func TestNotifierNotUnderSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	f := newFakeSupervisor()
	n, logs := startNotifier(t, f)
	requested := false
	n.Reloading(func() { requested = true })
	n.Stopping()
	if !requested {
		t.Error("upgrade not requested")
	}
	f.mu.Lock()
	if f.subs != 0 {
		t.Errorf("subscribed %d times without systemd", f.subs)
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { n.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return at once without systemd")
	}
	if logs.String() != "" {
		t.Errorf("logged without systemd:\n%s", logs)
	}
}

// TestNotifierSendErrorLoggedOnce: a NOTIFY_SOCKET nobody listens on is
// logged once and baton goes on.
func TestNotifierSendErrorLoggedOnce(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
	t.Setenv("WATCHDOG_USEC", "")
	f := newFakeSupervisor()
	f.ready(1, 101)
	n, logs := startNotifier(t, f)
	for range 3 {
		requested := false
		n.Reloading(func() { requested = true })
		if !requested {
			t.Fatal("upgrade not requested")
		}
	}
	n.Stopping()
	time.Sleep(100 * time.Millisecond)
	if got := strings.Count(logs.String(), "cannot notify systemd"); got != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "missing.sock") {
		t.Errorf("the error does not name the socket:\n%s", logs)
	}
}

// TestSystemdNotifyEndToEnd: the real binary under a fake systemd. READY=1
// once generation 1 serves; SIGHUP → RELOADING=1 with a fresh
// MONOTONIC_USEC, READY=1 once generation 2 is promoted; SIGHUP with a
// broken config → RELOADING=1, READY=1 saying the upgrade failed; SIGTERM
// → STOPPING=1. Every message comes from baton itself, never from its
// children (they have baton's own notify socket).
func TestSystemdNotifyEndToEnd(t *testing.T) {
	sd := newFakeSystemd(t) // baton inherits NOTIFY_SOCKET
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	pid := b.cmd.Process.Pid
	const wait = 20 * time.Second
	fromBaton := func(match func(notifyMessage) bool) func(notifyMessage) bool {
		return func(m notifyMessage) bool {
			if m.pid != pid {
				t.Errorf("message from pid %d, not baton (%d): %s", m.pid, pid, m)
				return false
			}
			return match(m)
		}
	}

	m := sd.waitFor(t, "READY=1 at start", wait, fromBaton(isReady))
	if got := m.fields["STATUS"]; !strings.HasPrefix(got, "generation 1 serving (pid ") {
		t.Errorf("READY with STATUS=%q, want generation 1 serving", got)
	}

	// A good upgrade.
	writeHelloConfig(t, dir, "2", "")
	before := monotonicUsec(t)
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m = sd.waitFor(t, "RELOADING=1", wait, fromBaton(func(m notifyMessage) bool {
		if isReady(m) {
			t.Errorf("READY=1 before RELOADING=1: %s", m)
		}
		return m.fields["RELOADING"] == "1"
	}))
	if usec, err := strconv.ParseInt(m.fields["MONOTONIC_USEC"], 10, 64); err != nil || usec < before || usec > monotonicUsec(t) {
		t.Errorf("MONOTONIC_USEC=%q, want a time after %d (the signal)", m.fields["MONOTONIC_USEC"], before)
	}
	m = sd.waitFor(t, "READY=1 after the upgrade", wait, fromBaton(isReady))
	if got := m.fields["STATUS"]; !strings.HasPrefix(got, "generation 2 serving (pid ") {
		t.Errorf("READY with STATUS=%q, want generation 2 serving", got)
	}
	if got := b.waitLog("promoted")["gen"]; got != float64(2) {
		t.Errorf("promoted generation %v, want 2", got)
	}

	// A broken config: the upgrade fails at once, and systemd hears so.
	if err := os.WriteFile(cfg, []byte("[service\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before = monotonicUsec(t)
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m = sd.waitFor(t, "RELOADING=1 (broken config)", wait, fromBaton(func(m notifyMessage) bool {
		if isReady(m) {
			t.Errorf("READY=1 before RELOADING=1: %s", m)
		}
		return m.fields["RELOADING"] == "1"
	}))
	if usec, err := strconv.ParseInt(m.fields["MONOTONIC_USEC"], 10, 64); err != nil || usec < before {
		t.Errorf("MONOTONIC_USEC=%q, want a time after %d (the signal)", m.fields["MONOTONIC_USEC"], before)
	}
	m = sd.waitFor(t, "READY=1 after the failed upgrade", wait, fromBaton(isReady))
	if got := m.fields["STATUS"]; !strings.HasPrefix(got, "upgrade failed: config not reloaded: ") ||
		!strings.Contains(got, "; generation 2 serving (pid ") {
		t.Errorf("READY with STATUS=%q, want the failure and generation 2 serving", got)
	}

	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sd.waitFor(t, "STOPPING=1", wait, fromBaton(has("STOPPING", "1")))
	if code := b.wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}
