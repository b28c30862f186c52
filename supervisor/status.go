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
	// Probation is the id of the promoted generation on probation (0 if
	// none), until ProbationEnd; Standby the replaced one kept running.
	Probation    int
	ProbationEnd time.Time
	Standby      int
	// Failed says why the service is in the failed state ("" if not):
	// upgrades are refused until one is forced.
	Failed string
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
	State      string // starting, canary, serving, standby, draining, stopping
	Strategy   string // how it is rolled out: blue-green, canary, rolling
	PID        int    // its first running process, 0 if none runs
	PIDs       []int  // every running process, in instance order
	Ready      bool   // every instance it should have runs a ready process
	Started    time.Time
	ReadyAfter time.Duration // the slowest instance's time to ready, 0 until all are
	Restarts   int           // of all its instances
	Status     string        // last STATUS= from its first process
	Executable string        // the command's executable, as resolved when a process last started
	SHA256     string        // hex SHA-256 of that file then; "" if unreadable
	GaveUp     bool          // crashed too often; no process, no more restarts
	Instances  []InstanceStatus

	// Weight is the percent of new connections the generation should get
	// (its target), Share the percent it did get since the last change of
	// weights, as counted by the steering programs (-1: no connection yet,
	// or no steered listener). ShareEstimated: some listener is in shared
	// mode, where Share is the generation's part of the running processes.
	Weight         int
	Share          float64
	ShareEstimated bool
	Connections    uint64 // new connections the programs gave it since the last change
	// Canary: the current step (1-based; 0 before the first, Steps+1 for
	// the final move to 100%), how many there are, and whether the step
	// holds until `baton promote`.
	Step, Steps int
	Holding     bool
	Aborting    string // the upgrade to it is being undone, and why
	RevertOf    int    // it was started to revert that generation (which had no standby)
}

// InstanceStatus describes one instance of a generation.
type InstanceStatus struct {
	Index      int
	State      string // running, draining, stopping
	PID        int    // 0 while a restart is pending
	Ready      bool
	ReadyAfter time.Duration
	Restarts   int
	Status     string // last STATUS= from the process
	Routed     bool   // it gets new connections
	GaveUp     bool
}

func (st instState) String() string {
	return [...]string{"running", "draining", "stopping"}[st]
}

func (s *Supervisor) status() Status {
	st := Status{Service: s.base.Service.Name, ConfigPath: s.opts.ConfigPath, PID: os.Getpid(),
		Serving: s.servingID(), Candidate: idOf(s.candidate), Queued: s.queued, Stopping: s.stopping,
		Probation: idOf(s.probation), Standby: idOf(s.standby), Failed: s.failed}
	if s.probation != nil {
		st.ProbationEnd = s.probation.probationEnd
	}
	for _, l := range s.listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{
			Name: l.spec.Name, Network: l.spec.Network, Address: l.bound.Address, Mode: l.mode, Why: l.reason,
		})
	}
	a, b := s.measured()
	exact := s.exactWeights()
	steered := s.steeredListeners()
	for _, g := range s.gens {
		gs := GenerationStatus{ID: g.id, State: g.state.String(), Strategy: g.strategy(), Started: g.started,
			GaveUp: g.gaveUp, Executable: g.exe, SHA256: g.exeSHA256, Ready: g.allReady(), Share: -1,
			ShareEstimated: !exact, Aborting: g.aborting, RevertOf: g.revertOfGen}
		for _, in := range g.instances {
			is := InstanceStatus{Index: in.index, State: in.state.String(), Restarts: in.restarts,
				Routed: in.routed, GaveUp: in.gaveUp}
			if p := in.proc; p != nil {
				is.PID, is.Ready, is.Status = p.pid, p.ready, p.status
				if p.ready {
					is.ReadyAfter = p.readyAt.Sub(p.started)
				}
				gs.PIDs = append(gs.PIDs, p.pid)
				if gs.PID == 0 {
					gs.PID, gs.Status = p.pid, p.status
				}
			}
			gs.Restarts += in.restarts
			gs.ReadyAfter = max(gs.ReadyAfter, is.ReadyAfter)
			gs.Instances = append(gs.Instances, is)
		}
		if !gs.Ready {
			gs.ReadyAfter = 0
		}
		var mine uint64
		switch g {
		case s.serving:
			gs.Weight, mine = 100-s.weight, a
		case s.candidate:
			gs.Weight, mine = s.weight, b
		}
		if g == s.serving || g == s.candidate {
			switch {
			case !exact:
				gs.Share = 100 * s.instanceShareOf(g)
			case steered && a+b > 0:
				gs.Share = 100 * float64(mine) / float64(a+b)
			}
			if steered {
				gs.Connections = mine
			}
		}
		if g.strategy() == StrategyCanary {
			gs.Steps, gs.Step, gs.Holding = len(g.cfg.Upgrade.Steps), g.step+1, g.holding
		}
		st.Generations = append(st.Generations, gs)
	}
	return st
}

// instanceShareOf is g's part of the routed processes of the serving
// generation and the candidate: its share in shared mode.
func (s *Supervisor) instanceShareOf(g *generation) float64 {
	count := func(x *generation) int {
		if x == nil {
			return 0
		}
		return len(routedInstances(x))
	}
	total := count(s.serving) + count(s.candidate)
	if total == 0 {
		return 0
	}
	return float64(count(g)) / float64(total)
}
