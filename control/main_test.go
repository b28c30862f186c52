//go:build linux

package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/baton-sh/baton/supervisor"
)

// helpers are the programs the test binary runs as when HELPER names one;
// a helper that no test uses fails the run.
var helpers = map[string]func() int{
	"status-client": statusClient,
}

var helpersUsed sync.Map

func TestMain(m *testing.M) {
	if name := os.Getenv("HELPER"); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(h())
	}
	code := m.Run()
	if code == 0 && os.Getuid() == 0 && flagRunAll() {
		for name := range helpers {
			if _, ok := helpersUsed.Load(name); !ok {
				fmt.Fprintf(os.Stderr, "helper %q is not used by any test\n", name)
				code = 1
			}
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// flagRunAll reports whether every test ran (no -run, and not fuzzing
// alone), so that an unused helper is a real finding.
func flagRunAll() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.run") || strings.HasPrefix(a, "-test.fuzz") || strings.HasPrefix(a, "-test.skip") {
			return false
		}
	}
	return true
}

// statusClient asks $SOCKET for the status. Exit 0: a status came; 3:
// an error response (its message on stdout); 4: any other failure.
func statusClient() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Do(ctx, os.Getenv("SOCKET"), Request{Version: ProtocolVersion, Command: CommandStatus},
		func(Response) error { return nil })
	var re *RemoteError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &re):
		fmt.Print(re.Message)
		return 3
	default:
		fmt.Print(err)
		return 4
	}
}

// fakeBackend stands in for the supervisor. Tests script Upgrade and
// Rollback, and emit events as the supervisor would.
type fakeBackend struct {
	status   supervisor.Status
	upgrade  func(ctx context.Context) (int, error) // nil: return 0, nil
	force    func(ctx context.Context) (int, error) // ForceUpgrade; nil: return 0, nil
	rollback func(ctx context.Context) (int, error)
	promote  func(ctx context.Context, all bool) error                             // nil: return nil
	abort    func(ctx context.Context) error                                       // nil: return nil
	setFlag  func(ctx context.Context, name string, percent int, reset bool) error // SetFlag and ResetFlag; nil: return nil
	flags    []supervisor.FlagStatus                                               // what Flags answers, with version 7
	flagsErr error                                                                 // what Flags fails with; nil: it answers flags
	stopped  chan struct{}                                                         // gets one value per Stop

	mu   sync.Mutex
	subs map[chan supervisor.Event]struct{}
}

func newFake() *fakeBackend {
	return &fakeBackend{
		status: supervisor.Status{
			Service: "web", ConfigPath: "/etc/baton/web.toml", PID: 42,
			Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered", Why: "CAP_BPF"}},
			Generations: []supervisor.GenerationStatus{
				{ID: 2, State: "serving", Strategy: "blue-green", PID: 1001, PIDs: []int{1001}, Ready: true,
					Started: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), ReadyAfter: 12 * time.Millisecond,
					Executable: "/srv/app", SHA256: strings.Repeat("ab", 32), Weight: 100, Share: -1,
					Instances: []supervisor.InstanceStatus{{Index: 0, State: "running", PID: 1001, Ready: true,
						ReadyAfter: 12 * time.Millisecond, Routed: true}}},
				{ID: 3, State: "starting", Strategy: "blue-green", Started: time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC),
					Restarts: 1, Share: -1, Instances: []supervisor.InstanceStatus{{Index: 0, State: "running", Restarts: 1}}},
			},
			Serving: 2, Candidate: 3,
		},
		stopped: make(chan struct{}, 10),
		subs:    make(map[chan supervisor.Event]struct{}),
	}
}

func (f *fakeBackend) Status(ctx context.Context) (supervisor.Status, error) { return f.status, nil }

func (f *fakeBackend) Upgrade(ctx context.Context) (int, error) {
	if f.upgrade == nil {
		return 0, nil
	}
	return f.upgrade(ctx)
}

func (f *fakeBackend) ForceUpgrade(ctx context.Context) (int, error) {
	if f.force == nil {
		return 0, nil
	}
	return f.force(ctx)
}

func (f *fakeBackend) Rollback(ctx context.Context) (int, error) {
	if f.rollback == nil {
		return 0, nil
	}
	return f.rollback(ctx)
}

func (f *fakeBackend) Promote(ctx context.Context, all bool) error {
	if f.promote == nil {
		return nil
	}
	return f.promote(ctx, all)
}

func (f *fakeBackend) Abort(ctx context.Context) error {
	if f.abort == nil {
		return nil
	}
	return f.abort(ctx)
}

func (f *fakeBackend) Flags(ctx context.Context) ([]supervisor.FlagStatus, int64, string, error) {
	if f.flagsErr != nil {
		return nil, 0, "", f.flagsErr
	}
	return f.flags, 7, "/run/baton/web.flags.json", nil
}

func (f *fakeBackend) SetFlag(ctx context.Context, name string, percent int) error {
	if f.setFlag == nil {
		return nil
	}
	return f.setFlag(ctx, name, percent, false)
}

func (f *fakeBackend) ResetFlag(ctx context.Context, name string) error {
	if f.setFlag == nil {
		return nil
	}
	return f.setFlag(ctx, name, 0, true)
}

func (f *fakeBackend) Stop() { f.stopped <- struct{}{} }

func (f *fakeBackend) Subscribe(buffer int) (<-chan supervisor.Event, func()) {
	ch := make(chan supervisor.Event, buffer)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
		})
	}
}

// emit sends events the way the supervisor does: never waiting.
func (f *fakeBackend) emit(evs ...supervisor.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range evs {
		if ev.Time.IsZero() {
			ev.Time = time.Now()
		}
		for ch := range f.subs {
			select {
			case ch <- ev:
			default:
			}
		}
	}
}

func (f *fakeBackend) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// syncBuffer collects log output from several goroutines.
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

// testServer is a Server on a socket in a temporary directory, serving b.
type testServer struct {
	*Server
	log *syncBuffer
}

func options(t *testing.T) ServerOptions {
	return ServerOptions{Path: filepath.Join(t.TempDir(), "baton.sock"), GID: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func startServer(t *testing.T, b Backend, o ServerOptions) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(b) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testServer{Server: s, log: logs}
}

// exchange sends req through Do and returns every response, the error
// response included.
func exchange(t *testing.T, path string, req Request) []Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []Response
	err := Do(ctx, path, req, func(r Response) error {
		got = append(got, r)
		return nil
	})
	var re *RemoteError
	if errors.As(err, &re) {
		got = append(got, Response{Version: ProtocolVersion, Type: TypeError, Error: re.Message})
	} else if err != nil {
		t.Fatalf("Do %+v: %v", req, err)
	}
	return got
}

// within fails the test unless ch yields within d.
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
