//go:build linux

package supervisor

import (
	"os"
	"time"
)

// Status is a snapshot of the supervisor, taken by the event loop.
type Status struct {
	Service     string // [service] name
	ConfigPath  string // the file re-read at every upgrade
	PID         int    // baton's own pid
	Listeners   []ListenerStatus
	Generations []GenerationStatus // oldest first
	Serving     int                // id of the serving generation, 0 if none
	Candidate   int                // id of the upgrade in progress, 0 if none
	Queued      bool               // another upgrade was asked for and follows the one in progress
	Stopping    bool
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Name, Network, Address string
	Mode                   string // ModeSteered or ModeShared
	Why                    string // why this mode
}

// GenerationStatus describes one generation.
type GenerationStatus struct {
	ID         int
	State      string // starting, serving, draining, stopping
	PID        int    // 0 while a restart is pending
	Ready      bool
	Started    time.Time
	ReadyAfter time.Duration // of the current process, 0 until ready
	Restarts   int
	Status     string // last STATUS= from the process
	Executable string // the command's executable, as resolved when the process started
	SHA256     string // hex SHA-256 of that file when the process started; "" if unreadable
	GaveUp     bool   // crashed too often; no process, no more restarts
}

func (s *Supervisor) status() Status {
	st := Status{Service: s.base.Service.Name, ConfigPath: s.opts.ConfigPath, PID: os.Getpid(),
		Serving: s.servingID(), Candidate: idOf(s.candidate), Queued: s.queued, Stopping: s.stopping}
	for _, l := range s.listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{
			Name: l.spec.Name, Network: l.spec.Network, Address: l.bound.Address, Mode: l.mode, Why: l.reason,
		})
	}
	for _, g := range s.gens {
		gs := GenerationStatus{ID: g.id, State: g.state.String(), Started: g.started, Restarts: g.restarts,
			GaveUp: g.gaveUp, Executable: g.exe, SHA256: g.exeSHA256}
		if p := g.proc; p != nil {
			gs.PID, gs.Ready, gs.Status = p.pid, p.ready, p.status
			if p.ready {
				gs.ReadyAfter = p.readyAt.Sub(p.started)
			}
		}
		st.Generations = append(st.Generations, gs)
	}
	return st
}
