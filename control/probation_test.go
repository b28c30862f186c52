//go:build linux

package control

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// failedState is the reason of the fake's failed state.
const failedState = "3 reverts within 1h0m0s; the last: generation 5: instance 0 crashed during probation: exit status 2"

// TestForce: "force" reaches ForceUpgrade, with and without wait, and
// nothing else; an upgrade without it reaches Upgrade.
func TestForce(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"force without wait", Request{Command: CommandUpgrade, Force: true}, "force"},
		{"force with wait", Request{Command: CommandUpgrade, Force: true, Wait: true}, "force"},
		{"no force", Request{Command: CommandUpgrade, Wait: true}, "upgrade"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			called := make(chan string, 2)
			script := func(name string) func(context.Context) (int, error) {
				return func(context.Context) (int, error) {
					called <- name
					f.emit(supervisor.Event{Kind: supervisor.EventPromoted, Gen: 4, PID: 1004})
					return 4, nil
				}
			}
			f.upgrade, f.force = script("upgrade"), script("force")
			s := startServer(t, f, options(t))
			tc.req.Version = ProtocolVersion
			got := exchange(t, s.Path(), tc.req)
			if last := got[len(got)-1]; last.Type != TypeResult || !last.Result.OK {
				t.Errorf("answer %s, want ok", kinds(got))
			}
			if c := within(t, called, 5*time.Second, "backend called"); c != tc.want {
				t.Errorf("backend got %s, want %s", c, tc.want)
			}
		})
	}
}

// TestFailedState: in the failed state an upgrade without wait and
// without force is refused at once (a result, exit 1 for the CLI) and
// never reaches the supervisor; forced, or waited for, it does, and a
// waited-for refusal comes back as the supervisor's reason.
func TestFailedState(t *testing.T) {
	refused := fmt.Errorf("%w: %w (%s): force an upgrade (`baton upgrade --force`) to try again",
		supervisor.ErrUpgradeFailed, supervisor.ErrFailedState, failedState)
	wantReason := fmt.Sprintf("%s (%s): force an upgrade (`baton upgrade --force`) to try again", supervisor.ErrFailedState, failedState)
	for _, tc := range []struct {
		name   string
		req    Request
		called string // "" when the supervisor must not be asked
		ok     bool
	}{
		// Refused.
		{"upgrade", Request{Command: CommandUpgrade}, "", false},
		{"upgrade with wait", Request{Command: CommandUpgrade, Wait: true}, "upgrade", false},
		// Forced, or not an upgrade.
		{"forced", Request{Command: CommandUpgrade, Force: true}, "force", true},
		{"forced with wait", Request{Command: CommandUpgrade, Force: true, Wait: true}, "force", true},
		{"rollback", Request{Command: CommandRollback}, "rollback", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.status.Failed = failedState
			called := make(chan string, 2)
			f.upgrade = func(context.Context) (int, error) { called <- "upgrade"; return 0, refused }
			f.force = func(context.Context) (int, error) {
				called <- "force"
				f.emit(supervisor.Event{Kind: supervisor.EventPromoted, Gen: 6, PID: 1006})
				return 6, nil
			}
			f.rollback = func(context.Context) (int, error) { called <- "rollback"; return 0, nil }
			s := startServer(t, f, options(t))
			tc.req.Version = ProtocolVersion
			got := exchange(t, s.Path(), tc.req)
			last := got[len(got)-1]
			if last.Type != TypeResult || last.Result.OK != tc.ok {
				t.Fatalf("answer %s, want a result with ok %v", last.Raw, tc.ok)
			}
			if !tc.ok && last.Result.Reason != wantReason {
				t.Errorf("reason %q\nwant   %q", last.Result.Reason, wantReason)
			}
			if tc.called == "" {
				select {
				case c := <-called:
					t.Errorf("the supervisor was asked to %s", c)
				case <-time.After(100 * time.Millisecond):
				}
				return
			}
			if c := within(t, called, 5*time.Second, "backend called"); c != tc.called {
				t.Errorf("backend got %s, want %s", c, tc.called)
			}
		})
	}
}

// TestStatusProbation: the probation, its end, the standby and the failed
// state are in the status.
func TestStatusProbation(t *testing.T) {
	f := newFake()
	end := time.Date(2025, 1, 2, 3, 9, 0, 500_000_000, time.UTC)
	f.status.Candidate, f.status.Serving = 0, 3
	f.status.Probation, f.status.ProbationEnd, f.status.Standby = 3, end, 2
	f.status.Failed = failedState
	f.status.Generations[0].State, f.status.Generations[0].Weight = "standby", 0
	f.status.Generations[1].State, f.status.Generations[1].Weight = "serving", 100
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})
	st := got[0].Status
	if st.Probation != 3 || st.ProbationEnd != "2025-01-02T03:09:00.5Z" || st.Standby != 2 || st.Failed != failedState ||
		st.Generations[0].State != "standby" {
		t.Errorf("status %s", got[0].Raw)
	}

	// No probation: 0 and "", not the zero time.
	f.status.Probation, f.status.Standby, f.status.Failed = 0, 0, ""
	raw := string(exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus})[0].Raw)
	for _, want := range []string{`"probation":0,`, `"probation_end":"",`, `"standby":0,`, `"failed":""`, `"revert_of":0}`} {
		if !strings.Contains(raw, want) {
			t.Errorf("status without probation lacks %s: %s", want, raw)
		}
	}
}

// TestEventFields: the fields of the new kinds, each always present.
func TestEventFields(t *testing.T) {
	for _, tc := range []struct {
		ev   supervisor.Event
		want string
	}{
		{supervisor.Event{Kind: supervisor.EventStep, Gen: 3, PID: 1003, Weight: 10, Duration: 30 * time.Second, Step: 1, Steps: 2},
			`"kind":"step","generation":3,"instance":0,"pid":1003,"replaces":0,"rollback":false,"reason":"","duration_ms":30000,"weight":10,"step":1,"steps":2,"aborted":false,"flag":"","by":"","cause":"","outcome":"","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventFailed, Gen: 3, Reason: "aborted by `baton abort`", Aborted: true},
			`"kind":"failed","generation":3,"instance":0,"pid":0,"replaces":0,"rollback":false,"reason":"aborted by ` + "`baton abort`" + `","duration_ms":0,"weight":0,"step":0,"steps":0,"aborted":true,"flag":"","by":"","cause":"","outcome":"","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventReverted, Gen: 3, PID: 1003, Replaces: 2, Reason: "instance 0 crashed during probation: exit status 2",
			Cause: supervisor.CauseCrash},
			`"kind":"reverted","generation":3,"instance":0,"pid":1003,"replaces":2,"rollback":false,"reason":"instance 0 crashed during probation: exit status 2","duration_ms":0,"weight":0,"step":0,"steps":0,"aborted":false,"flag":"","by":"","cause":"crash","outcome":"","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventAnalysis, Gen: 3, Outcome: "fail", Reason: "fail: error_ratio: error ratio 0.2 > 0.012"},
			`"kind":"analysis","generation":3,"instance":0,"pid":0,"replaces":0,"rollback":false,"reason":"fail: error_ratio: error ratio 0.2 > 0.012","duration_ms":0,"weight":0,"step":0,"steps":0,"aborted":false,"flag":"","by":"","cause":"","outcome":"fail","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventPromoted, Gen: 5, PID: 1005, Replaces: 4, Rollback: true, RevertOf: 4},
			`"kind":"promoted","generation":5,"instance":0,"pid":1005,"replaces":4,"rollback":true,"reason":"","duration_ms":0,"weight":0,"step":0,"steps":0,"aborted":false,"flag":"","by":"","cause":"","outcome":"","revert_of":4}`},
		{supervisor.Event{Kind: supervisor.EventFlag, Gen: 2, Flag: "search_v2", By: "operator", Weight: 10, Reason: "search_v2: 0% -> 10% (operator)"},
			`"kind":"flag","generation":2,"instance":0,"pid":0,"replaces":0,"rollback":false,"reason":"search_v2: 0% -> 10% (operator)","duration_ms":0,"weight":10,"step":0,"steps":0,"aborted":false,"flag":"search_v2","by":"operator","cause":"","outcome":"","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventConfirmed, Gen: 3, PID: 1003, Duration: 5 * time.Minute},
			`"kind":"confirmed","generation":3,"instance":0,"pid":1003,"replaces":0,"rollback":false,"reason":"","duration_ms":300000,"weight":0,"step":0,"steps":0,"aborted":false,"flag":"","by":"","cause":"","outcome":"","revert_of":0}`},
		{supervisor.Event{Kind: supervisor.EventUnhealthy, Gen: 3, Instance: 1, PID: 1004, Reason: "no WATCHDOG=1 for 10s"},
			`"kind":"unhealthy","generation":3,"instance":1,"pid":1004,"replaces":0,"rollback":false,"reason":"no WATCHDOG=1 for 10s","duration_ms":0,"weight":0,"step":0,"steps":0,"aborted":false,"flag":"","by":"","cause":"","outcome":"","revert_of":0}`},
	} {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // as the server writes it
		if err := enc.Encode(NewEventJSON(tc.ev)); err != nil {
			t.Fatal(err)
		}
		if line := strings.TrimSuffix(b.String(), "\n"); !strings.HasSuffix(line, tc.want) {
			t.Errorf("%s: %s\nwant ...%s", tc.ev.Kind, line, tc.want)
		}
	}
}

// TestWaitProbation: a wait ends when probation does: at its end, once the
// standby has retired (ok), or at a revert (not ok, with the reason); a
// rollback during probation is done once the reverted generation has
// retired.
func TestWaitProbation(t *testing.T) {
	promoted := []supervisor.Event{
		{Kind: supervisor.EventSpawned, Gen: 3, PID: 1003},
		{Kind: supervisor.EventReady, Gen: 3, PID: 1003, Duration: 12 * time.Millisecond},
		{Kind: supervisor.EventPromoted, Gen: 3, PID: 1003, Replaces: 2},
	}
	tests := []struct {
		name   string
		cmd    string
		script func(f *fakeBackend, release <-chan struct{}) (int, error)
		want   string // kinds
		reason string
	}{
		{"confirmed", CommandUpgrade, func(f *fakeBackend, release <-chan struct{}) (int, error) {
			f.emit(promoted...)
			f.emit(supervisor.Event{Kind: supervisor.EventAnalysis, Gen: 3, Reason: "pass: error_ratio: error ratio 0 <= 0.01"},
				supervisor.Event{Kind: supervisor.EventConfirmed, Gen: 3, PID: 1003, Duration: time.Second},
				supervisor.Event{Kind: supervisor.EventDraining, Gen: 2, PID: 1001})
			go func() {
				<-release
				f.emit(supervisor.Event{Kind: supervisor.EventRetired, Gen: 2, Duration: time.Second})
			}()
			return 3, nil
		}, "spawned:3 ready:3 promoted:3 analysis:3 confirmed:3 draining:2 retired:2 result:true:3", ""},
		{"reverted", CommandUpgrade, func(f *fakeBackend, release <-chan struct{}) (int, error) {
			f.emit(promoted...)
			f.emit(supervisor.Event{Kind: supervisor.EventReverted, Gen: 3, PID: 1003, Replaces: 2,
				Reason: "instance 0 crashed during probation: exit status 2"})
			return 0, fmt.Errorf("%w: generation 3 reverted during probation: instance 0 crashed during probation: exit status 2",
				supervisor.ErrUpgradeFailed)
		}, "spawned:3 ready:3 promoted:3 reverted:3 result:false:0",
			"generation 3 reverted during probation: instance 0 crashed during probation: exit status 2"},
		{"rollback during probation", CommandRollback, func(f *fakeBackend, release <-chan struct{}) (int, error) {
			f.emit(supervisor.Event{Kind: supervisor.EventReverted, Gen: 3, PID: 1003, Replaces: 2,
				Reason: "rolled back by hand (`baton rollback`)"},
				supervisor.Event{Kind: supervisor.EventDraining, Gen: 3, PID: 1003})
			go func() {
				<-release
				f.emit(supervisor.Event{Kind: supervisor.EventRetired, Gen: 3, Duration: time.Second})
			}()
			return 2, nil
		}, "reverted:3 draining:3 retired:3 result:true:2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			release := make(chan struct{})
			script := func(context.Context) (int, error) { return tt.script(f, release) }
			f.upgrade, f.rollback = script, script
			s := startServer(t, f, options(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got []Response
			err := Do(ctx, s.Path(), Request{Version: 1, Command: tt.cmd, Wait: true}, func(r Response) error {
				got = append(got, r)
				if r.Type == TypeEvent && r.Event.Kind == supervisor.EventDraining {
					close(release) // only now may it retire: the result must wait for that
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if k := kinds(got); k != tt.want {
				t.Fatalf("got %s\nwant %s", k, tt.want)
			}
			if r := got[len(got)-1].Result; r.Reason != tt.reason {
				t.Errorf("reason %q, want %q", r.Reason, tt.reason)
			}
		})
	}
}
