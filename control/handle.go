//go:build linux

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// handle serves one connection: credentials, then one request, then its
// answer. It runs in the connection's own goroutine.
func (s *Server) handle(c *net.UnixConn, b Backend) {
	w := &writer{c: c, timeout: s.opts.RequestTimeout}
	p, err := peerOf(c)
	if err != nil {
		s.log.Warn("control connection refused: cannot read its credentials", "err", err)
		w.error("permission denied")
		return
	}
	if !s.allowed(p) {
		s.log.Warn("control connection refused: permission denied",
			"uid", p.uid, "gid", p.gid, "pid", p.pid, "socket", s.opts.Path)
		w.error("permission denied")
		return
	}

	_ = c.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout)) // fails only if c is closed
	req, err := DecodeRequest(c)
	if err != nil {
		switch {
		case s.ctx.Err() != nil:
			err = errors.New("baton's control socket is closing")
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = fmt.Errorf("incomplete request: no newline within %s", s.opts.RequestTimeout)
		}
		s.log.Warn("bad control request", "err", err, "uid", p.uid, "pid", p.pid)
		w.error(err.Error())
		return
	}
	_ = c.SetReadDeadline(time.Time{}) // fails only if c is closed
	lvl := slog.LevelInfo
	args := []any{"command", req.Command, "wait", req.Wait, "all", req.All, "force", req.Force, "uid", p.uid, "pid", p.pid}
	switch {
	case req.Command == CommandStatus, req.Command == CommandFlags: // they change nothing
		lvl = slog.LevelDebug
	case req.Command == CommandFlag && req.Reset:
		args = append(args, "flag", req.Name, "reset", true)
	case req.Command == CommandFlag:
		args = append(args, "flag", req.Name, "percent", *req.Percent)
	}
	s.log.Log(s.ctx, lvl, "control request", args...)

	switch req.Command {
	case CommandStatus:
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
		defer cancel()
		st, err := b.Status(ctx)
		if err != nil {
			w.error(fmt.Sprintf("status: %v", err))
			return
		}
		w.write(Response{Type: TypeStatus, Status: NewStatusJSON(st)})
	case CommandUpgrade, CommandRollback:
		start := b.Upgrade
		switch {
		case req.Command == CommandRollback:
			start = b.Rollback
		case req.Force:
			start = b.ForceUpgrade
		}
		if req.Wait {
			s.wait(c, w, b, req, start)
			return
		}
		if why := s.refusal(b, req); why != "" {
			_ = w.write(Response{Type: TypeResult, Result: &ResultJSON{Reason: why}}) // the client may be gone
			return
		}
		// The upgrade outlives this connection: only Close stops the
		// waiting for its outcome, which the supervisor logs anyway.
		s.goTracked(func() {
			if _, err := start(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Debug("control: "+req.Command+" started without wait did not succeed", "err", err)
			}
		})
		w.write(Response{Type: TypeResult, Result: &ResultJSON{OK: true}})
	case CommandPromote, CommandAbort:
		s.gradual(w, b, req)
	case CommandFlags:
		s.flags(w, b)
	case CommandFlag:
		s.flag(w, b, req)
	case CommandStop:
		// Answer first: the client learns its request was taken before
		// baton starts going away.
		w.write(Response{Type: TypeResult, Result: &ResultJSON{OK: true}})
		b.Stop()
	}
}

// refusal is why an upgrade without wait would be refused at once, or "".
// Without wait the answer only says the upgrade was taken, so a deploy
// script would otherwise learn nothing of the failed state, where every
// upgrade not forced is refused. The supervisor decides anyway: a status
// that comes too late, or a failed state entered or ended just after it,
// only costs this early answer.
func (s *Server) refusal(b Backend, req Request) string {
	if req.Command != CommandUpgrade || req.Force {
		return ""
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
	defer cancel()
	st, err := b.Status(ctx)
	if err != nil || st.Failed == "" {
		return ""
	}
	s.log.Info("control: upgrade refused in the failed state; force it to try again", "failed", st.Failed)
	return fmt.Sprintf("%s (%s): force an upgrade (`baton upgrade --force`) to try again", supervisor.ErrFailedState, st.Failed)
}

// gradual runs promote or abort. Both are decided at once by the
// supervisor: the result says whether it acted and, if not, why not (no
// upgrade in progress, the canary not ready yet, ...). The upgrade goes on
// either way; its outcome is for Upgrade's callers. No answer in time is an
// error, as for status: the client could not learn what happened.
func (s *Server) gradual(w *writer, b Backend, req Request) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
	defer cancel()
	var err error
	if req.Command == CommandPromote {
		err = b.Promote(ctx, req.All)
	} else {
		err = b.Abort(ctx)
	}
	s.decided(ctx, w, req.Command, err, &ResultJSON{OK: true})
}

// decided answers a command the supervisor decides at once: ok when err is
// nil; a result with the supervisor's reason when it refused; an error
// when it did not answer within ctx, since the client cannot tell then
// whether it was done.
func (s *Server) decided(ctx context.Context, w *writer, command string, err error, ok *ResultJSON) {
	switch {
	case err == nil:
		_ = w.write(Response{Type: TypeResult, Result: ok}) // the client may be gone
	case s.ctx.Err() != nil:
		w.error(command + ": baton's control socket is closing")
	case ctx.Err() != nil:
		w.error(fmt.Sprintf("%s: no answer from the supervisor within %s", command, s.opts.RequestTimeout))
	default:
		s.log.Info("control: "+command+" not done", "reason", err)
		_ = w.write(Response{Type: TypeResult, Result: &ResultJSON{Reason: err.Error()}}) // the client may be gone
	}
}

// writer writes response lines, each bounded in time. After a failed
// write it writes nothing more: the client is gone or stuck.
type writer struct {
	c       *net.UnixConn
	timeout time.Duration
	err     error
}

func (w *writer) write(r Response) error {
	if w.err != nil {
		return w.err
	}
	r.Version = ProtocolVersion
	// Reasons hold "->", "<=" and "> ": written as they are, not as
	// \u003e, so that a person reading the socket with socat reads them.
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil { // the newline included
		w.err = err
		return err // cannot happen: the types marshal
	}
	_ = w.c.SetWriteDeadline(time.Now().Add(w.timeout)) // fails only if c is closed
	_, w.err = w.c.Write(line.Bytes())
	return w.err
}

func (w *writer) error(msg string) { _ = w.write(Response{Type: TypeError, Error: msg}) } // the client may be gone
