//go:build linux

package metrics

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/baton-sh/baton/supervisor"
)

// declaredFlags are a flag following its config, one set by an operator
// and one turned off by its analysis.
func declaredFlags() []supervisor.FlagStatus {
	return []supervisor.FlagStatus{
		{Name: "new_checkout", Percent: 100, Default: 100, By: "config"},
		{Name: "search_v2", Percent: 10, Set: true, By: "operator"},
		{Name: "shout", Percent: 0, Default: 100, Set: true, OffOn: "analysis", By: "analysis"},
	}
}

// TestFlagPercent: each declared flag's value, read at scrape time, and
// none when the supervisor does not answer.
func TestFlagPercent(t *testing.T) {
	flags := declaredFlags()
	var fail error
	src := newFakeSource(noStatus)
	src.flags = func(context.Context) ([]supervisor.FlagStatus, error) { return flags, fail }
	m := New(src)
	want := map[string]float64{`flag="new_checkout"`: 100, `flag="search_v2"`: 10, `flag="shout"`: 0}
	if got := series(t, m.reg, "baton_flag_percent"); !maps.Equal(got, want) {
		t.Errorf("baton_flag_percent = %v, want %v", got, want)
	}
	// The next scrape reads again: a flag gone with a new config is gone.
	flags = flags[1:2]
	flags[0].Percent = 50
	if got := series(t, m.reg, "baton_flag_percent"); !maps.Equal(got, map[string]float64{`flag="search_v2"`: 50}) {
		t.Errorf("after a change: baton_flag_percent = %v", got)
	}
	fail = supervisor.ErrStopped
	if got := series(t, m.reg, "baton_flag_percent"); len(got) != 0 {
		t.Errorf("without an answer: baton_flag_percent = %v, want none", got)
	}
}

// TestFlagChanges: changes counted from flag events by flag and by who
// made them; the counters of the flags declared when Run starts exist at
// 0, and those of a flag declared later from its first change.
func TestFlagChanges(t *testing.T) {
	flag := func(name string, percent int, reason string) supervisor.Event {
		by := reason[strings.LastIndex(reason, "(")+1 : len(reason)-1] // "... (operator)"
		return supervisor.Event{Kind: supervisor.EventFlag, Gen: 2, Flag: name, Weight: percent, Reason: reason, By: by}
	}
	tests := []struct {
		name     string
		declared bool // Flags answers declaredFlags when Run starts
		evs      []supervisor.Event
		want     map[string]float64
	}{
		{"declared, no change yet", true, nil, map[string]float64{
			`by="analysis",flag="new_checkout"`: 0, `by="operator",flag="new_checkout"`: 0,
			`by="analysis",flag="search_v2"`: 0, `by="operator",flag="search_v2"`: 0,
			`by="analysis",flag="shout"`: 0, `by="operator",flag="shout"`: 0,
		}},
		{"set, turned off by its analysis, reset", true, []supervisor.Event{
			flag("shout", 100, "shout: 0% -> 100% (operator)"),
			flag("shout", 0, "shout: 100% -> 0% (analysis)"),
			flag("shout", 100, "shout: 0% -> 100% (operator)"),
			flag("search_v2", 0, "search_v2: 10% -> 0% (operator)"),
		}, map[string]float64{
			`by="analysis",flag="new_checkout"`: 0, `by="operator",flag="new_checkout"`: 0,
			`by="analysis",flag="search_v2"`: 0, `by="operator",flag="search_v2"`: 1,
			`by="analysis",flag="shout"`: 1, `by="operator",flag="shout"`: 2,
		}},
		// No answer when Run starts: each flag's counters from its first
		// change. A reason that does not say who is counted all the same.
		{"not declared at the start", false, []supervisor.Event{
			flag("search_v2", 10, "search_v2: 0% -> 10% (operator)"),
			flag("later", 100, "later: 0% -> 100% (config)"),
			flag("later", 50, "changed somehow"),
			flag("later", 40, "later: 50% -> 40% (someone)"),
			flag("", 40, "no flag named: not counted"),
		}, map[string]float64{
			`by="analysis",flag="search_v2"`: 0, `by="operator",flag="search_v2"`: 1,
			`by="analysis",flag="later"`: 0, `by="operator",flag="later"`: 0, `by="config",flag="later"`: 1,
			`by="other",flag="later"`: 2,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(noStatus)
			if tt.declared {
				src.flags = func(ctx context.Context) ([]supervisor.FlagStatus, error) {
					if _, ok := ctx.Deadline(); !ok {
						return nil, errors.New("flags asked without a deadline")
					}
					return declaredFlags(), nil
				}
			}
			m := runSource(t, src, tt.evs...)
			if got := series(t, m.reg, "baton_flag_changes_total"); !maps.Equal(got, tt.want) {
				t.Errorf("baton_flag_changes_total = %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestRevertCauses: reverts during probation by cause, a rollback outside
// one as manual; a cause this package does not know is "other".
func TestRevertCauses(t *testing.T) {
	var evs []supervisor.Event
	for i, c := range append(append([]string{}, probationCauses...), supervisor.CauseCrash, "a-newer-cause", "") {
		evs = append(evs, supervisor.Event{Kind: supervisor.EventReverted, Gen: 10 + i, Replaces: 9 + i, Cause: c})
	}
	evs = append(evs, supervisor.Event{Kind: supervisor.EventPromoted, Gen: 30, Replaces: 29, Rollback: true})
	m := runEvents(t, evs...)
	want := map[string]float64{
		`cause="rollback",reason="manual"`:    1,
		`cause="crash",reason="probation"`:    2,
		`cause="liveness",reason="probation"`: 1,
		`cause="analysis",reason="probation"`: 1,
		`cause="rollback",reason="probation"`: 1,
		`cause="abort",reason="probation"`:    1,
		`cause="other",reason="probation"`:    2,
	}
	if got := series(t, m.reg, "baton_reverts_total"); !maps.Equal(got, want) {
		t.Errorf("baton_reverts_total = %v\nwant %v", got, want)
	}
}
