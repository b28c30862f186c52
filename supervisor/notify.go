//go:build linux

package supervisor

// Messages from the service's processes on baton's notify socket.

import (
	"context"
	"log/slog"

	"github.com/baton-sh/baton/handoff"
)

// onNotify applies a notify message to the process that sent it.
func (s *Supervisor) onNotify(n handoff.Notification) {
	p := s.processOf(n.PID, n.PGID)
	if n.Err != nil {
		s.log.Warn("notify message ignored", "pid", n.PID, "gen", genOf(p), "err", n.Err)
		return
	}
	if p == nil {
		// A process that just exited can have its last words (STOPPING=1,
		// STATUS=) read after it was reaped: not worth a warning.
		level := slog.LevelWarn
		if n.Fields["READY"] == "" && n.Fields["WATCHDOG"] == "" {
			level = slog.LevelDebug
		}
		s.log.Log(context.Background(), level, "notify message from a process baton does not supervise ignored", "pid", n.PID)
		return
	}
	if st, ok := n.Fields["STATUS"]; ok {
		p.status = st
		s.log.Info("status", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid, "status", st)
	}
	if v, ok := n.Fields["WATCHDOG"]; ok {
		s.onWatchdog(p, v)
	}
	switch {
	case n.Fields["STOPPING"] == "1":
		s.log.Info("process says it is stopping", "gen", p.gen.id, "instance", p.inst.index, "pid", p.pid)
	case n.Fields["READY"] == "1" && p.gen.cfg.Readiness.Check == "notify":
		s.onReady(p)
	}
}

func genOf(p *process) int {
	if p == nil {
		return 0
	}
	return p.gen.id
}

// processOf finds the process a sender speaks for: a main process, or a
// member of its process group (e.g. a helper like systemd-notify that its
// main process ran; such a helper must still be alive when the message
// arrives, since its group is read then).
func (s *Supervisor) processOf(pid, pgid int) *process {
	var group *process
	for _, g := range s.gens {
		for _, in := range g.instances {
			switch {
			case in.proc == nil:
			case in.proc.pid == pid:
				return in.proc
			case pgid != 0 && in.proc.pid == pgid:
				group = in.proc
			}
		}
	}
	return group
}
