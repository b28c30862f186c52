//go:build linux

package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
)

// TestEventLines: the line of each kind of event; step numbers from the
// event, and instance numbers only where there are several instances.
func TestEventLines(t *testing.T) {
	step := func(weight int, pause time.Duration, n, steps int) *control.EventJSON {
		return &control.EventJSON{Kind: "step", Generation: 3, Weight: weight, DurationMS: pause.Milliseconds(), Step: n, Steps: steps}
	}
	tests := []struct {
		ev       *control.EventJSON
		several  bool
		numbered bool // the event has step numbers (a baton that sends them)
		want     string
	}{
		{step(10, 30*time.Second, 1, 2), false, true, "generation 3 at 10% (step 1/2, pause 30s)"},
		{step(50, 0, 2, 2), false, true, "generation 3 at 50% (step 2/2, holding until `baton promote`)"},
		{step(50, 0, 0, 0), false, true, "generation 3 at 50% (rolling)"},
		// A baton from before numbered steps: what the event says.
		{step(10, 90*time.Second, 0, 0), false, false, "generation 3 at 10% (pause 1m30s)"},
		{step(50, 0, 0, 0), false, false, "generation 3 at 50%"},

		{&control.EventJSON{Kind: "spawned", Generation: 3, Instance: 1, PID: 1234}, true, true,
			"generation 3, instance 1: spawned (pid 1234)"},
		{&control.EventJSON{Kind: "spawned", Generation: 3, PID: 1234}, false, true, "generation 3: spawned (pid 1234)"},
		{&control.EventJSON{Kind: "ready", Generation: 3, Instance: 0, DurationMS: 12}, true, true,
			"generation 3, instance 0: ready after 12ms"},
		{&control.EventJSON{Kind: "crashed", Generation: 2, Instance: 1, Reason: "exit status 1"}, true, true,
			"generation 2, instance 1: crashed (exit status 1)"},
		{&control.EventJSON{Kind: "stopping", Generation: 2, Instance: 1, Reason: "replaced by generation 3"}, true, true,
			"generation 2, instance 1: stopping (replaced by generation 3)"},
		// A generation's own events have no instance.
		{&control.EventJSON{Kind: "promoted", Generation: 3, Replaces: 2}, true, true, "generation 3: promoted, replacing generation 2"},
		{&control.EventJSON{Kind: "retired", Generation: 2}, true, true, "generation 2: retired"},
		{&control.EventJSON{Kind: "failed", Generation: 3, Reason: "instance 0 exited before it was ready: exit status 1"}, false, true,
			"generation 3: failed: instance 0 exited before it was ready: exit status 1"},
		{&control.EventJSON{Kind: "failed", Generation: 3, Reason: "aborted by `baton abort`", Aborted: true}, false, true,
			"generation 3: aborted by `baton abort`"},

		// Health, probation, analysis and the failed state.
		{&control.EventJSON{Kind: "unhealthy", Generation: 3, Instance: 1, Reason: "no WATCHDOG=1 for 10s"}, true, true,
			"generation 3, instance 1: unhealthy: no WATCHDOG=1 for 10s"},
		{&control.EventJSON{Kind: "unhealthy", Generation: 3, Reason: "health check failed 3 times in a row: connection refused"}, false, true,
			"generation 3: unhealthy: health check failed 3 times in a row: connection refused"},
		{&control.EventJSON{Kind: "analysis", Generation: 3, Reason: "fail: error_ratio: error ratio 0.2 > 0.012"}, false, true,
			"generation 3: analysis: fail: error_ratio: error ratio 0.2 > 0.012"},
		{&control.EventJSON{Kind: "confirmed", Generation: 3, DurationMS: 300000}, false, true, "generation 3: probation passed (5m0s)"},
		{&control.EventJSON{Kind: "reverted", Generation: 3, Replaces: 2, Reason: "instance 0 crashed during probation: exit status 2"},
			false, true, "generation 3: reverted: instance 0 crashed during probation: exit status 2 (back to generation 2)"},
		{&control.EventJSON{Kind: "failed-state", Generation: 3,
			Reason: "3 reverts within 1h0m0s; the last: generation 3: instance 0 crashed during probation: exit status 2"}, false, true,
			"FAILED: 3 reverts within 1h0m0s; the last: generation 3: instance 0 crashed during probation: exit status 2; " +
				"upgrades are refused until `baton upgrade --force`"},
		// The cause of a revert, the end of a revert without a standby.
		{&control.EventJSON{Kind: "reverted", Generation: 3, Replaces: 2, Cause: "liveness", Reason: "instance 0: no WATCHDOG=1 for 10s"},
			false, true, "generation 3: reverted (liveness): instance 0: no WATCHDOG=1 for 10s (back to generation 2)"},
		{&control.EventJSON{Kind: "promoted", Generation: 5, Replaces: 4, Rollback: true, RevertOf: 4}, false, true,
			"generation 5: promoted, completing the revert of generation 4"},
		{&control.EventJSON{Kind: "promoted", Generation: 5, Replaces: 4, Rollback: true}, false, true,
			"generation 5: promoted (rollback), replacing generation 4"},

		// A flag changed meanwhile: the service's, not a generation's.
		{&control.EventJSON{Kind: "flag", Generation: 2, Flag: "search_v2", Weight: 0, Reason: "search_v2: 10% -> 0% (analysis)"},
			false, true, "flag search_v2: 10% -> 0% (analysis)"},
		{&control.EventJSON{Kind: "flag", Generation: 2, Flag: "search_v2", Weight: 25}, false, true, "flag search_v2: now 25%"},

		// A kind newer than this client: its name and reason.
		{&control.EventJSON{Kind: "future", Generation: 3, Reason: "why"}, false, true, "generation 3: future (why)"},
	}
	for _, tt := range tests {
		if got := eventLine(tt.ev, tt.several, tt.numbered); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.ev, got, tt.want)
		}
	}
	raw := func(ev string) json.RawMessage {
		return json.RawMessage(`{"version":1,"type":"event","event":` + ev + `}`)
	}
	if !numbersSteps(raw(`{"kind":"step","weight":50,"step":0,"steps":0}`)) || numbersSteps(raw(`{"kind":"step","weight":50}`)) {
		t.Error("numbersSteps does not tell an event with a steps field from one without")
	}
}
