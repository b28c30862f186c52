//go:build linux

package main

// The lines `baton upgrade --wait` and `baton rollback --wait` print: one
// per event of the wait, e.g. "generation 3: ready after 12ms", or "flag
// search_v2: 10% -> 0% (analysis)" for a flag changed meanwhile.

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

// lookupTimeout bounds the status asked for while following an upgrade,
// to learn whether the service runs several instances; without an answer
// the lines say less.
const lookupTimeout = 2 * time.Second

// progress turns the events of a wait into lines. An event says what
// happened, the canary's step number included, but not whether the
// service runs several instances (so that instance numbers are worth
// showing): that comes from one status, asked for on a second connection
// when the first event about an instance comes.
type progress struct {
	socket string
	// several: instance numbers are worth showing; nil until known.
	several *bool
}

// line is the progress line of ev; raw is the response line it came in.
func (p *progress) line(ev *control.EventJSON, raw json.RawMessage) string {
	switch {
	case hasInstance(ev.Kind) && p.several == nil:
		several := ev.Instance > 0
		if st := p.status(); st != nil && !several {
			for _, g := range st.Generations {
				several = several || len(g.Instances) > 1
			}
		}
		p.several = &several
	case hasInstance(ev.Kind) && ev.Instance > 0:
		*p.several = true
	}
	return eventLine(ev, p.several != nil && *p.several, numbersSteps(raw))
}

// status asks for a status for lookupTimeout; nil if none came.
func (p *progress) status() *control.StatusJSON {
	var st *control.StatusJSON
	if err := ask("status", p.socket, control.Request{Command: control.CommandStatus}, lookupTimeout,
		func(r control.Response) { st = r.Status }); err != nil {
		return nil // the line goes without what the status would have added
	}
	return st
}

// numbersSteps reports whether the event line raw has a "steps" field: a
// baton that numbers canary steps in its events, so that a step event
// without a number is a rolling update's. An older baton leaves both out.
func numbersSteps(raw json.RawMessage) bool {
	var line struct {
		Event map[string]json.RawMessage `json:"event"`
	}
	if json.Unmarshal(raw, &line) != nil {
		return false
	}
	_, ok := line.Event["steps"]
	return ok
}

// hasInstance: events of this kind are about one instance.
func hasInstance(kind string) bool {
	switch kind {
	case supervisor.EventSpawned, supervisor.EventReady, supervisor.EventStopping, supervisor.EventCrashed,
		supervisor.EventGaveUp, supervisor.EventUnhealthy:
		return true
	}
	return false
}

// eventLine is the progress line of one event, e.g. "generation 3: ready
// after 12ms". several puts instance numbers into the lines of instances;
// numbered says that step events carry their canary step number (see
// numbersSteps).
func eventLine(ev *control.EventJSON, several, numbered bool) string {
	who := fmt.Sprintf("generation %d", ev.Generation)
	if several && hasInstance(ev.Kind) {
		who += fmt.Sprintf(", instance %d", ev.Instance)
	}
	what := ev.Kind
	switch ev.Kind {
	case supervisor.EventStep:
		return stepLine(ev, numbered)
	case supervisor.EventFailedState:
		// Not one generation's: the whole service's, and the reason names
		// the generation.
		return "FAILED: " + ev.Reason + "; upgrades are refused until `baton upgrade --force`"
	case supervisor.EventFlag:
		// The service's too: "flag search_v2: 0% -> 10% (operator)".
		if ev.Reason != "" {
			return "flag " + ev.Reason
		}
		return fmt.Sprintf("flag %s: now %s", ev.Flag, flagValue(ev.Weight))
	case supervisor.EventSpawned:
		what = fmt.Sprintf("spawned (pid %d)", ev.PID)
	case supervisor.EventReady:
		what = "ready after " + formatMS(ev.DurationMS)
	case supervisor.EventPromoted:
		what = "promoted"
		switch {
		case ev.RevertOf != 0:
			// Started again in place of the reverted generation, which it
			// replaces: that is the news.
			what += fmt.Sprintf(", completing the revert of generation %d", ev.RevertOf)
		case ev.Rollback:
			what += " (rollback)"
		}
		if ev.Replaces != 0 && ev.Replaces != ev.RevertOf {
			what += fmt.Sprintf(", replacing generation %d", ev.Replaces)
		}
	case supervisor.EventFailed:
		what = "failed: " + ev.Reason
		if ev.Aborted {
			what = "aborted by `baton abort`"
		}
	case supervisor.EventGaveUp:
		what = "gave up restarting"
		if ev.Reason != "" {
			what += " (" + ev.Reason + ")"
		}
	case supervisor.EventConfirmed:
		what = "probation passed"
		if ev.DurationMS > 0 {
			what += " (" + formatMS(ev.DurationMS) + ")"
		}
	case supervisor.EventReverted:
		what = "reverted: " + ev.Reason
		if ev.Cause != "" {
			what = "reverted (" + ev.Cause + "): " + ev.Reason
		}
		if ev.Replaces != 0 {
			what += fmt.Sprintf(" (back to generation %d)", ev.Replaces)
		}
	case supervisor.EventUnhealthy, supervisor.EventAnalysis:
		what += ": " + ev.Reason
	default: // draining, stopping, retired, crashed, and kinds newer than this client
		if ev.Reason != "" {
			what += " (" + ev.Reason + ")"
		}
	}
	return who + ": " + what
}

// stepLine is the line of a step event: "generation 3 at 10% (step 1/2,
// pause 30s)", "generation 3 at 50% (rolling)". From a baton that does not
// number its steps, the line has the weight and pause only.
func stepLine(ev *control.EventJSON, numbered bool) string {
	line := fmt.Sprintf("generation %d at %d%%", ev.Generation, ev.Weight)
	pause := ""
	if ev.DurationMS > 0 {
		pause = "pause " + formatMS(ev.DurationMS)
	}
	switch {
	case ev.Steps > 0 && pause == "":
		return line + fmt.Sprintf(" (step %d/%d, holding until `baton promote`)", ev.Step, ev.Steps)
	case ev.Steps > 0:
		return line + fmt.Sprintf(" (step %d/%d, %s)", ev.Step, ev.Steps, pause)
	case numbered:
		return line + " (rolling)"
	case pause != "":
		return line + " (" + pause + ")"
	default:
		return line
	}
}
