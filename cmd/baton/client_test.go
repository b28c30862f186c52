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
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

// fakeBackend answers a fixed status and scripted upgrades.
type fakeBackend struct {
	status  supervisor.Status
	upgrade func(emit func(supervisor.Event)) (int, error)

	mu   sync.Mutex
	subs []chan supervisor.Event
}

func (f *fakeBackend) Status(context.Context) (supervisor.Status, error) { return f.status, nil }
func (f *fakeBackend) Upgrade(context.Context) (int, error)              { return f.upgrade(f.emit) }
func (f *fakeBackend) Rollback(context.Context) (int, error)             { return f.upgrade(f.emit) }
func (f *fakeBackend) Stop()                                             {}

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

func TestStatusCmd(t *testing.T) {
	started := time.Now().Add(-65 * time.Second)
	f := &fakeBackend{status: supervisor.Status{
		Service: "web", ConfigPath: "/etc/baton/web.toml", PID: 42, Serving: 2, Candidate: 3,
		Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered"}},
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "serving", PID: 1001, Ready: true, Started: started, ReadyAfter: 12 * time.Millisecond,
				Executable: "/srv/app", SHA256: "0123456789abcdef0123"},
			{ID: 3, State: "starting", Started: started, Restarts: 2},
		},
	}}
	sock := serveFake(t, f)
	var out bytes.Buffer
	if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^service web \(baton pid 42, config /etc/baton/web.toml\)$`,
		`(?m)^listener http +tcp +127\.0\.0\.1:8080 +steered$`,
		`(?m)^upgrade in progress: generation 3$`,
		`(?m)^ID +STATE +PID +READY +UPTIME +RESTARTS +EXECUTABLE +SHA256$`,
		`(?m)^2 +serving +1001 +12ms +1m5s +0 +/srv/app +0123456789ab$`,
		`(?m)^3 +starting +- +no +1m5s +2 +- +-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", re, out.String())
		}
	}

	out.Reset()
	if err := statusCmd([]string{"--socket", sock, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st control.StatusJSON
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.Service != "web" || len(st.Generations) != 2 || st.Upgrade.Candidate != 3 {
		t.Errorf("--json: %+v, %v", st, err)
	}
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
