//go:build linux

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

func TestStatus(t *testing.T) {
	f := newFake()
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})
	if len(got) != 1 || got[0].Type != TypeStatus || got[0].Status == nil {
		t.Fatalf("got %+v, want one status", got)
	}
	want := &StatusJSON{
		Service: "web", Config: "/etc/baton/web.toml", BatonPID: 42,
		Listeners: []ListenerJSON{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered", Why: "CAP_BPF"}},
		Generations: []GenerationJSON{
			{ID: 2, State: "serving", Strategy: "blue-green", PIDs: []int{1001}, Started: "2025-01-02T03:04:05Z", Ready: true,
				TimeToReadyMS: 12, Executable: "/srv/app", SHA256: strings.Repeat("ab", 32), Weight: 100,
				Instances: []InstanceJSON{{Index: 0, State: "running", PID: 1001, Ready: true, TimeToReadyMS: 12, Routed: true}}},
			{ID: 3, State: "starting", Strategy: "blue-green", PIDs: []int{}, Started: "2025-01-02T03:05:00Z", Restarts: 1,
				Instances: []InstanceJSON{{Index: 0, State: "running", Restarts: 1}}},
		},
		Serving: 2, Upgrade: &UpgradeJSON{Candidate: 3},
	}
	if !reflect.DeepEqual(got[0].Status, want) {
		t.Errorf("status\n got %+v\nwant %+v", got[0].Status, want)
	}
	// The documented names, with an empty pid list as [] and no upgrade
	// as null.
	var m map[string]any
	if err := json.Unmarshal(got[0].Raw, &m); err != nil {
		t.Fatal(err)
	}
	st := m["status"].(map[string]any)
	for _, k := range []string{"service", "config", "baton_pid", "listeners", "generations", "serving", "upgrade", "stopping",
		"probation", "probation_end", "standby", "failed"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status has no %q: %s", k, got[0].Raw)
		}
	}
	if pids := st["generations"].([]any)[1].(map[string]any)["pids"]; pids == nil {
		t.Errorf("pids of a generation without process: %v, want []", pids)
	}
	f.status.Candidate = 0
	if raw := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})[0].Raw; !strings.Contains(string(raw), `"upgrade":null`) {
		t.Errorf("no upgrade in progress: %s, want \"upgrade\":null", raw)
	}
}

// promote scripts a successful upgrade from generation 2 to 3: the events
// up to promotion come before Upgrade returns; the retirement of
// generation 2 comes only once release is closed.
func promote(f *fakeBackend, release <-chan struct{}, rollback bool) func(ctx context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		f.emit(
			supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003},
			supervisor.Event{Kind: supervisor.EventReady, Gen: 3, PID: 1003, Duration: 12 * time.Millisecond},
			supervisor.Event{Kind: supervisor.EventPromoted, Gen: 3, PID: 1003, Replaces: 2, Rollback: rollback},
			supervisor.Event{Kind: supervisor.EventDraining, Gen: 2, PID: 1001},
			supervisor.Event{Kind: supervisor.EventStopping, Gen: 2, PID: 1001, Reason: "replaced by generation 3"},
		)
		go func() {
			select {
			case <-release:
				f.emit(supervisor.Event{Kind: supervisor.EventRetired, Gen: 2, Duration: 150 * time.Millisecond})
			case <-time.After(10 * time.Second):
			}
		}()
		return 3, nil
	}
}

func kinds(rs []Response) string {
	var out []string
	for _, r := range rs {
		switch r.Type {
		case TypeEvent:
			out = append(out, fmt.Sprintf("%s:%d", r.Event.Kind, r.Event.Generation))
		case TypeResult:
			out = append(out, fmt.Sprintf("result:%v:%d", r.Result.OK, r.Result.Generation))
		default:
			out = append(out, r.Type)
		}
	}
	return strings.Join(out, " ")
}

// TestWaitPromoted: every event is streamed, and the result comes only
// once the replaced generation has retired.
func TestWaitPromoted(t *testing.T) {
	for _, cmd := range []string{CommandUpgrade, CommandRollback} {
		t.Run(cmd, func(t *testing.T) {
			f := newFake()
			release := make(chan struct{})
			script := promote(f, release, cmd == CommandRollback)
			if cmd == CommandUpgrade {
				f.upgrade = script
			} else {
				f.rollback = script
			}
			s := startServer(t, f, options(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got []Response
			err := Do(ctx, s.Path(), Request{Version: 1, Command: cmd, Wait: true}, func(r Response) error {
				got = append(got, r)
				if r.Type == TypeEvent && r.Event.Kind == supervisor.EventStopping {
					close(release) // only now may generation 2 retire
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := "spawned:3 ready:3 promoted:3 draining:2 stopping:2 retired:2 result:true:3"
			if k := kinds(got); k != want {
				t.Fatalf("got %s\nwant %s", k, want)
			}
			ev := got[2].Event
			if ev.Replaces != 2 || ev.PID != 1003 || ev.Rollback != (cmd == CommandRollback) {
				t.Errorf("promoted event %+v", ev)
			}
			if got[1].Event.DurationMS != 12 || got[5].Event.DurationMS != 150 || got[4].Event.Reason != "replaced by generation 3" {
				t.Errorf("events %+v %+v %+v", got[1].Event, got[4].Event, got[5].Event)
			}
			if _, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil {
				t.Errorf("event time: %v", err)
			}
		})
	}
}

// TestWaitFirstGeneration: a promotion that replaced nothing is complete at
// once.
func TestWaitFirstGeneration(t *testing.T) {
	f := newFake()
	f.upgrade = func(ctx context.Context) (int, error) {
		f.emit(supervisor.Event{Kind: supervisor.EventPromoted, Gen: 1, PID: 7})
		return 1, nil
	}
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true})
	if k := kinds(got); k != "promoted:1 result:true:1" {
		t.Errorf("got %s", k)
	}
}

func TestWaitFailed(t *testing.T) {
	f := newFake()
	f.upgrade = func(ctx context.Context) (int, error) {
		f.emit(
			supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003},
			supervisor.Event{Kind: supervisor.EventFailed, Gen: 3, PID: 1003, Reason: "not ready within 1s"},
			supervisor.Event{Kind: supervisor.EventStopping, Gen: 3, PID: 1003, Reason: "upgrade failed"},
		)
		return 0, fmt.Errorf("%w: generation 3: not ready within 1s", supervisor.ErrUpgradeFailed)
	}
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true, Timeout: "5s"})
	if len(got) == 0 {
		t.Fatal("no answer")
	}
	last := got[len(got)-1]
	if last.Type != TypeResult || last.Result.OK || last.Result.Reason != "generation 3: not ready within 1s" {
		t.Errorf("result %+v (%s), want OK false with the reason", last.Result, last.Raw)
	}
	// The events that came before the decision are streamed; later ones
	// may or may not be.
	if k := kinds(got); !strings.HasPrefix(k, "spawned:3 failed:3 ") {
		t.Errorf("got %s", k)
	}
}

// TestWaitTimeout: an upgrade that is not decided in time answers a
// timeout, and the wait for it ends (Upgrade's ctx is cancelled).
func TestWaitTimeout(t *testing.T) {
	f := newFake()
	cancelled := make(chan struct{})
	f.upgrade = func(ctx context.Context) (int, error) {
		f.emit(supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003})
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	}
	s := startServer(t, f, options(t))
	start := time.Now()
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true, Timeout: "300ms"})
	if k := kinds(got); k != "spawned:3 result:false:0" {
		t.Fatalf("got %s", k)
	}
	if r := got[1].Result.Reason; r != "timed out after 300ms; the upgrade goes on" {
		t.Errorf("reason %q", r)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("answered after %s, before the timeout", d)
	}
	within(t, cancelled, 5*time.Second, "Upgrade's context cancelled")
}

// TestWaitTimeoutAfterPromotion: once promoted, a late retirement is not a
// failed upgrade: OK with a note.
func TestWaitTimeoutAfterPromotion(t *testing.T) {
	f := newFake()
	release := make(chan struct{}) // generation 2 retires only after the test
	t.Cleanup(func() { close(release) })
	f.upgrade = promote(f, release, false)
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true, Timeout: "300ms"})
	last := got[len(got)-1]
	if last.Type != TypeResult || !last.Result.OK || last.Result.Generation != 3 ||
		last.Result.Reason != "timed out after 300ms while waiting for generation 2 to retire" {
		t.Errorf("result %s", last.Raw)
	}
}

// TestWaitClientLeaves: a client that hangs up mid-wait ends the wait (no
// goroutine left for the timeout's length) and the subscription.
func TestWaitClientLeaves(t *testing.T) {
	f := newFake()
	cancelled := make(chan struct{})
	f.upgrade = func(ctx context.Context) (int, error) {
		f.emit(supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003})
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	}
	s := startServer(t, f, options(t))
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(`{"version":1,"command":"upgrade","wait":true}` + "\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); err != nil || !strings.Contains(string(buf[:n]), `"spawned"`) {
		t.Fatalf("read %q, %v; want the spawned event", buf[:n], err)
	}
	c.Close()
	within(t, cancelled, 5*time.Second, "Upgrade's context cancelled after the client left")
	for deadline := time.Now().Add(5 * time.Second); f.subscribers() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still subscribed after the client left")
		}
	}
}

// TestWaitHalfClosedClient: a client that shuts down its writing half after
// the request (as socat does) still gets the whole answer.
func TestWaitHalfClosedClient(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	f.upgrade = promote(f, release, false)
	s := startServer(t, f, options(t))
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.Path(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(`{"version":1,"command":"upgrade","wait":true}` + "\n"))
	c.CloseWrite()
	time.AfterFunc(3*hangupPoll, func() { close(release) }) // several hang-up checks pass first
	got := readAll(t, c)
	if k := kinds(got); !strings.HasSuffix(k, "retired:2 result:true:3") {
		t.Errorf("got %s", k)
	}
}

func TestUpgradeWithoutWait(t *testing.T) {
	for _, cmd := range []string{CommandUpgrade, CommandRollback} {
		t.Run(cmd, func(t *testing.T) {
			f := newFake()
			called := make(chan struct{}, 1)
			script := func(ctx context.Context) (int, error) {
				called <- struct{}{}
				<-ctx.Done() // an upgrade that takes long; the answer does not wait for it
				return 0, ctx.Err()
			}
			f.upgrade, f.rollback = script, script
			s := startServer(t, f, options(t))
			got := exchange(t, s.Path(), Request{Version: 1, Command: cmd})
			if k := kinds(got); k != "result:true:0" {
				t.Errorf("got %s", k)
			}
			within(t, called, 5*time.Second, cmd+" called")
			// Close ends the goroutine waiting for it (goleak in TestMain
			// checks).
		})
	}
}

func TestStop(t *testing.T) {
	f := newFake()
	s := startServer(t, f, options(t))
	if k := kinds(exchange(t, s.Path(), Request{Version: 1, Command: CommandStop})); k != "result:true:0" {
		t.Errorf("got %s", k)
	}
	within(t, f.stopped, 5*time.Second, "Stop called")
}

// TestCloseEndsWaits: Close answers open waits, returns promptly, and
// removes the socket file.
func TestCloseEndsWaits(t *testing.T) {
	f := newFake()
	started := make(chan struct{})
	f.upgrade = func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	o := options(t)
	s, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(f) }()
	answered := make(chan []Response, 1)
	go func() {
		var got []Response
		Do(context.Background(), o.Path, Request{Version: 1, Command: CommandUpgrade, Wait: true}, func(r Response) error {
			got = append(got, r)
			return nil
		})
		answered <- got
	}()
	within(t, started, 5*time.Second, "upgrade started")
	// A second client, stalled halfway through its request.
	stalled, err := net.Dial("unix", o.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write([]byte(`{"version":1,`))

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s", d)
	}
	if err := within(t, served, 5*time.Second, "Serve returned"); err != nil {
		t.Errorf("Serve: %v", err)
	}
	got := within(t, answered, 5*time.Second, "the waiting client answered")
	if k := kinds(got); k != "result:false:0" || got[0].Result.Reason != "baton's control socket is closing; the upgrade goes on" {
		t.Errorf("got %s %+v", k, got)
	}
	if _, err := os.Lstat(o.Path); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestDoConnectErrors: the error says what failed and hints at the cause.
func TestDoConnectErrors(t *testing.T) {
	path := t.TempDir() + "/none.sock"
	err := Do(context.Background(), path, Request{Version: 1, Command: CommandStatus}, func(Response) error { return nil })
	var ce *ConnectError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "connect to "+path+": no such file or directory (is baton running?)") {
		t.Errorf("got %v, want a ConnectError with a hint", err)
	}
}
