//go:build linux

package control

// The feature flag commands: flags lists them, flag changes one. Both are
// answered at once, like status and promote: the supervisor's event loop
// owns the flags and writes the flags file, so a change is in the file
// (with a new version) by the time the client has its answer.

import (
	"context"
	"fmt"
)

// flags answers the flags, their version and the flags file. No answer in
// time is an error, as for status.
func (s *Server) flags(w *writer, b Backend) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
	defer cancel()
	flags, version, file, err := b.Flags(ctx)
	if err != nil {
		w.error(fmt.Sprintf("flags: %v", err))
		return
	}
	_ = w.write(Response{Type: TypeFlags, Flags: NewFlagsJSON(flags, version, file)}) // the client may be gone
}

// flag sets a flag or returns it to its default. A flag the config does
// not declare, or a flags file that cannot be written, is a refusal: a
// result with the supervisor's reason. Once changed, the flag is read back
// for the answer, so that the client can say what it is now (a reset's
// default, say); if that read fails the answer is ok without it.
func (s *Server) flag(w *writer, b Backend, req Request) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
	defer cancel()
	var err error
	if req.Reset {
		err = b.ResetFlag(ctx, req.Name)
	} else {
		err = b.SetFlag(ctx, req.Name, *req.Percent)
	}
	ok := &ResultJSON{OK: true}
	if err == nil {
		if flags, _, _, ferr := b.Flags(ctx); ferr == nil {
			for _, f := range flags {
				if f.Name == req.Name {
					fj := newFlagJSON(f)
					ok.Flag = &fj
				}
			}
		}
	}
	s.decided(ctx, w, req.Command, err, ok)
}
