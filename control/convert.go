//go:build linux

package control

import (
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
		gj := GenerationJSON{
			ID:            g.ID,
			State:         g.State,
			PIDs:          []int{},
			Started:       timeJSON(g.Started),
			Ready:         g.Ready,
			TimeToReadyMS: g.ReadyAfter.Milliseconds(),
			Executable:    g.Executable,
			SHA256:        g.SHA256,
			Restarts:      g.Restarts,
			GaveUp:        g.GaveUp,
			Status:        g.Status,
		}
		if g.PID != 0 {
			gj.PIDs = append(gj.PIDs, g.PID)
		}
		j.Generations = append(j.Generations, gj)
	}
	return j
}

// NewEventJSON is the protocol's form of ev.
func NewEventJSON(ev supervisor.Event) *EventJSON {
	return &EventJSON{
		Time:       timeJSON(ev.Time),
		Kind:       ev.Kind,
		Generation: ev.Gen,
		PID:        ev.PID,
		Replaces:   ev.Replaces,
		Rollback:   ev.Rollback,
		Reason:     ev.Reason,
		DurationMS: ev.Duration.Milliseconds(),
	}
}

// timeJSON formats t for the protocol; the zero time (never set) is "".
func timeJSON(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
