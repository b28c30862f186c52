//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// fakeBackend answers a fixed status and scripted upgrades, promotes and
// aborts.
type fakeBackend struct {
	status  supervisor.Status
	upgrade func(emit func(supervisor.Event)) (int, error)
	force   func(emit func(supervisor.Event)) (int, error) // ForceUpgrade; nil: as upgrade
	gradual func(what string) error                        // "promote", "promote all" or "abort"
	// flags are what Flags answers; setFlag scripts SetFlag (reset false)
	// and ResetFlag (reset true), nil: done. Both under mu.
	flags   []supervisor.FlagStatus
	setFlag func(name string, percent int, reset bool) error

	mu   sync.Mutex
	subs []chan supervisor.Event
}

func (f *fakeBackend) Status(context.Context) (supervisor.Status, error) { return f.status, nil }
func (f *fakeBackend) Upgrade(context.Context) (int, error)              { return f.upgrade(f.emit) }
func (f *fakeBackend) Rollback(context.Context) (int, error)             { return f.upgrade(f.emit) }
func (f *fakeBackend) Stop()                                             {}

func (f *fakeBackend) ForceUpgrade(context.Context) (int, error) {
	if f.force == nil {
		return f.upgrade(f.emit)
	}
	return f.force(f.emit)
}

func (f *fakeBackend) Promote(_ context.Context, all bool) error {
	if all {
		return f.gradual("promote all")
	}
	return f.gradual("promote")
}

func (f *fakeBackend) Abort(context.Context) error { return f.gradual("abort") }

// Flags, SetFlag and ResetFlag hold mu: setFlag may change flags, and
// each connection has its goroutine.
func (f *fakeBackend) Flags(context.Context) ([]supervisor.FlagStatus, int64, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]supervisor.FlagStatus(nil), f.flags...), 7, "/run/baton/web.flags.json", nil
}

func (f *fakeBackend) SetFlag(_ context.Context, name string, percent int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setFlag == nil {
		return nil
	}
	return f.setFlag(name, percent, false)
}

func (f *fakeBackend) ResetFlag(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setFlag == nil {
		return nil
	}
	return f.setFlag(name, 0, true)
}

func (f *fakeBackend) Subscribe(n int) (<-chan supervisor.Event, func()) {
	ch := make(chan supervisor.Event, n)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

func (f *fakeBackend) emit(ev supervisor.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// serveFake runs a control server for b and returns its socket.
func serveFake(t *testing.T, b control.Backend) string {
	t.Helper()
	s, err := control.Listen(control.ServerOptions{Path: filepath.Join(t.TempDir(), "c.sock"), GID: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(b) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return s.Path()
}

func TestUpgradeCmdWait(t *testing.T) {
	f := &fakeBackend{}
	sock := serveFake(t, f)

	f.upgrade = func(emit func(supervisor.Event)) (int, error) {
		for _, ev := range []supervisor.Event{
			{Kind: supervisor.EventSpawned, Gen: 3, PID: 1234},
			{Kind: supervisor.EventReady, Gen: 3, PID: 1234, Duration: 12 * time.Millisecond},
			{Kind: supervisor.EventPromoted, Gen: 3, PID: 1234, Replaces: 2},
			{Kind: supervisor.EventDraining, Gen: 2, PID: 1001},
			{Kind: supervisor.EventStopping, Gen: 2, PID: 1001, Reason: "replaced by generation 3"},
			{Kind: supervisor.EventRetired, Gen: 2},
		} {
			emit(ev)
		}
		return 3, nil
	}
	var out bytes.Buffer
	if err := upgradeCmd([]string{"--socket", sock, "--wait", "--timeout", "10s"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := `generation 3: spawned (pid 1234)
generation 3: ready after 12ms
generation 3: promoted, replacing generation 2
generation 2: draining
generation 2: stopping (replaced by generation 3)
generation 2: retired
upgrade complete: generation 3 serving
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}

	f.upgrade = func(emit func(supervisor.Event)) (int, error) {
		emit(supervisor.Event{Kind: supervisor.EventFailed, Gen: 4, PID: 1300, Reason: "exited with status 1"})
		return 0, fmt.Errorf("%w: generation 4: exited with status 1", supervisor.ErrUpgradeFailed)
	}
	out.Reset()
	err := rollbackCmd([]string{"--socket", sock, "--wait"}, &out, io.Discard)
	var ue usageError
	if err == nil || errors.As(err, &ue) || err.Error() != "rollback failed: generation 4: exited with status 1" {
		t.Errorf("failed rollback: %v, want a plain error (exit 1)", err)
	}
	if out.String() != "generation 4: failed: exited with status 1\n" {
		t.Errorf("output %q", out.String())
	}

	out.Reset()
	if err := upgradeCmd([]string{"--socket", sock}, &out, io.Discard); err != nil || out.String() != "upgrade started\n" {
		t.Errorf("upgrade without wait: %v %q", err, out.String())
	}
}

// TestUpgradeCmdProbation: `upgrade --wait` follows the probation to its
// end (exit 0) or to a revert (exit 1, with the reason); in the failed
// state an upgrade is refused (exit 1) unless forced.
func TestUpgradeCmdProbation(t *testing.T) {
	promoted := []supervisor.Event{
		{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003},
		{Kind: supervisor.EventReady, Gen: 3, PID: 1003, Duration: 12 * time.Millisecond},
		{Kind: supervisor.EventPromoted, Gen: 3, PID: 1003, Replaces: 2},
	}
	emitAll := func(emit func(supervisor.Event), evs ...supervisor.Event) {
		for _, ev := range evs {
			emit(ev)
		}
	}
	f := &fakeBackend{}
	sock := serveFake(t, f)

	t.Run("passed", func(t *testing.T) {
		f.upgrade = func(emit func(supervisor.Event)) (int, error) {
			emitAll(emit, promoted...)
			emitAll(emit,
				supervisor.Event{Kind: supervisor.EventAnalysis, Gen: 3, Reason: "pass: error_ratio: error ratio 0.001 <= 0.012"},
				supervisor.Event{Kind: supervisor.EventConfirmed, Gen: 3, PID: 1003, Duration: 5 * time.Minute},
				supervisor.Event{Kind: supervisor.EventDraining, Gen: 2, PID: 1002},
				supervisor.Event{Kind: supervisor.EventRetired, Gen: 2, Duration: 5 * time.Minute})
			return 3, nil
		}
		var out bytes.Buffer
		if err := upgradeCmd([]string{"--socket", sock, "--wait"}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		want := `generation 3: spawned (pid 1003)
generation 3: ready after 12ms
generation 3: promoted, replacing generation 2
generation 3: analysis: pass: error_ratio: error ratio 0.001 <= 0.012
generation 3: probation passed (5m0s)
generation 2: draining
generation 2: retired
upgrade complete: generation 3 serving
`
		if out.String() != want {
			t.Errorf("got\n%s\nwant\n%s", out.String(), want)
		}
	})

	t.Run("reverted", func(t *testing.T) {
		f.upgrade = func(emit func(supervisor.Event)) (int, error) {
			emitAll(emit, promoted...)
			emit(supervisor.Event{Kind: supervisor.EventReverted, Gen: 3, PID: 1003, Replaces: 2,
				Reason: "instance 0 crashed during probation: exit status 2"})
			return 0, fmt.Errorf("%w: generation 3 reverted during probation: instance 0 crashed during probation: exit status 2",
				supervisor.ErrUpgradeFailed)
		}
		var out bytes.Buffer
		err := upgradeCmd([]string{"--socket", sock, "--wait"}, &out, io.Discard)
		var ue usageError
		if err == nil || errors.As(err, &ue) ||
			err.Error() != "upgrade failed: generation 3 reverted during probation: instance 0 crashed during probation: exit status 2" {
			t.Errorf("reverted upgrade: %v, want a plain error (exit 1)", err)
		}
		if !strings.HasSuffix(out.String(), "generation 3: promoted, replacing generation 2\n"+
			"generation 3: reverted: instance 0 crashed during probation: exit status 2 (back to generation 2)\n") {
			t.Errorf("output\n%s", out.String())
		}
	})

	// The failed state: refused, at once without --wait, by the
	// supervisor with it; --force goes through ForceUpgrade.
	f.status.Failed = "3 reverts within 1h0m0s; the last: generation 5: instance 0 crashed during probation: exit status 2"
	refusal := fmt.Sprintf("%s (%s): force an upgrade (`baton upgrade --force`) to try again", supervisor.ErrFailedState, f.status.Failed)
	f.upgrade = func(emit func(supervisor.Event)) (int, error) {
		emit(supervisor.Event{Kind: supervisor.EventFailed, Reason: refusal})
		return 0, fmt.Errorf("%w: %s", supervisor.ErrUpgradeFailed, refusal)
	}
	forced := make(chan struct{}, 2)
	f.force = func(emit func(supervisor.Event)) (int, error) {
		forced <- struct{}{}
		emit(supervisor.Event{Kind: supervisor.EventPromoted, Gen: 6, PID: 1006, Replaces: 0})
		return 6, nil
	}
	for _, args := range [][]string{{}, {"--wait"}} {
		var out bytes.Buffer
		err := upgradeCmd(append([]string{"--socket", sock}, args...), &out, io.Discard)
		var ue usageError
		if err == nil || errors.As(err, &ue) || err.Error() != "upgrade failed: "+refusal {
			t.Errorf("upgrade %q in the failed state: %v, want a plain error (exit 1) with the refusal", args, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--force"}, "upgrade started (forced: the failed state, if any, is over)\n"},
		{[]string{"--force", "--wait"}, "generation 6: promoted\nupgrade complete: generation 6 serving\n"},
	} {
		var out bytes.Buffer
		if err := upgradeCmd(append([]string{"--socket", sock}, tc.args...), &out, io.Discard); err != nil || out.String() != tc.want {
			t.Errorf("upgrade %q: %v, %q; want %q", tc.args, err, out.String(), tc.want)
		}
		within(t, forced, 5*time.Second, "ForceUpgrade called")
	}
}

// TestClientUsage: usage and connection errors exit 2 (a usageError) with a
// message that starts with the subcommand.
func TestClientUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cmd  func([]string, io.Writer, io.Writer) error
		args []string
		want string
	}{
		{statusCmd, nil, "status: -c FILE or --socket PATH is required"},
		{statusCmd, []string{"-c", "x.toml", "--socket", "/x"}, "status: give -c FILE or --socket PATH, not both"},
		{statusCmd, []string{"--socket", "/x", "extra"}, `status: unexpected argument "extra"`},
		{statusCmd, []string{"--socket", "/x", "--wait"}, "flag provided but not defined: -wait"},
		{upgradeCmd, []string{"--socket", "/x", "--timeout", "5s"}, "upgrade: --timeout needs --wait"},
		{upgradeCmd, []string{"--socket", "/x", "--wait", "--timeout", "-5s"}, "upgrade: --timeout -5s is out of range"},
		{stopCmd, []string{"--socket", "/x", "--json"}, "flag provided but not defined: -json"},
		{stopCmd, []string{"-c", filepath.Join(dir, "none.toml")}, "stop: find the control socket: "},
		{statusCmd, []string{"--socket", filepath.Join(dir, "none.sock")},
			"status: connect to " + filepath.Join(dir, "none.sock") + ": no such file or directory (is baton running?)"},
		{rollbackCmd, []string{"--socket", filepath.Join(dir, "none.sock"), "--wait"}, "rollback: connect to "},
		{promoteCmd, nil, "promote: -c FILE or --socket PATH is required"},
		{promoteCmd, []string{"--socket", "/x", "--wait"}, "flag provided but not defined: -wait"},
		{promoteCmd, []string{"--socket", "/x", "next"}, `promote: unexpected argument "next"`},
		{abortCmd, []string{"--socket", "/x", "--all"}, "flag provided but not defined: -all"},
		{abortCmd, []string{"--socket", filepath.Join(dir, "none.sock")}, "abort: connect to "},
		{promoteCmd, []string{"--socket", filepath.Join(dir, "none.sock"), "--all"}, "promote: connect to "},
		{rollbackCmd, []string{"--socket", "/x", "--force"}, "flag provided but not defined: -force"},
		{statusCmd, []string{"--socket", "/x", "--force"}, "flag provided but not defined: -force"},
		{upgradeCmd, []string{"--self", "--socket", "/x", "--force"}, "upgrade: --self cannot --force"},
		{upgradeCmd, []string{"--socket", filepath.Join(dir, "none.sock"), "--force"}, "upgrade: connect to "},
	} {
		err := tc.cmd(tc.args, io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want a usage error starting with %q", tc.args, err, tc.want)
		}
	}
}

// TestClientAgainstSupervisor drives a real supervisor (in this process,
// with the hello example as its service) through its control socket: the
// socket is found from the config, `upgrade --wait` succeeds and then
// fails (exit 1) on a version that cannot start, `rollback --wait` goes
// back, and `stop` ends Run.
func TestClientAgainstSupervisor(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeHelloConfig(t, dir, "1", "") // its [control] socket is in dir
	cfg, err := supervisor.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sock := cfg.Control.Socket
	logs := &strings.Builder{}
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	sup, err := supervisor.New(supervisor.Options{ConfigPath: cfgPath, Config: cfg, Logger: log, Shim: batonBin})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(control.ServerOptions{Path: cfg.Control.Socket, GID: cfg.Control.GID, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sup) }()
	ran := make(chan error, 1)
	go func() { ran <- sup.Run(context.Background()) }()
	defer func() {
		sup.Stop()
		srv.Close()
		if t.Failed() {
			logMu.Lock()
			t.Logf("baton log:\n%s", logs.String())
			logMu.Unlock()
		}
	}()

	// Ready once the status shows a ready serving generation.
	var st control.StatusJSON
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var out bytes.Buffer
		if statusCmd([]string{"-c", cfgPath, "--json"}, &out, io.Discard) == nil &&
			json.Unmarshal(out.Bytes(), &st) == nil && st.Serving == 1 && len(st.Generations) == 1 && st.Generations[0].Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready generation 1 in the status: %+v", st)
		}
	}
	if g := st.Generations[0]; g.Executable != helloBin || len(g.SHA256) != 64 || len(g.PIDs) != 1 || st.Listeners[0].Address == "" {
		t.Errorf("status %+v", st)
	}

	var out bytes.Buffer
	writeHelloConfig(t, dir, "2", "")
	if err := upgradeCmd([]string{"-c", cfgPath, "--wait", "--timeout", "30s"}, &out, io.Discard); err != nil {
		t.Fatalf("upgrade --wait: %v\n%s", err, out.String())
	}
	want := `generation 2: spawned \(pid \d+\)
generation 2: ready after \S+
generation 2: promoted, replacing generation 1
(generation 1: draining
)?generation 1: stopping \(replaced by generation 2\)
generation 1: retired
upgrade complete: generation 2 serving
$`
	t.Logf("upgrade --wait printed:\n%s", out.String())
	if !regexp.MustCompile(want).MatchString(out.String()) {
		t.Errorf("upgrade --wait printed\n%s\nwant\n%s", out.String(), want)
	}

	// A version that exits at once: the upgrade fails, exit 1.
	content, _ := os.ReadFile(cfgPath)
	bad := strings.Replace(string(content), fmt.Sprintf("command = [%q]", helloBin), `command = ["/bin/false"]`, 1)
	os.WriteFile(cfgPath, []byte(bad), 0o644)
	out.Reset()
	err = upgradeCmd([]string{"-c", cfgPath, "--wait", "--timeout", "30s"}, &out, io.Discard)
	var ue usageError
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "upgrade failed: generation 3: ") {
		t.Errorf("failing upgrade: %v, want a plain error (exit 1)\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "generation 3: failed: ") {
		t.Errorf("failing upgrade printed\n%s", out.String())
	}

	// Back to generation 1's config.
	out.Reset()
	if err := rollbackCmd([]string{"--socket", sock, "--wait"}, &out, io.Discard); err != nil {
		t.Fatalf("rollback --wait: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "generation 4: promoted (rollback), replacing generation 2\n") ||
		!strings.HasSuffix(out.String(), "rollback complete: generation 4 serving\n") {
		t.Errorf("rollback --wait printed\n%s", out.String())
	}

	out.Reset()
	if err := stopCmd([]string{"-c", cfgPath}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run after stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after stop")
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
	if err := <-served; err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestUpgradeCmdWaitCanary: the lines of a canary upgrade of a service of
// two instances: the step numbers from the events, the instance numbers
// because the status shows several.
func TestUpgradeCmdWaitCanary(t *testing.T) {
	f := &fakeBackend{status: canaryStatus(time.Now())} // at step 2/3, 50%, holding
	sock := serveFake(t, f)
	f.upgrade = func(emit func(supervisor.Event)) (int, error) {
		for _, ev := range []supervisor.Event{
			{Kind: supervisor.EventSpawned, Gen: 3, Instance: 0, PID: 1003},
			{Kind: supervisor.EventSpawned, Gen: 3, Instance: 1, PID: 1004},
			{Kind: supervisor.EventReady, Gen: 3, Instance: 1, PID: 1004, Duration: 8 * time.Millisecond},
			{Kind: supervisor.EventReady, Gen: 3, Instance: 0, PID: 1003, Duration: 9 * time.Millisecond},
			{Kind: supervisor.EventStep, Gen: 3, PID: 1003, Weight: 10, Duration: 30 * time.Second, Step: 1, Steps: 3},
			{Kind: supervisor.EventStep, Gen: 3, PID: 1003, Weight: 50, Step: 2, Steps: 3},
			{Kind: supervisor.EventPromoted, Gen: 3, PID: 1003, Replaces: 2},
			{Kind: supervisor.EventDraining, Gen: 2, PID: 1001},
			{Kind: supervisor.EventStopping, Gen: 2, Instance: 1, PID: 1002, Reason: "replaced by generation 3"},
			{Kind: supervisor.EventRetired, Gen: 2},
		} {
			emit(ev)
		}
		return 3, nil
	}
	var out bytes.Buffer
	if err := upgradeCmd([]string{"--socket", sock, "--wait"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := `generation 3, instance 0: spawned (pid 1003)
generation 3, instance 1: spawned (pid 1004)
generation 3, instance 1: ready after 8ms
generation 3, instance 0: ready after 9ms
generation 3 at 10% (step 1/3, pause 30s)
generation 3 at 50% (step 2/3, holding until ` + "`baton promote`" + `)
generation 3: promoted, replacing generation 2
generation 2: draining
generation 2, instance 1: stopping (replaced by generation 3)
generation 2: retired
upgrade complete: generation 3 serving
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestPromoteAbortCmd: done is exit 0 with what happens next; nothing to
// act on is exit 1 with the supervisor's reason.
func TestPromoteAbortCmd(t *testing.T) {
	asked := make(chan string, 10)
	var refuse atomic.Pointer[error]
	f := &fakeBackend{gradual: func(what string) error {
		asked <- what
		if err := refuse.Load(); err != nil {
			return *err
		}
		return nil
	}}
	sock := serveFake(t, f)
	tests := []struct {
		cmd  func([]string, io.Writer, io.Writer) error
		args []string
		want string
	}{
		{promoteCmd, nil, "the canary moves on to its next step (`baton status` shows it)\n"},
		{promoteCmd, []string{"--all"}, "the canary moves on to 100% once all its instances are ready\n"},
		{abortCmd, nil, "upgrade aborted: the previous generation gets every new connection back (during a probation, by a revert), the new one drains\n"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := tt.cmd(append([]string{"--socket", sock}, tt.args...), &out, io.Discard); err != nil || out.String() != tt.want {
			t.Errorf("%q: %v, %q; want %q", tt.args, err, out.String(), tt.want)
		}
	}
	for _, want := range []string{"promote", "promote all", "abort"} {
		if got := <-asked; got != want { // buffered: each was asked before its answer came
			t.Errorf("the supervisor was asked %q, want %q", got, want)
		}
	}

	err := fmt.Errorf("%w: nothing to promote or abort", supervisor.ErrNoCanary)
	refuse.Store(&err)
	for name, cmd := range map[string]func([]string, io.Writer, io.Writer) error{"promote": promoteCmd, "abort": abortCmd} {
		var out bytes.Buffer
		err := cmd([]string{"--socket", sock}, &out, io.Discard)
		var ue usageError
		if err == nil || errors.As(err, &ue) || err.Error() != name+" failed: no upgrade in progress: nothing to promote or abort" {
			t.Errorf("%s without an upgrade: %v, want a plain error (exit 1)", name, err)
		}
		if out.Len() != 0 {
			t.Errorf("%s without an upgrade printed %q", name, out.String())
		}
	}
}

// TestCanaryAgainstSupervisor drives a canary upgrade of a real supervisor
// (in this process, two instances of the hello example per generation)
// through the CLI, with traffic: `upgrade --wait` shows the steps and
// instances, `status` the hold and the share of the connections sent,
// `promote` ends the hold; a second upgrade is undone by `abort`, after
// which `promote` has nothing to act on.
func TestCanaryAgainstSupervisor(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	cfgPath := filepath.Join(dir, "canary.toml")
	writeConfig := func(version string) {
		t.Helper()
		content := fmt.Sprintf(`[service]
command = [%q]
environment = { GREETING_VERSION = %q }
instances = 2

[[listener]]
name = "http"
address = "127.0.0.1:0"

[readiness]
timeout = "10s"

[upgrade]
strategy = "canary"
steps = [{ weight = 10, pause = "1s" }, { weight = 50 }]

[control]
socket = %q
`, helloBin, version, sock)
		if err := os.WriteFile(cfgPath, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("1")
	runInProcess(t, cfgPath)

	status := func() control.StatusJSON { t.Helper(); return statusJSON(t, sock) }
	until := func(what string, ok func(control.StatusJSON) bool) control.StatusJSON {
		t.Helper()
		return waitStatus(t, sock, what, ok)
	}
	candidate := func(st control.StatusJSON) *control.GenerationJSON {
		for i, g := range st.Generations {
			if st.Upgrade != nil && g.ID == st.Upgrade.Candidate {
				return &st.Generations[i]
			}
		}
		return nil
	}
	st := until("generation 1 ready", func(st control.StatusJSON) bool {
		return st.Serving == 1 && len(st.Generations) == 1 && st.Generations[0].Ready
	})
	// The first generation replaced none: promoted once ready, as blue-green.
	if g := st.Generations[0]; g.Strategy != "blue-green" || len(g.PIDs) != 2 || len(g.Instances) != 2 || g.Weight != 100 {
		t.Errorf("generation 1: %+v", g)
	}
	url := "http://" + st.Listeners[0].Address + "/"

	type result struct {
		out string
		err error
	}
	upgrade := func() <-chan result {
		done := make(chan result, 1)
		go func() {
			var out bytes.Buffer
			err := upgradeCmd([]string{"--socket", sock, "--wait", "--timeout", "60s"}, &out, io.Discard)
			done <- result{out.String(), err}
		}()
		return done
	}

	// Generation 2 holds at 50% once its 10% step has paused.
	writeConfig("2")
	upgraded := upgrade()
	until("generation 2 holding at step 2/2", func(st control.StatusJSON) bool {
		g := candidate(st)
		return g != nil && g.Step == 2 && g.Holding
	})
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	answered := map[string]int{}
	const requests = 100
	for range requests {
		gen, err := loadgen.Get(context.Background(), hc, url)
		if err != nil {
			t.Fatalf("GET %s during the canary: %v", url, err)
		}
		answered[gen]++
	}
	if answered["1"] == 0 || answered["2"] == 0 || answered["1"]+answered["2"] != requests {
		t.Errorf("answers at 50%%: %v, want both generations", answered)
	}
	st = status()
	g := candidate(st)
	switch mode := st.Listeners[0].Mode; {
	case mode == supervisor.ModeSteered && (g.ShareEstimated || g.Share == nil || g.Connections == 0):
		t.Errorf("steered: the candidate's share is not measured: %+v", g)
	case mode == supervisor.ModeShared && !g.ShareEstimated:
		t.Errorf("shared: the candidate's share is not marked estimated: %+v", g)
	}
	var out bytes.Buffer
	if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	t.Logf("status at the hold:\n%s", out.String())
	if !strings.Contains(out.String(), "upgrade in progress: generation 2 (canary), step 2/2 (50%), holding until `baton promote`\n") ||
		!regexp.MustCompile(`(?m)^  generation 2: weight 50%, share ~?\d`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^2 +1 +running +\d+ +\S+ +yes +0 +-$`).MatchString(out.String()) {
		t.Errorf("status at the hold:\n%s", out.String())
	}

	out.Reset()
	if err := promoteCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatalf("promote: %v", err)
	}
	r := within(t, upgraded, 30*time.Second, "upgrade --wait after promote")
	t.Logf("upgrade --wait printed:\n%s", r.out)
	if r.err != nil {
		t.Fatalf("upgrade --wait: %v", r.err)
	}
	for _, re := range []string{
		`(?m)^generation 2, instance 0: spawned \(pid \d+\)$`,
		`(?m)^generation 2, instance 1: ready after \S+$`,
		`(?m)^generation 2 at 10% \(step 1/2, pause 1s\)$`,
		"(?m)^generation 2 at 50% \\(step 2/2, holding until `baton promote`\\)$",
		`(?m)^generation 2: promoted, replacing generation 1$`,
		`(?m)^generation 1, instance \d: stopping \(.+\)$`,
		`(?m)^generation 1: retired$`,
		`upgrade complete: generation 2 serving\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.out) {
			t.Errorf("upgrade --wait printed no line matching %s", re)
		}
	}

	// Generation 3 is undone at its first step; generation 2 keeps
	// serving, and there is nothing left to promote.
	writeConfig("3")
	upgraded = upgrade()
	until("generation 3 at its first step", func(st control.StatusJSON) bool {
		g := candidate(st)
		return g != nil && g.Step == 1
	})
	out.Reset()
	if err := abortCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatalf("abort: %v", err)
	}
	r = within(t, upgraded, 30*time.Second, "upgrade --wait after abort")
	var ue usageError
	if r.err == nil || errors.As(r.err, &ue) || !strings.HasPrefix(r.err.Error(), "upgrade failed: generation 3: ") {
		t.Errorf("aborted upgrade --wait: %v, want a plain error (exit 1)\n%s", r.err, r.out)
	}
	err := promoteCmd([]string{"--socket", sock}, io.Discard, io.Discard)
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "promote failed: ") {
		t.Errorf("promote after the abort: %v, want a plain error (exit 1)", err)
	}
	st = until("generation 3 gone", func(st control.StatusJSON) bool { return len(st.Generations) == 1 })
	if st.Serving != 2 || st.Upgrade != nil || st.Generations[0].Weight != 100 {
		t.Errorf("after the abort: %+v", st)
	}
	for range 10 {
		if gen, err := loadgen.Get(context.Background(), hc, url); err != nil || gen != "2" {
			t.Errorf("GET after the abort: generation %q, %v; want 2", gen, err)
		}
	}
}

// runInProcess runs a supervisor for cfgPath in this process, with its
// control socket, until the test ends.
func runInProcess(t *testing.T, cfgPath string) {
	t.Helper()
	cfg, err := supervisor.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncWriter{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	sup, err := supervisor.New(supervisor.Options{ConfigPath: cfgPath, Config: cfg, Logger: log, Shim: batonBin})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(control.ServerOptions{Path: cfg.Control.Socket, GID: cfg.Control.GID, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sup) }()
	ran := make(chan error, 1)
	go func() { ran <- sup.Run(context.Background()) }()
	t.Cleanup(func() {
		sup.Stop()
		if err := within(t, ran, 30*time.Second, "Run after Stop"); err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if err := within(t, served, 10*time.Second, "Serve after Close"); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("baton log:\n%s", logs.String())
		}
	})
}

// syncWriter collects a log written from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// within returns what ch yields, failing the test if nothing comes within d.
func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing within %s", what, d)
		var zero T
		return zero
	}
}

// statusJSON is `baton status --json` of the baton on sock, decoded.
func statusJSON(t *testing.T, sock string) control.StatusJSON {
	t.Helper()
	var out bytes.Buffer
	var st control.StatusJSON
	if err := statusCmd([]string{"--socket", sock, "--json"}, &out, io.Discard); err != nil {
		t.Fatalf("status: %v", err)
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls the status of the baton on sock until ok; it fails the
// test after 30s.
func waitStatus(t *testing.T, sock, what string, ok func(control.StatusJSON) bool) control.StatusJSON {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := statusJSON(t, sock)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; status %+v", what, st)
		}
	}
}
