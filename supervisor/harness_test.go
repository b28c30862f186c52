//go:build linux

package supervisor_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/supervisor"
)

// app describes one version of the test service as written into the
// config file: the environment steers runApp.
type app struct {
	Version    string
	Env        map[string]string // extra APP_* variables
	Readiness  string            // TOML body of [readiness]; default notify with a 10s timeout
	Steering   string            // "bpf" (default) or "shared"
	Listeners  string            // TOML [[listener]] blocks; default one tcp listener on 127.0.0.1:0
	Drain      string            // TOML body of [drain]
	Restart    string            // TOML body of [restart]
	RawCommand []string          // replaces the test binary as the command
	Instances  int               // [service] instances; 0: the default
	Upgrade    string            // more TOML lines for [upgrade] (strategy, steps)
	Extra      string            // more TOML sections ([health], [analysis], [hooks], [flags])
	// Control is [control] socket: the harness puts it in the test's
	// directory (the flags files go next to it).
	Control string
}

func (a app) toml() string {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := []string{exe}
	if a.RawCommand != nil {
		cmd = a.RawCommand
	}
	quoted := make([]string, len(cmd))
	for i, c := range cmd {
		quoted[i] = fmt.Sprintf("%q", c)
	}
	env := map[string]string{"APP_HELPER": "1", "APP_VERSION": a.Version}
	for k, v := range a.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var envs []string
	for _, k := range keys {
		envs = append(envs, fmt.Sprintf("%s = %q", k, env[k]))
	}
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	instances := ""
	if a.Instances > 0 {
		instances = fmt.Sprintf("instances = %d", a.Instances)
	}
	return fmt.Sprintf(`[service]
command = [%s]
environment = { %s }
%s

%s

[readiness]
%s

[upgrade]
steering = %q
%s

[drain]
%s

[restart]
%s

[control]
socket = %q

%s
`, strings.Join(quoted, ", "), strings.Join(envs, ", "), instances,
		or(a.Listeners, "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\""),
		or(a.Readiness, `check = "notify"`+"\ntimeout = \"10s\""),
		or(a.Steering, "bpf"), a.Upgrade,
		or(a.Drain, `timeout = "10s"`),
		or(a.Restart, `backoff = "50ms"`), or(a.Control, "/nonexistent/control.sock"), a.Extra)
}

// harness runs a supervisor in this process; its children are real
// processes (the test binary as runApp).
type harness struct {
	t       testing.TB
	cfgPath string
	sup     *supervisor.Supervisor
	done    chan error
	logs    *syncBuffer
	url     string // http://ADDR of the first listener
	ctx     context.Context
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start writes a as the config, runs the supervisor and waits until its
// first generation is ready.
func start(t testing.TB, a app) *harness {
	t.Helper()
	if a.Steering == "" || a.Steering == "bpf" {
		requireSteering(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	h := &harness{t: t, cfgPath: filepath.Join(t.TempDir(), "baton.toml"), done: make(chan error, 1),
		logs: &syncBuffer{}, ctx: ctx}
	h.write(a)
	cfg, err := supervisor.LoadConfig(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h.sup, err = supervisor.New(supervisor.Options{
		ConfigPath: h.cfgPath, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.done <- h.sup.Run(context.Background()) }()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("supervisor log:\n%s", h.logs.String())
		}
	})
	st := h.waitFor("first generation ready", func(st supervisor.Status) bool {
		return st.Serving != 0 && h.gen(st, st.Serving).Ready
	})
	h.url = "http://" + st.Listeners[0].Address
	return h
}

func (h *harness) write(a app) {
	h.t.Helper()
	if a.Control == "" {
		a.Control = filepath.Join(filepath.Dir(h.cfgPath), "control.sock")
	}
	if err := os.WriteFile(h.cfgPath+".tmp", []byte(a.toml()), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(h.cfgPath+".tmp", h.cfgPath); err != nil {
		h.t.Fatal(err)
	}
}

// stop stops the supervisor and waits (bounded) for Run to return.
func (h *harness) stop() error {
	h.sup.Stop()
	select {
	case err := <-h.done:
		h.done <- err // later calls see the same result
		return err
	case <-time.After(60 * time.Second):
		h.t.Fatal("supervisor did not stop within 60s")
		return nil
	}
}

func (h *harness) status() supervisor.Status {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	st, err := h.sup.Status(ctx)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return st
}

func (h *harness) gen(st supervisor.Status, id int) supervisor.GenerationStatus {
	for _, g := range st.Generations {
		if g.ID == id {
			return g
		}
	}
	return supervisor.GenerationStatus{}
}

// waitFor polls the status until cond holds; bounded by 20 s.
func (h *harness) waitFor(what string, cond func(supervisor.Status) bool) supervisor.Status {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := h.status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; status: %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgrade writes a and runs one upgrade to completion.
func (h *harness) upgrade(a app) (int, error) {
	h.t.Helper()
	h.write(a)
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	defer cancel()
	return h.sup.Upgrade(ctx)
}

// settled waits until only the serving generation is left.
func (h *harness) settled() supervisor.Status {
	h.t.Helper()
	return h.waitFor("old generations retired", func(st supervisor.Status) bool {
		return len(st.Generations) == 1 && st.Candidate == 0 && h.gen(st, st.Serving).Ready
	})
}

func testLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// requireSteering skips a test that needs kernel steering where baton may
// not load BPF programs (not root, no CAP_BPF). CI runs as root.
func requireSteering(t testing.TB) {
	st, err := handoff.NewWeightedSteering()
	if err != nil {
		t.Skipf("kernel steering unavailable: %v", err)
	}
	st.Close()
}
