//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

type genState int

const (
	genStarting genState = iota // the candidate: started, no share of new connections yet
	genCanary                   // the candidate with a share of new connections (a canary step, or a rolling update under way)
	genServing                  // routed: new connections reach it
	genStandby                  // replaced, kept running and unrouted while its successor is on probation
	genDraining                 // unrouted, its instances draining
	genStopping                 // stop signal sent to every instance, waiting for them to exit
)

func (st genState) String() string {
	return [...]string{"starting", "canary", "serving", "standby", "draining", "stopping"}[st]
}

// generation is one version of the service: Instances processes of one
// config. Owned by the event loop.
//
// Invariant: a generation that gets new connections of a steered listener
// has each of its routed instances' sockets in the steering program's
// slots of its half (A for the serving generation, B for the candidate),
// and no other socket there.
type generation struct {
	id        int
	cfg       *Config // pinned: restarts use this, not a newer file
	state     genState
	instances []*instance // in slot order; retired ones are removed
	started   time.Time
	// want is how many instances the generation should have once its
	// upgrade is done (cfg.Service.Instances), or, for the serving
	// generation of a rolling update, how many it has left.
	want int

	step       int       // canary: index of the current step in cfg.Upgrade.Steps; -1 before the first
	stepStart  time.Time // when the current step (or weight) began
	stepTimer  *time.Timer
	holding    bool      // canary: the current step waits for `baton promote`
	aborting   string    // non-empty: the upgrade to this generation is being undone, and why
	aborted    bool      // by `baton abort`
	replacedAt time.Time // when a successor was promoted
	rollback   bool      // started by a rollback, from the previous generation's config
	direct     bool      // promoted once ready, whatever the strategy: a rollback, or a first generation
	stepBegun  bool      // canary: the current step's weight is set
	exe        string    // the executable, as resolved when it was pinned
	exeSHA256  string    // SHA-256 (hex) of what runs: the pinned file; "" until computed
	hashing    bool      // exeSHA256 is being computed
	// exeFile is the executable, opened once (O_PATH) when the first
	// instance starts: every process of the generation runs this file,
	// even after a deploy renamed another over its path or deleted it.
	exeFile   *os.File
	gaveUp    bool // every instance crashed more than [restart] max_tries allows
	crashes   int  // processes that exited on their own while it served or was a candidate
	unhealthy int  // liveness failures
	// Probation (see probation.go): when it ends, and the timer for it.
	probationEnd   time.Time
	probationTimer *time.Timer
	reverting      string // being replaced by a revert: why
	revertOf       string // started by a revert (of the generation on probation): why
	revertOfGen    int    // and of which generation
	nextIndex      int    // index for the next instance
}

type instState int

const (
	instRunning  instState = iota // its process runs, or a restart is pending
	instDraining                  // unrouted, waiting for its accept queues to empty
	instStopping                  // stop signal sent, waiting for its process to exit
)

// instance is one process slot of a generation: its own socket for each
// steered listener (the shared socket for the others) and the process
// currently running in it. A crashed instance is restarted into the same
// sockets, so the other instances' shares do not move. Owned by the event
// loop.
type instance struct {
	gen     *generation
	index   int               // 0-based, for logs and BATON_INSTANCE; unique within the generation
	sockets []*handoff.Socket // one per listener, in listener order
	owned   []bool            // sockets[i] belongs to this instance and is steered
	private []bool            // sockets[i] belongs to this instance, on a private listener
	routed  bool              // its steered sockets sit in the steering program's slots (shared mode: it counts as taking traffic)
	// everRouted: it has been routed, so its queues may hold connections
	// and it drains before it stops.
	everRouted bool
	state      instState
	proc       *process // nil while a restart is pending, or after the last exit

	gaveUp       bool // crashed more than [restart] max_tries allows: no more restarts
	crashes      int  // consecutive crashes, reset after a long enough run
	restarts     int  // processes started after the first
	restartTimer *time.Timer
	drainTimer   *time.Timer
	drainUntil   time.Time
	drainWhy     string // why it drains: the reason given with its stop signal
}

// process is one running process of an instance. Owned by the event loop.
type process struct {
	inst       *instance
	gen        *generation
	p          *os.Process
	pid        int
	started    time.Time
	ready      bool
	readyAt    time.Time
	exited     bool
	stopSent   bool
	notReady   bool   // stopped because it missed its readiness deadline
	unhealthy  string // stopped because of a liveness failure: why
	status     string // last STATUS= it sent
	cancel     context.CancelFunc
	readyTimer *time.Timer
	killTimer  *time.Timer
	// Once ready: its health prober (nil without [health] check) and
	// watchdog deadline (nil without [health] watchdog).
	prober        *probe.Prober
	healthCancel  context.CancelFunc
	watchdogTimer *time.Timer
}

func (p *process) stopTimers() {
	if p.cancel != nil {
		p.cancel()
	}
	if p.healthCancel != nil {
		p.healthCancel()
	}
	if p.watchdogTimer != nil {
		p.watchdogTimer.Stop()
	}
	if p.readyTimer != nil {
		p.readyTimer.Stop()
	}
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
}

// newGeneration makes a generation from cfg, without instances yet.
func (s *Supervisor) newGeneration(cfg *Config, rollback bool) *generation {
	g := &generation{id: s.nextID, cfg: cfg, started: time.Now(), rollback: rollback, direct: rollback,
		want: cfg.Service.Instances, step: -1}
	s.nextID++
	return g
}

// addInstance makes an instance of g with its sockets and starts its
// process. On error nothing is left behind. The first instance added puts
// g among s.gens.
func (s *Supervisor) addInstance(g *generation) (*instance, error) {
	in := &instance{gen: g, index: g.nextIndex}
	for _, l := range s.listeners {
		sock, owned, err := l.socketFor()
		if err != nil {
			in.closeSockets()
			return nil, fmt.Errorf("generation %d instance %d: %w", g.id, in.index, err)
		}
		in.sockets = append(in.sockets, sock)
		in.owned = append(in.owned, owned && l.mode != ModePrivate)
		in.private = append(in.private, l.mode == ModePrivate)
	}
	if err := s.spawn(in); err != nil {
		in.closeSockets()
		return nil, err
	}
	g.nextIndex++
	g.instances = append(g.instances, in)
	if !slices.Contains(s.gens, g) {
		s.gens = append(s.gens, g)
	}
	return in, nil
}

// abandon kills a generation that just failed to start all its instances;
// nothing was routed to it. Its processes exit and it retires through the
// usual path.
func (s *Supervisor) abandon(g *generation) {
	if len(g.instances) == 0 {
		// Never among s.gens, so never retired: close what it holds.
		if g.exeFile != nil {
			_ = g.exeFile.Close() // O_PATH: nothing to flush
			g.exeFile = nil
		}
		return
	}
	s.stopGeneration(g, "the generation could not start every instance")
}

// closeSockets closes the instance's own sockets. Where steering is on,
// connections still queued in them move to a routed socket.
func (in *instance) closeSockets() {
	for i, sock := range in.sockets {
		if in.owned[i] || in.private[i] {
			_ = sock.Close() // nothing to do about a failed close of a socket we give up
		}
	}
	in.sockets, in.owned, in.private = nil, nil, nil
}

// address is the address of the instance's socket of listener i (for a
// private listener, its own port).
func (in *instance) address(i int) string {
	if i < len(in.sockets) {
		return in.sockets[i].Addr()
	}
	return ""
}

// steered reports whether the instance has a steered socket of its own.
func (in *instance) steered() bool {
	return slices.Contains(in.owned, true)
}

// pidAttrs are log attributes naming g's processes: "pid", the first, and
// "pids", all of them, when there are several.
func (g *generation) pidAttrs() slog.Attr {
	pids := g.pids()
	if len(pids) > 1 {
		return slog.Group("", "pid", pids[0], "pids", pids)
	}
	return slog.Int("pid", firstPID(g))
}

// strategy is how g is rolled out.
func (g *generation) strategy() string {
	if g.direct {
		return StrategyBlueGreen
	}
	return g.cfg.Upgrade.Strategy
}

// live are the generation's instances that have not been asked to stop.
func (g *generation) live() []*instance {
	var out []*instance
	for _, in := range g.instances {
		if in.state == instRunning {
			out = append(out, in)
		}
	}
	return out
}

// allReady reports whether the generation has its wanted number of live
// instances, each with a ready process.
func (g *generation) allReady() bool {
	live := g.live()
	if len(live) < g.want {
		return false
	}
	for _, in := range live {
		if in.proc == nil || !in.proc.ready {
			return false
		}
	}
	return true
}

// pids are the pids of the generation's running processes.
func (g *generation) pids() []int {
	var out []int
	for _, in := range g.instances {
		if in.proc != nil {
			out = append(out, in.proc.pid)
		}
	}
	return out
}
