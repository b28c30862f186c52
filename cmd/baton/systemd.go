//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/baton-sh/baton/supervisor"
)

// The systemd notifier speaks sd_notify(3) to the manager that started
// baton, on baton's own NOTIFY_SOCKET (children get baton's socket, never
// this one). Its invariant: systemd hears READY=1 only when the Status the
// supervisor's loop gave says it is true, and after RELOADING=1 only once
// every upgrade asked for until then is decided. Events only say when to
// look again; a lost event delays a STATUS line, it never makes one wrong.
//
// With [upgrade] probation, READY=1 answers a reload at promotion, not at
// the end of the probation: the new generation serves, and a reload must
// not outlast systemd's TimeoutStartSec for the probation's length. A
// revert comes later, as a STATUS line ("generation 3 reverted: ..."), as
// does the failed state ("FAILED: ...").

const (
	// notifyEventBuffer is how far the notifier may fall behind the
	// supervisor's events before it loses some.
	notifyEventBuffer = 256
	// notifyRecheck: while systemd waits for READY=1 (at start, or during
	// a reload), Status is read again this often, in case the event that
	// would have said so was lost.
	notifyRecheck = time.Second
)

// notifySource is what the notifier needs of a *supervisor.Supervisor.
type notifySource interface {
	Status(ctx context.Context) (supervisor.Status, error)
	Subscribe(buffer int) (<-chan supervisor.Event, func())
}

// systemdNotifier tells systemd what baton is doing: READY=1 once the first
// generation serves, RELOADING=1 (with MONOTONIC_USEC=) and READY=1 around
// each SIGHUP upgrade, STATUS= lines, STOPPING=1, and WATCHDOG=1 while the
// supervisor's loop answers. Without NOTIFY_SOCKET every method is a no-op.
type systemdNotifier struct {
	src      notifySource
	log      *slog.Logger
	events   <-chan supervisor.Event // nil when not under systemd
	unsub    func()
	watchdog time.Duration // WATCHDOG_USEC; 0 when systemd keeps no watchdog on baton
	reloads  chan struct{} // Reloading → Run: look at Status again (buffer 1)

	// Owned by Run.
	started  bool   // READY=1 was sent for the first serving generation
	answered int    // reloads (counted as in requested) that READY=1 has answered
	failure  string // why the last upgrade failed or was reverted, until a promotion
	reverted int    // the generation reverted last, until a promotion that is not its revert's
	crashGen int    // the generation that crashed last, and why
	crash    string

	// mu guards the fields below and orders the datagrams: a check and
	// the send it allows are one step, so READY=1 can never follow a
	// RELOADING=1 or STOPPING=1 it did not see. Held for a send only.
	mu        sync.Mutex
	stopping  bool   // STOPPING=1 was sent; no READY=1 or RELOADING=1 follows it
	asked     int    // RELOADING=1 messages sent
	requested int    // of those, the ones whose upgrade reached the supervisor's queue
	status    string // the last STATUS= sent
	sendErr   bool   // a failed send was logged; later ones are not
}

// newSystemdNotifier subscribes to src's events at once, so that none is
// missed between here and Run; call it before the supervisor runs. Without
// NOTIFY_SOCKET it subscribes to nothing.
func newSystemdNotifier(src notifySource, log *slog.Logger) *systemdNotifier {
	n := &systemdNotifier{src: src, log: log, reloads: make(chan struct{}, 1)}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return n // not under systemd: a no-op, not an error
	}
	n.events, n.unsub = src.Subscribe(notifyEventBuffer)
	// daemon checks WATCHDOG_PID: a watchdog meant for another process
	// (baton's parent, say) is not baton's to keep.
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog ignored: WATCHDOG_USEC or WATCHDOG_PID is malformed", "err", err)
	}
	n.watchdog = wd
	if wd > 0 {
		log.Info("systemd watchdog enabled", "interval", wd, "ping_every", wd/2)
	}
	return n
}

// Reloading tells systemd that baton reloads (RELOADING=1 with the
// CLOCK_MONOTONIC time, read now, after the signal), then calls request,
// which must hand the upgrade to the supervisor before it returns, as
// Supervisor.RequestUpgrade does. READY=1 follows once that upgrade, and any
// queued behind it, is decided, whether it was promoted or failed.
//
// request is called here rather than by the caller so that the notifier
// knows when the upgrade is in the supervisor's queue: from then on, any
// Status it asks for reflects it, and an older upgrade decided in between
// cannot end this reload early.
func (n *systemdNotifier) Reloading(request func()) {
	if n.events == nil {
		request()
		return
	}
	n.mu.Lock()
	announced := !n.stopping
	if announced {
		n.asked++
		// The precedence rules would let READY=1 win over RELOADING=1 in
		// one message: this one holds no READY.
		n.sendLocked(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=upgrading")
		n.status = "upgrading"
	}
	n.mu.Unlock()
	request()
	if !announced {
		return
	}
	n.mu.Lock()
	n.requested++
	n.mu.Unlock()
	select {
	case n.reloads <- struct{}{}:
	default: // one is pending; Run reads it after this request was queued
	}
}

// Stopping tells systemd that baton begins to stop. Later calls, and
// Run's own discovery that the supervisor stops, send nothing more.
func (n *systemdNotifier) Stopping() {
	if n.events == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked("stopping")
}

func (n *systemdNotifier) stopLocked(status string) {
	if n.stopping {
		return
	}
	n.stopping = true
	n.sendLocked(daemon.SdNotifyStopping + "\nSTATUS=" + status)
	n.status = status
}

// Run follows the supervisor's events and keeps the watchdog until ctx
// ends. It returns at once when baton is not under systemd.
//
// At most one Status call is in flight, on its own goroutine, so a wedged
// loop holds one goroutine, never Run: Run goes on counting watchdog
// ticks, and a ping is sent only when the loop has answered within a
// quarter of the watchdog interval of the tick that asked.
func (n *systemdNotifier) Run(ctx context.Context) {
	if n.events == nil {
		return
	}
	defer n.unsub()

	var ping <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		ping = t.C
	}
	// Pings at half the interval, each within a quarter of it after its
	// tick: two pings are never more than three quarters apart.
	pingWait := n.watchdog / 4
	recheck := time.NewTimer(notifyRecheck)
	recheck.Stop()
	defer recheck.Stop()

	type result struct {
		st  supervisor.Status
		err error
	}
	results := make(chan result, 1)
	var (
		inflight bool
		look     = true // ask for Status when nothing is in flight
		snap     reloadSnap
		pingBy   time.Time // a ping is due if the loop answers before then
		skipped  bool      // a skipped ping was logged; reset by the next ping
	)
	skip := func() {
		if !skipped {
			skipped = true
			n.log.Warn("supervisor loop did not answer in time; systemd watchdog ping skipped",
				"within", pingWait)
		}
	}
	for {
		if look && !inflight {
			look, inflight = false, true
			snap = n.snapshot()
			go func() {
				st, err := n.src.Status(ctx)
				results <- result{st, err}
			}()
		}
		select {
		case <-ctx.Done():
			if inflight {
				<-results // Status returns when ctx ends
			}
			return
		case ev := <-n.events:
			n.observe(ev)
			look = true
		case <-n.reloads:
			look = true
		case <-recheck.C:
			look = true
		case now := <-ping:
			if !pingBy.IsZero() {
				skip() // no answer at all since the last tick
			}
			pingBy = now.Add(pingWait)
			look = true
		case r := <-results:
			inflight = false
			// Every event the loop emitted before it answered is in the
			// channel by now: read them first, so that the answer is
			// judged with the reasons they carry.
			for drained := false; !drained; {
				select {
				case ev := <-n.events:
					n.observe(ev)
					look = true
				default:
					drained = true
				}
			}
			if r.err != nil {
				if errors.Is(r.err, supervisor.ErrStopped) {
					n.Stopping() // stopped without a signal: `baton stop`, or a failed start
				}
				continue // ctx ended, or the supervisor is gone: no ping either way
			}
			if !pingBy.IsZero() {
				if time.Now().Before(pingBy) {
					n.send(daemon.SdNotifyWatchdog)
					skipped = false
				} else {
					skip()
				}
				pingBy = time.Time{}
			}
			if n.apply(r.st, snap) {
				recheck.Reset(notifyRecheck)
			}
		}
	}
}

// reloadSnap is the reload count as it was when a Status was asked for.
type reloadSnap struct{ asked, requested int }

func (n *systemdNotifier) snapshot() reloadSnap {
	n.mu.Lock()
	defer n.mu.Unlock()
	return reloadSnap{n.asked, n.requested}
}

// observe keeps what Status cannot tell: why things failed. Run only.
func (n *systemdNotifier) observe(ev supervisor.Event) {
	switch ev.Kind {
	case supervisor.EventPromoted:
		// Without a standby, a revert ends with the promotion of the
		// replaced generation started again: still the revert's news.
		if ev.RevertOf == 0 || ev.RevertOf != n.reverted {
			n.failure, n.reverted = "", 0
		}
	case supervisor.EventReverted:
		n.failure, n.reverted = fmt.Sprintf("generation %d reverted: %s", ev.Gen, ev.Reason), ev.Gen
	case supervisor.EventFailed:
		what := "upgrade"
		if ev.Rollback {
			what = "rollback"
		}
		if ev.Gen != 0 {
			n.failure = fmt.Sprintf("%s failed: generation %d: %s", what, ev.Gen, ev.Reason)
		} else {
			n.failure = fmt.Sprintf("%s failed: %s", what, ev.Reason)
		}
	case supervisor.EventCrashed:
		n.crashGen, n.crash = ev.Gen, ev.Reason
	}
}

// apply sends what st, asked for at snap, makes true. It reports whether
// systemd still waits for a READY=1. Run only.
func (n *systemdNotifier) apply(st supervisor.Status, snap reloadSnap) (waiting bool) {
	status := n.describe(st)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return false
	}
	if st.Stopping {
		n.stopLocked(status)
		return false
	}
	// Every reload announced by the time st was asked for had reached the
	// supervisor's queue, and none was announced since: st answers them.
	settled := snap.asked == snap.requested && n.asked == snap.asked
	decided := st.Candidate == 0 && !st.Queued
	var msg []string
	switch {
	case !n.started && servingReady(st):
		n.started = true
		msg = append(msg, daemon.SdNotifyReady)
		if settled && decided {
			n.answered = snap.requested
		}
	case n.started && settled && decided && snap.requested > n.answered:
		n.answered = snap.requested
		msg = append(msg, daemon.SdNotifyReady)
	}
	if len(msg) > 0 || status != n.status {
		msg = append(msg, "STATUS="+status)
		n.status = status
		n.sendLocked(strings.Join(msg, "\n"))
	}
	return !n.started || n.requested > n.answered
}

func servingReady(st supervisor.Status) bool {
	g, ok := generation(st, st.Serving)
	return ok && g.Ready && g.PID != 0
}

func generation(st supervisor.Status, id int) (supervisor.GenerationStatus, bool) {
	for _, g := range st.Generations {
		if g.ID == id && id != 0 {
			return g, true
		}
	}
	return supervisor.GenerationStatus{}, false
}

// describe is the STATUS= line for st, e.g. "generation 3 serving (pid
// 4121)", "upgrade failed: generation 4: not ready within 30s; generation 3
// serving (pid 4121)", "generation 3 on probation (standby 2), serving (pid
// 4121)", "generation 3 reverted: instance 0 crashed during probation:
// exit status 2; generation 2 serving (pid 4009)" or, in the failed state,
// "FAILED: 3 reverts within 1h0m0s; the last: ...; generation 2 serving
// (pid 4009)". Run only.
func (n *systemdNotifier) describe(st supervisor.Status) string {
	g, ok := generation(st, st.Serving)
	var s string
	switch {
	case !ok:
		s = "no generation serving"
	case g.GaveUp:
		s = fmt.Sprintf("generation %d keeps crashing; gave up", g.ID)
	case g.PID == 0 && n.crashGen == g.ID && n.crash != "":
		s = fmt.Sprintf("generation %d crashed (%s); restarting", g.ID, n.crash)
	case g.PID == 0:
		s = fmt.Sprintf("generation %d restarting", g.ID)
	case !g.Ready && g.Restarts > 0:
		s = fmt.Sprintf("generation %d restarting (pid %d)", g.ID, g.PID)
	case !g.Ready:
		s = fmt.Sprintf("generation %d starting (pid %d)", g.ID, g.PID)
	case st.Probation == g.ID && st.Standby != 0:
		s = fmt.Sprintf("generation %d on probation (standby %d), serving (pid %d)", g.ID, st.Standby, g.PID)
	case st.Probation == g.ID:
		s = fmt.Sprintf("generation %d on probation, serving (pid %d)", g.ID, g.PID)
	default:
		s = fmt.Sprintf("generation %d serving (pid %d)", g.ID, g.PID)
	}
	// In the failed state, its reason says what the last revert or refused
	// upgrade would: it replaces them.
	failure := n.failure
	if st.Failed != "" {
		failure = ""
	}
	switch {
	case st.Stopping && ok && g.GaveUp:
		s += "; stopping"
	case st.Stopping:
		s = "stopping"
	case st.Candidate != 0 && revertOf(st) != 0:
		// A revert without a standby: the replaced generation starts
		// again, as a new one, while the reverted one serves.
		s = fmt.Sprintf("generation %d starting in place of generation %d; %s", st.Candidate, revertOf(st), s)
		if failure != "" {
			s = failure + "; " + s
		}
	case st.Candidate != 0:
		s = fmt.Sprintf("upgrading to generation %d; %s", st.Candidate, s)
	case failure != "":
		s = failure + "; " + s
	}
	if st.Failed != "" && !st.Stopping {
		s = "FAILED: " + st.Failed + "; " + s
	}
	// A newline would end the STATUS= field and start a bogus one.
	return strings.ReplaceAll(s, "\n", " ")
}

// revertOf is the generation the candidate was started to revert, 0 if
// none.
func revertOf(st supervisor.Status) int {
	for _, g := range st.Generations {
		if g.ID == st.Candidate {
			return g.RevertOf
		}
	}
	return 0
}

func (n *systemdNotifier) send(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked(state)
}

// sendLocked sends one datagram; n.mu is held. systemd not listening is
// logged once: baton's service matters more than its manager's view of it.
func (n *systemdNotifier) sendLocked(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil && !n.sendErr {
		n.sendErr = true
		n.log.Warn("cannot notify systemd; baton goes on without it and logs no further errors", "err", err)
	}
}
