//go:build linux

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// TestPromoteAbort: promote and abort reach the backend (promote with its
// "all") and answer a result at once; a refusal of the supervisor is a
// result with its reason (exit 1 for the CLI), no answer in time an error
// (exit 2).
func TestPromoteAbort(t *testing.T) {
	notReady := errors.New("generation 3 is not ready yet; its first step (10%) begins when it is")
	tests := []struct {
		name    string
		req     Request
		err     error // what the backend returns
		want    string
		reason  string
		wantAll bool
	}{
		// Success.
		{name: "promote", req: Request{Command: CommandPromote}, want: "promote"},
		{name: "promote all", req: Request{Command: CommandPromote, All: true}, want: "promote", wantAll: true},
		{name: "abort", req: Request{Command: CommandAbort}, want: "abort"},
		// Refused by the supervisor: a result saying why.
		{name: "promote without upgrade", req: Request{Command: CommandPromote},
			err: fmt.Errorf("%w: nothing to promote or abort", supervisor.ErrNoCanary), want: "promote",
			reason: "no upgrade in progress: nothing to promote or abort"},
		{name: "abort without upgrade", req: Request{Command: CommandAbort},
			err: fmt.Errorf("%w: nothing to promote or abort", supervisor.ErrNoCanary), want: "abort",
			reason: "no upgrade in progress: nothing to promote or abort"},
		{name: "promote before ready", req: Request{Command: CommandPromote}, err: notReady, want: "promote",
			reason: notReady.Error()},
		{name: "promote while stopping", req: Request{Command: CommandPromote}, err: supervisor.ErrStopped, want: "promote",
			reason: supervisor.ErrStopped.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			called := make(chan string, 2)
			f.promote = func(_ context.Context, all bool) error {
				called <- fmt.Sprintf("promote all=%v", all)
				return tt.err
			}
			f.abort = func(context.Context) error {
				called <- "abort"
				return tt.err
			}
			s := startServer(t, f, options(t))
			tt.req.Version = ProtocolVersion
			got := exchange(t, s.Path(), tt.req)
			if len(got) != 1 || got[0].Type != TypeResult {
				t.Fatalf("got %s, want one result", kinds(got))
			}
			r := got[0].Result
			if r.OK != (tt.err == nil) || r.Generation != 0 || r.Reason != tt.reason {
				t.Errorf("result %s, want ok %v, reason %q", got[0].Raw, tt.err == nil, tt.reason)
			}
			want := tt.want
			if want == "promote" {
				want = fmt.Sprintf("promote all=%v", tt.wantAll)
			}
			if c := within(t, called, 5*time.Second, "backend called"); c != want {
				t.Errorf("backend got %s, want %s", c, want)
			}
			if len(called) != 0 {
				t.Errorf("backend called again: %s", <-called)
			}
		})
	}
}

// TestPromoteNoAnswer: a supervisor that does not answer within the
// request timeout is an error response, not a refusal: the client cannot
// tell what happened. The backend's wait ends with it.
func TestPromoteNoAnswer(t *testing.T) {
	f := newFake()
	ended := make(chan error, 1)
	f.abort = func(ctx context.Context) error {
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	}
	o := options(t)
	o.RequestTimeout = 200 * time.Millisecond
	s := startServer(t, f, o)
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandAbort})
	if len(got) != 1 || got[0].Type != TypeError || got[0].Error != "abort: no answer from the supervisor within 200ms" {
		t.Errorf("got %+v, want an error", got)
	}
	if err := within(t, ended, 5*time.Second, "Abort's context ended"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Abort's context: %v", err)
	}
}

// canaryStatus is a canary at its second of three steps, holding, with
// two instances per generation, the second canary instance not ready.
func canaryStatus() supervisor.Status {
	started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return supervisor.Status{
		Service: "web", ConfigPath: "/etc/baton/web.toml", PID: 42, Serving: 2, Candidate: 3,
		Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered"}},
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "serving", Strategy: "canary", PID: 1001, PIDs: []int{1001, 1002}, Ready: true, Started: started,
				Weight: 50, Share: 48.71794871, Connections: 190,
				Instances: []supervisor.InstanceStatus{
					{Index: 0, State: "running", PID: 1001, Ready: true, ReadyAfter: 5 * time.Millisecond, Routed: true},
					{Index: 1, State: "running", PID: 1002, Ready: true, ReadyAfter: 7 * time.Millisecond, Routed: true, Restarts: 2},
				}},
			{ID: 3, State: "canary", Strategy: "canary", PID: 1003, PIDs: []int{1003}, Started: started,
				Weight: 50, Share: 51.28205128, Connections: 200, Step: 2, Steps: 3, Holding: true,
				Instances: []supervisor.InstanceStatus{
					{Index: 0, State: "running", PID: 1003, Ready: true, ReadyAfter: 9 * time.Millisecond, Routed: true,
						Status: "warming up"},
					{Index: 1, State: "running", PID: 0, Restarts: 1},
				}},
			{ID: 1, State: "draining", Strategy: "blue-green", PIDs: []int{1000}, PID: 1000, Started: started, Share: -1,
				Aborting: "", Instances: []supervisor.InstanceStatus{{Index: 0, State: "draining", PID: 1000, Ready: true}}},
		},
	}
}

func TestStatusGradual(t *testing.T) {
	f := newFake()
	f.status = canaryStatus()
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})
	if len(got) != 1 || got[0].Status == nil {
		t.Fatalf("got %s", kinds(got))
	}
	gens := got[0].Status.Generations
	share := func(v float64) *float64 { return &v }
	want := []GenerationJSON{
		{ID: 2, State: "serving", Strategy: "canary", PIDs: []int{1001, 1002}, Started: "2025-01-02T03:04:05Z", Ready: true,
			Weight: 50, Share: share(48.7), Connections: 190,
			Instances: []InstanceJSON{
				{Index: 0, State: "running", PID: 1001, Ready: true, TimeToReadyMS: 5, Routed: true},
				{Index: 1, State: "running", PID: 1002, Ready: true, TimeToReadyMS: 7, Routed: true, Restarts: 2},
			}},
		{ID: 3, State: "canary", Strategy: "canary", PIDs: []int{1003}, Started: "2025-01-02T03:04:05Z",
			Weight: 50, Share: share(51.3), Connections: 200, Step: 2, Steps: 3, Holding: true,
			Instances: []InstanceJSON{
				{Index: 0, State: "running", PID: 1003, Ready: true, TimeToReadyMS: 9, Routed: true, Status: "warming up"},
				{Index: 1, State: "running", Restarts: 1},
			}},
		{ID: 1, State: "draining", Strategy: "blue-green", PIDs: []int{1000}, Started: "2025-01-02T03:04:05Z",
			Instances: []InstanceJSON{{Index: 0, State: "draining", PID: 1000, Ready: true}}},
	}
	if !reflect.DeepEqual(gens, want) {
		g, _ := json.Marshal(gens)
		w, _ := json.Marshal(want)
		t.Errorf("generations\n got %s\nwant %s", g, w)
	}

	// The documented names; an unknown share is null, not left out.
	var m struct {
		Status struct {
			Generations []map[string]json.RawMessage `json:"generations"`
		} `json:"status"`
	}
	if err := json.Unmarshal(got[0].Raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "state", "strategy", "pids", "started", "ready", "time_to_ready_ms", "executable",
		"sha256", "restarts", "gave_up", "status", "instances", "weight", "share", "share_estimated", "connections",
		"step", "steps", "holding", "aborting"} {
		if _, ok := m.Status.Generations[0][k]; !ok {
			t.Errorf("generation has no %q: %s", k, got[0].Raw)
		}
	}
	if sh := string(m.Status.Generations[2]["share"]); sh != "null" {
		t.Errorf("share of a draining generation: %s, want null", sh)
	}
	var inst []map[string]any
	if err := json.Unmarshal(m.Status.Generations[1]["instances"], &inst); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"index", "state", "pid", "ready", "time_to_ready_ms", "routed", "restarts", "gave_up", "status"} {
		if _, ok := inst[1][k]; !ok {
			t.Errorf("instance has no %q: %v", k, inst[1])
		}
	}

	// Shared mode: the share is the part of the processes, and says so.
	f.status.Generations[1].ShareEstimated, f.status.Generations[1].Share = true, 100.0/3
	g := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})[0].Status.Generations[1]
	if !g.ShareEstimated || g.Share == nil || *g.Share != 33.3 {
		t.Errorf("estimated share: %v %v", g.ShareEstimated, g.Share)
	}
}

// TestWaitCanary: the events of a canary upgrade are streamed with their
// instance and, for steps, weight and pause.
func TestWaitCanary(t *testing.T) {
	f := newFake()
	f.upgrade = func(ctx context.Context) (int, error) {
		f.emit(
			supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, Instance: 0, PID: 1003},
			supervisor.Event{Kind: supervisor.EventSpawned, Gen: 3, Instance: 1, PID: 1004},
			supervisor.Event{Kind: supervisor.EventReady, Gen: 3, Instance: 1, PID: 1004, Duration: 8 * time.Millisecond},
			supervisor.Event{Kind: supervisor.EventStep, Gen: 3, PID: 1003, Weight: 10, Duration: 30 * time.Second},
			supervisor.Event{Kind: supervisor.EventStep, Gen: 3, PID: 1003, Weight: 50},
			supervisor.Event{Kind: supervisor.EventPromoted, Gen: 3, PID: 1003, Replaces: 0},
		)
		return 3, nil
	}
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true})
	if k := kinds(got); k != "spawned:3 spawned:3 ready:3 step:3 step:3 promoted:3 result:true:3" {
		t.Fatalf("got %s", k)
	}
	if ev := got[1].Event; ev.Instance != 1 || ev.PID != 1004 {
		t.Errorf("spawned event %s", got[1].Raw)
	}
	if ev := got[2].Event; ev.Instance != 1 || ev.DurationMS != 8 {
		t.Errorf("ready event %s", got[2].Raw)
	}
	if ev := got[3].Event; ev.Weight != 10 || ev.DurationMS != 30000 || ev.Instance != 0 {
		t.Errorf("step event %s", got[3].Raw)
	}
	if ev := got[4].Event; ev.Weight != 50 || ev.DurationMS != 0 {
		t.Errorf("holding step event %s", got[4].Raw)
	}
	for _, k := range []string{`"instance":0`, `"weight":0`} {
		if !strings.Contains(string(got[0].Raw), k) {
			t.Errorf("event without %s: %s", k, got[0].Raw)
		}
	}
}
