package child

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/baton-sh/baton/handoff/flagfile"
)

// ErrAlreadyWatching is returned by Watch while another Watch of the same
// Flags runs.
var ErrAlreadyWatching = errors.New("child: the flags are already being watched")

// Watch follows the flags file until ctx is done, then returns nil. It looks
// at the file at once and then every PollInterval: when its stat (inode,
// size, modification time) has changed, or RereadInterval has passed, it
// reads it, and when the bytes differ from the last read it puts the new
// file in effect. Without BATON_FLAGS_FILE it just waits for ctx, so that
// it can run beside the other parts of a service and stop with them.
//
// report, if not nil, is called from Watch's goroutine after each look that
// changed something: report(v, nil) when version v took effect (the first
// look always reports), report(v, err) when the file could not be used and
// version v stays in effect (0: the defaults). A failure is reported once
// per distinct content of the file, all failures to read in a row counting
// as one, so a file that stays broken is not reported at every poll.
func (f *Flags) Watch(ctx context.Context, report func(version int64, err error)) error {
	if !f.watching.CompareAndSwap(false, true) {
		return ErrAlreadyWatching
	}
	defer f.watching.Store(false)
	if f.path == "" {
		<-ctx.Done()
		return nil
	}
	if report == nil {
		report = func(int64, error) {}
	}
	w := &watcher{f: f, report: report}
	tick := time.NewTicker(f.poll)
	defer tick.Stop()
	for {
		w.look(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// watcher is what Watch remembers of the file; only Watch's goroutine
// touches it.
type watcher struct {
	f        *Flags
	report   func(int64, error)
	info     fs.FileInfo // of the file last read; nil before the first read and after a failed one
	data     []byte      // the bytes last read, valid when info is not nil
	unread   bool        // the last read failed (reported already)
	lastRead time.Time
}

// look reads the file if it may have changed, and applies or reports what
// it finds.
func (w *watcher) look(now time.Time) {
	if fi, err := os.Stat(w.f.path); err == nil && w.info != nil && sameFile(fi, w.info) && now.Sub(w.lastRead) < w.f.reread {
		return
	}
	w.lastRead = now
	data, info, err := readFlagsFile(w.f.path)
	if err != nil {
		w.info, w.data = nil, nil
		w.f.fail(err)
		if !w.unread {
			w.unread = true
			w.report(w.f.Version(), err)
		}
		return
	}
	w.unread = false
	same := w.info != nil && bytes.Equal(data, w.data)
	w.info, w.data = info, data
	if same {
		return
	}
	file, err := flagfile.Parse(data)
	if err != nil {
		err = fmt.Errorf("child: flags file %s: %w", w.f.path, err)
		w.f.fail(err)
		w.report(w.f.Version(), err)
		return
	}
	w.f.apply(file)
	w.report(file.Version, nil)
}

// sameFile reports whether a and b look like the same version of one file.
func sameFile(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// readFlagsFile reads at most flagfile.MaxSize bytes of the file at path,
// with the stat of the very file read (not of whatever the path names a
// moment later).
func readFlagsFile(path string) ([]byte, fs.FileInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("child: flags file: %w", err)
	}
	defer fh.Close() // read-only: closing cannot lose anything
	info, err := fh.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("child: flags file: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(fh, flagfile.MaxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("child: flags file %s: %w", path, err)
	}
	if len(data) > flagfile.MaxSize {
		return nil, nil, fmt.Errorf("child: flags file %s: %w: larger than %d bytes", path, flagfile.ErrInvalid, flagfile.MaxSize)
	}
	return data, info, nil
}
