//go:build linux

package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/supervisor"
)

const (
	// eventBuffer is how far a wait may fall behind the supervisor's
	// events (while a write to its client is slow) before it loses some.
	// An upgrade has about ten.
	eventBuffer = 256
	// hangupPoll is how often a wait checks whether its client hung up,
	// so that a client that leaves does not hold a goroutine until the
	// timeout.
	hangupPoll = 200 * time.Millisecond
)

type outcome struct {
	gen int
	err error
}

// wait starts an upgrade or rollback and streams every event until it is
// decided and, once promoted, until the generation it replaced has retired;
// then it answers the result. An upgrade with probation is decided when its
// probation passes (the standby then drains) or at a revert. It subscribes
// before starting, so no event of the upgrade is missed.
func (s *Server) wait(c *net.UnixConn, w *writer, b Backend, req Request, start func(context.Context) (int, error)) {
	events, unsubscribe := b.Subscribe(eventBuffer)
	defer unsubscribe()
	timeout := req.WaitTimeout()
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel() // ends start's wait if this returns first: client gone
	decided := make(chan outcome, 1)
	s.goTracked(func() {
		gen, err := start(ctx)
		decided <- outcome{gen, err}
	})
	tick := time.NewTicker(hangupPoll)
	defer tick.Stop()

	var (
		res      *outcome
		replaced = make(map[int]int) // promoted generation -> the one it replaced
		retired  = make(map[int]bool)
	)
	// forward streams one event; false when the client is gone or stuck.
	forward := func(ev supervisor.Event) bool {
		switch ev.Kind {
		case supervisor.EventPromoted:
			replaced[ev.Gen] = ev.Replaces
		case supervisor.EventReverted:
			// A revert to the standby serves it again with no promoted
			// event: a rollback during probation is decided by this one,
			// and done once the reverted generation has retired.
			if ev.Replaces != 0 {
				replaced[ev.Replaces] = ev.Gen
			}
		case supervisor.EventRetired:
			retired[ev.Gen] = true
		}
		return w.write(Response{Type: TypeEvent, Event: NewEventJSON(ev)}) == nil
	}
	for {
		if res != nil {
			// The supervisor emits an upgrade's events before it sends
			// the outcome: those still buffered come first.
			if !drain(events, forward) {
				return
			}
			if r, done := verdict(*res, replaced, retired); done {
				_ = w.write(Response{Type: TypeResult, Result: &r}) // the client may be gone
				return
			}
		}
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil // the backend ended the subscription; the timeout still bounds the wait
				continue
			}
			if !forward(ev) {
				return
			}
		case o := <-decided:
			decided = nil
			if o.err != nil && ctx.Err() != nil {
				continue // the wait ended, not the upgrade: ctx.Done says why
			}
			res = &o
		case <-tick.C:
			if hungUp(c) {
				s.log.Debug("control: client left during a wait; the "+req.Command+" goes on", "command", req.Command)
				return
			}
		case <-ctx.Done():
			if !drain(events, forward) {
				return
			}
			why := fmt.Sprintf("timed out after %s", timeout)
			if s.ctx.Err() != nil {
				why = "baton's control socket is closing"
			}
			r := ResultJSON{Reason: why + "; the " + req.Command + " goes on"}
			if res != nil {
				// Promoted: the new generation serves; only the old one's
				// retirement is late.
				r = ResultJSON{OK: true, Generation: res.gen, Reason: why + " before the promotion's event came"}
				if old := replaced[res.gen]; old != 0 {
					r.Reason = fmt.Sprintf("%s while waiting for generation %d to retire", why, old)
				}
			}
			_ = w.write(Response{Type: TypeResult, Result: &r}) // the client may be gone
			return
		}
	}
}

// drain forwards the events already in ch without waiting for more; false
// when forward failed.
func drain(ch <-chan supervisor.Event, forward func(supervisor.Event) bool) bool {
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return true
			}
			if !forward(ev) {
				return false
			}
		default:
			return true
		}
	}
}

// verdict is the result once the upgrade is decided and, if it was
// promoted, the generation it replaced has retired; done is false until
// then.
func verdict(o outcome, replaced map[int]int, retired map[int]bool) (r ResultJSON, done bool) {
	if o.err != nil {
		return ResultJSON{Reason: failureReason(o.err)}, true
	}
	old, seen := replaced[o.gen]
	if !seen {
		// Its promoted event is emitted before the outcome is sent, so it
		// is in the channel if not yet read.
		return r, false
	}
	if old != 0 && !retired[old] {
		return r, false
	}
	return ResultJSON{OK: true, Generation: o.gen}, true
}

// failureReason is why an upgrade failed, without the "upgrade failed: "
// that the supervisor's error starts with: the answer says that already.
func failureReason(err error) string {
	msg := err.Error()
	if errors.Is(err, supervisor.ErrUpgradeFailed) {
		msg = strings.TrimPrefix(msg, supervisor.ErrUpgradeFailed.Error()+": ")
	}
	return msg
}

// hungUp reports whether the client closed its end. POLLHUP is only set
// when both directions are shut down: a client that merely shut down its
// writing half (as `socat` does after sending) still gets its answer.
func hungUp(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	if err := raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		hup = err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
	}); err != nil {
		return true
	}
	return hup
}
