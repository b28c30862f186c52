//go:build linux

package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// newLogger logs to w in format ("text" or "json"). When w is connected to
// the journal (JOURNAL_STREAM names it), the journal stamps every line
// itself, so baton leaves its own time out.
func newLogger(w io.Writer, format string) *slog.Logger {
	opts := &slog.HandlerOptions{}
	if f, ok := w.(*os.File); ok && connectedToJournal(f) {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// connectedToJournal reports whether f is the stream systemd connected to
// the journal: JOURNAL_STREAM holds its "device:inode" (systemd.exec(5)).
func connectedToJournal(f *os.File) bool {
	want := os.Getenv("JOURNAL_STREAM")
	if want == "" {
		return false
	}
	var st unix.Stat_t
	sc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return false
	}
	return want == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
