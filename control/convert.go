//go:build linux

package control

import (
	"math"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// NewStatusJSON is the protocol's form of st.
func NewStatusJSON(st supervisor.Status) *StatusJSON {
	j := &StatusJSON{
		Service:     st.Service,
		Config:      st.ConfigPath,
		BatonPID:    st.PID,
		Listeners:   []ListenerJSON{},
		Generations: []GenerationJSON{},
		Serving:     st.Serving,
		Stopping:    st.Stopping,
		Probation:   st.Probation,
		Standby:     st.Standby,
		Failed:      st.Failed,
	}
	if st.Probation != 0 {
		j.ProbationEnd = timeJSON(st.ProbationEnd)
	}
	if st.Candidate != 0 {
		j.Upgrade = &UpgradeJSON{Candidate: st.Candidate}
	}
	for _, l := range st.Listeners {
		j.Listeners = append(j.Listeners, ListenerJSON{
			Name: l.Name, Network: l.Network, Address: l.Address, Mode: l.Mode, Why: l.Why,
		})
	}
	for _, g := range st.Generations {
		j.Generations = append(j.Generations, newGenerationJSON(g))
	}
	return j
}

func newGenerationJSON(g supervisor.GenerationStatus) GenerationJSON {
	gj := GenerationJSON{
		ID:             g.ID,
		State:          g.State,
		Strategy:       g.Strategy,
		PIDs:           []int{},
		Started:        timeJSON(g.Started),
		Ready:          g.Ready,
		TimeToReadyMS:  g.ReadyAfter.Milliseconds(),
		Executable:     g.Executable,
		SHA256:         g.SHA256,
		Restarts:       g.Restarts,
		GaveUp:         g.GaveUp,
		Status:         g.Status,
		Instances:      []InstanceJSON{},
		Weight:         g.Weight,
		ShareEstimated: g.ShareEstimated,
		Connections:    g.Connections,
		Step:           g.Step,
		Steps:          g.Steps,
		Holding:        g.Holding,
		Aborting:       g.Aborting,
		RevertOf:       g.RevertOf,
	}
	gj.PIDs = append(gj.PIDs, g.PIDs...)
	if g.Share >= 0 {
		share := math.Round(g.Share*10) / 10
		gj.Share = &share
	}
	for _, in := range g.Instances {
		gj.Instances = append(gj.Instances, InstanceJSON{
			Index:         in.Index,
			State:         in.State,
			PID:           in.PID,
			Ready:         in.Ready,
			TimeToReadyMS: in.ReadyAfter.Milliseconds(),
			Routed:        in.Routed,
			Restarts:      in.Restarts,
			GaveUp:        in.GaveUp,
			Status:        in.Status,
		})
	}
	return gj
}

// NewEventJSON is the protocol's form of ev.
func NewEventJSON(ev supervisor.Event) *EventJSON {
	return &EventJSON{
		Time:       timeJSON(ev.Time),
		Kind:       ev.Kind,
		Generation: ev.Gen,
		Instance:   ev.Instance,
		PID:        ev.PID,
		Replaces:   ev.Replaces,
		Rollback:   ev.Rollback,
		Reason:     ev.Reason,
		DurationMS: ev.Duration.Milliseconds(),
		Weight:     ev.Weight,
		Step:       ev.Step,
		Steps:      ev.Steps,
		Aborted:    ev.Aborted,
		Flag:       ev.Flag,
		By:         ev.By,
		Cause:      ev.Cause,
		Outcome:    ev.Outcome,
		RevertOf:   ev.RevertOf,
	}
}

// NewFlagsJSON is the protocol's form of the flags, their version and the
// flags file.
func NewFlagsJSON(flags []supervisor.FlagStatus, version int64, file string) *FlagsJSON {
	j := &FlagsJSON{Version: version, File: file, Flags: []FlagJSON{}}
	for _, f := range flags {
		j.Flags = append(j.Flags, newFlagJSON(f))
	}
	return j
}

func newFlagJSON(f supervisor.FlagStatus) FlagJSON {
	return FlagJSON{Name: f.Name, Percent: f.Percent, Default: f.Default, Set: f.Set, Description: f.Description,
		OffOn: f.OffOn, Changed: timeJSON(f.Changed), By: f.By}
}

// timeJSON formats t for the protocol; the zero time (never set) is "".
func timeJSON(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
