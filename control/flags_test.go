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

// declared are the fake's flags: one following its config, one set by an
// operator, one turned off by its analysis.
func declared() []supervisor.FlagStatus {
	at := time.Date(2025, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	return []supervisor.FlagStatus{
		{Name: "new_checkout", Percent: 100, Default: 100, Changed: at, By: "config"},
		{Name: "search_v2", Percent: 10, Default: 0, Set: true, Description: "the new search backend", Changed: at, By: "operator"},
		{Name: "shout", Percent: 0, Default: 100, Set: true, OffOn: "analysis", Changed: at, By: "analysis"},
	}
}

// TestFlagsList: flags answers one "flags" line with the version, the
// file and every field of every flag, each always present.
func TestFlagsList(t *testing.T) {
	f := newFake()
	f.flags = declared()
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandFlags})
	if len(got) != 1 || got[0].Type != TypeFlags || got[0].Flags == nil {
		t.Fatalf("got %s, want one flags line", kinds(got))
	}
	want := &FlagsJSON{Version: 7, File: "/run/baton/web.flags.json", Flags: []FlagJSON{
		{Name: "new_checkout", Percent: 100, Default: 100, Changed: "2025-01-02T03:04:05.6Z", By: "config"},
		{Name: "search_v2", Percent: 10, Set: true, Description: "the new search backend", Changed: "2025-01-02T03:04:05.6Z", By: "operator"},
		{Name: "shout", Default: 100, Set: true, OffOn: "analysis", Changed: "2025-01-02T03:04:05.6Z", By: "analysis"},
	}}
	if !reflect.DeepEqual(got[0].Flags, want) {
		t.Errorf("flags\n got %+v\nwant %+v", got[0].Flags, want)
	}
	var line struct {
		Flags struct {
			Flags []map[string]any `json:"flags"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(got[0].Raw, &line); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "percent", "default", "set", "description", "off_on", "changed", "by"} {
		if _, ok := line.Flags.Flags[0][k]; !ok {
			t.Errorf("a flag has no %q: %s", k, got[0].Raw)
		}
	}

	// None declared: an empty array, not null.
	f.flags = nil
	if raw := string(exchange(t, s.Path(), Request{Version: 1, Command: CommandFlags})[0].Raw); !strings.Contains(raw, `"flags":[]`) {
		t.Errorf("no flags declared: %s, want \"flags\":[]", raw)
	}
}

// TestFlagsListFails: a supervisor that cannot answer is an error line.
func TestFlagsListFails(t *testing.T) {
	f := newFake()
	f.flagsErr = supervisor.ErrStopped
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandFlags})
	if len(got) != 1 || got[0].Type != TypeError || got[0].Error != "flags: "+supervisor.ErrStopped.Error() {
		t.Errorf("got %+v, want an error", got)
	}
}

// TestFlagSet: flag reaches SetFlag (0 included: it is sent) or ResetFlag,
// and answers ok with the flag as it is now; a refusal of the supervisor
// (an undeclared flag, a flags file that cannot be written) is a result
// with its reason (exit 1 for the CLI).
func TestFlagSet(t *testing.T) {
	unknown := fmt.Errorf("%w %q (declared: new_checkout, search_v2, shout)", supervisor.ErrUnknownFlag, "serch_v2")
	notWritten := errors.New(`flag "search_v2" not changed: open /run/baton/web.flags.json: read-only file system`)
	tests := []struct {
		name   string
		req    Request
		err    error  // what the backend returns
		called string // what the backend was asked
		reason string
		now    int // the flag's percent in the answer, when ok
	}{
		// Success.
		{name: "set a percent", req: Request{Name: "search_v2", Percent: ptr(25)}, called: "set search_v2 25", now: 25},
		{name: "off", req: Request{Name: "search_v2", Percent: ptr(0)}, called: "set search_v2 0", now: 0},
		{name: "on", req: Request{Name: "search_v2", Percent: ptr(100)}, called: "set search_v2 100", now: 100},
		{name: "reset", req: Request{Name: "search_v2", Reset: true}, called: "reset search_v2", now: 0},
		// Refused by the supervisor.
		{name: "unknown flag", req: Request{Name: "serch_v2", Percent: ptr(10)}, err: unknown, called: "set serch_v2 10",
			reason: `no such flag "serch_v2" (declared: new_checkout, search_v2, shout)`},
		{name: "file not written", req: Request{Name: "search_v2", Reset: true}, err: notWritten, called: "reset search_v2",
			reason: notWritten.Error()},
		{name: "stopping", req: Request{Name: "search_v2", Percent: ptr(10)}, err: supervisor.ErrStopped, called: "set search_v2 10",
			reason: supervisor.ErrStopped.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.flags = declared()
			called := make(chan string, 2)
			f.setFlag = func(_ context.Context, name string, percent int, reset bool) error {
				if reset {
					called <- "reset " + name
					percent = 0 // search_v2's default
				} else {
					called <- fmt.Sprintf("set %s %d", name, percent)
				}
				if tt.err == nil {
					f.flags[1].Percent, f.flags[1].Set, f.flags[1].By = percent, !reset, "operator"
				}
				return tt.err
			}
			s := startServer(t, f, options(t))
			tt.req.Version, tt.req.Command = ProtocolVersion, CommandFlag
			got := exchange(t, s.Path(), tt.req)
			if len(got) != 1 || got[0].Type != TypeResult {
				t.Fatalf("got %s, want one result", kinds(got))
			}
			r := got[0].Result
			if r.OK != (tt.err == nil) || r.Generation != 0 || r.Reason != tt.reason {
				t.Errorf("result %s, want ok %v, reason %q", got[0].Raw, tt.err == nil, tt.reason)
			}
			switch {
			case tt.err != nil && r.Flag != nil:
				t.Errorf("a refusal with a flag: %s", got[0].Raw)
			case tt.err == nil && (r.Flag == nil || r.Flag.Name != "search_v2" || r.Flag.Percent != tt.now || r.Flag.Set != !tt.req.Reset):
				t.Errorf("result %s, want the flag at %d%%", got[0].Raw, tt.now)
			}
			if c := within(t, called, 5*time.Second, "backend called"); c != tt.called {
				t.Errorf("backend got %s, want %s", c, tt.called)
			}
			if len(called) != 0 {
				t.Errorf("backend called again: %s", <-called)
			}
		})
	}
}

// TestFlagReadBackFails: a change that was made is ok even when the flag
// cannot be read back; the answer then has no flag.
func TestFlagReadBackFails(t *testing.T) {
	f := newFake()
	f.flagsErr = errors.New("no answer")
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandFlag, Name: "search_v2", Percent: ptr(10)})
	if len(got) != 1 || got[0].Type != TypeResult || !got[0].Result.OK || got[0].Result.Flag != nil {
		t.Errorf("got %s, want ok without a flag", got[0].Raw)
	}
	if strings.Contains(string(got[0].Raw), `"flag"`) {
		t.Errorf("an absent flag is written: %s", got[0].Raw)
	}
}

// TestFlagNoAnswer: a supervisor that does not answer in time is an
// error, not a refusal: whether the flag changed is not known.
func TestFlagNoAnswer(t *testing.T) {
	f := newFake()
	f.setFlag = func(ctx context.Context, _ string, _ int, _ bool) error {
		<-ctx.Done()
		return ctx.Err()
	}
	o := options(t)
	o.RequestTimeout = 200 * time.Millisecond
	s := startServer(t, f, o)
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandFlag, Name: "search_v2", Reset: true})
	if len(got) != 1 || got[0].Type != TypeError || got[0].Error != "flag: no answer from the supervisor within 200ms" {
		t.Errorf("got %+v, want an error", got)
	}
}

// TestFlagEventOnTheWire: a flag event during a wait is streamed with its
// fields, its reason written as it is ("->", not "-\u003e"), and the log
// names the flag of a flag request.
func TestFlagEventOnTheWire(t *testing.T) {
	f := newFake()
	f.upgrade = func(context.Context) (int, error) {
		f.emit(supervisor.Event{Kind: supervisor.EventFlag, Gen: 2, Flag: "search_v2", Weight: 0,
			Reason: "search_v2: 10% -> 0% (analysis)"})
		return 0, fmt.Errorf("%w: generation 3: not ready within 30s", supervisor.ErrUpgradeFailed)
	}
	s := startServer(t, f, options(t))
	got := exchange(t, s.Path(), Request{Version: 1, Command: CommandUpgrade, Wait: true})
	if k := kinds(got); k != "flag:2 result:false:0" {
		t.Fatalf("got %s", k)
	}
	if raw := string(got[0].Raw); !strings.Contains(raw, `"reason":"search_v2: 10% -> 0% (analysis)"`) ||
		!strings.Contains(raw, `"flag":"search_v2"`) || !strings.Contains(raw, `"weight":0`) {
		t.Errorf("flag event %s", raw)
	}
	exchange(t, s.Path(), Request{Version: 1, Command: CommandFlag, Name: "search_v2", Percent: ptr(0)})
	if !strings.Contains(s.log.String(), `command=flag`) || !strings.Contains(s.log.String(), `flag=search_v2 percent=0`) {
		t.Errorf("log of a flag request:\n%s", s.log.String())
	}
}
