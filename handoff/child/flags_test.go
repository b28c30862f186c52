package child

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/handoff/flagfile"
)

// writeFlags writes a valid flags file at path (atomically).
func writeFlags(t *testing.T, path string, version int, flags map[string]int) {
	t.Helper()
	f := flagfile.File{Format: flagfile.Format, Version: int64(version), Flags: map[string]flagfile.Flag{}}
	for name, p := range flags {
		f.Flags[name] = flagfile.Flag{Percent: p}
	}
	if err := flagfile.Write(path, f); err != nil {
		t.Fatal(err)
	}
}

// writeRaw replaces the file at path with data atomically, as baton would,
// so that a reader never sees it half-written.
func writeRaw(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFlagsWithoutFile(t *testing.T) {
	t.Setenv(FlagsFileEnv, "")
	f, err := NewFlags(map[string]int{"on": 100, "off": 0, "tenth": 10})
	if err != nil {
		t.Fatal(err)
	}
	if f.Version() != 0 || f.Err() != nil {
		t.Fatalf("Version %d, Err %v; want 0, nil", f.Version(), f.Err())
	}
	if !f.Enabled("on", "k") || f.Enabled("off", "k") || f.Enabled("undeclared", "k") {
		t.Error("defaults not in effect")
	}
	// A default percentage splits keys as a file's would.
	if f.Enabled("tenth", "user-7") != flagfile.On("tenth", "user-7", 10) {
		t.Error("default 10% does not follow flagfile.On")
	}
	if p, known := f.Percent("undeclared"); p != 0 || known {
		t.Errorf("Percent(undeclared) = %d, %v", p, known)
	}

	// Watch has nothing to follow: it waits for its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- f.Watch(ctx, func(v int64, err error) { t.Errorf("report(%d, %v) without a file", v, err) })
	}()
	cancel()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Watch = %v", err)
	}
}

func TestFlagsInvalidDefaults(t *testing.T) {
	for _, defaults := range []map[string]int{{"a b": 0}, {"": 10}, {"a": 101}, {"a": -1}} {
		if _, err := NewFlags(defaults); !errors.Is(err, flagfile.ErrInvalid) {
			t.Errorf("NewFlags(%v) = %v, want flagfile.ErrInvalid", defaults, err)
		}
	}
}

// TestFlagsFileAtStart: the file read by NewFlags is in effect at once,
// over the defaults, and a bad file leaves the defaults and says why.
func TestFlagsFileAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	t.Setenv(FlagsFileEnv, path)
	writeFlags(t, path, 3, map[string]int{"declared_on": 100, "undeclared": 100, "declared_off": 0})
	f, err := NewFlags(map[string]int{"declared_on": 0, "declared_off": 100, "missing_from_file": 100})
	if err != nil {
		t.Fatal(err)
	}
	if f.Version() != 3 || f.Err() != nil {
		t.Fatalf("Version %d, Err %v; want 3, nil", f.Version(), f.Err())
	}
	for flag, want := range map[string]bool{
		"declared_on":       true,  // the file overrides the default
		"declared_off":      false, // both ways
		"undeclared":        true,  // in the file only: still readable
		"missing_from_file": true,  // its default
		"in_neither":        false,
	} {
		if got := f.Enabled(flag, "some-key"); got != want {
			t.Errorf("Enabled(%q) = %v, want %v", flag, got, want)
		}
	}

	writeRaw(t, path, `{"format": 1, "version": 4, "flags": {"declared_on": {"percent": 500}}}`)
	f, err = NewFlags(map[string]int{"declared_on": 0})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(f.Err(), flagfile.ErrInvalid) || f.Version() != 0 || f.Enabled("declared_on", "k") {
		t.Fatalf("bad file at start: Err %v, Version %d, Enabled %v; want ErrInvalid, 0, false", f.Err(), f.Version(), f.Enabled("declared_on", "k"))
	}

	t.Setenv(FlagsFileEnv, filepath.Join(t.TempDir(), "missing.json"))
	f, err = NewFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(f.Err(), fs.ErrNotExist) {
		t.Fatalf("missing file at start: Err %v, want fs.ErrNotExist", f.Err())
	}
}

// report is one call of Watch's report function.
type report struct {
	version int64
	err     error
}

// TestLook drives one watcher look by look, with the clock in the test's
// hands: what is read when, what is reported, what stays in effect.
func TestLook(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	t.Setenv(FlagsFileEnv, path)
	writeFlags(t, path, 1, map[string]int{"a": 100})
	f, err := NewFlags(map[string]int{"a": 0})
	if err != nil {
		t.Fatal(err)
	}
	var reports []report
	w := &watcher{f: f, report: func(v int64, err error) { reports = append(reports, report{v, err}) }}
	now := time.Now()
	step := func(name string, at time.Time, want ...report) {
		t.Helper()
		reports = nil
		w.look(at)
		if len(reports) != len(want) {
			t.Fatalf("%s: reports %v, want %v", name, reports, want)
		}
		for i := range want {
			if reports[i].version != want[i].version || !errors.Is(reports[i].err, want[i].err) || (reports[i].err == nil) != (want[i].err == nil) {
				t.Fatalf("%s: reports %v, want %v", name, reports, want)
			}
		}
	}

	step("first look", now, report{1, nil})
	step("nothing changed", now)

	writeRaw(t, path, `{"format": 1, "version": 2, "flags": {"a": {"percent": 50}}`) // truncated
	step("truncated file", now, report{1, flagfile.ErrInvalid})
	if !f.Enabled("a", "k") || f.Version() != 1 || !errors.Is(f.Err(), flagfile.ErrInvalid) {
		t.Fatal("the last good file is not kept, or the error not recorded")
	}
	step("the same bad file, read again after RereadInterval", now.Add(2*RereadInterval))
	if err := os.Chtimes(path, time.Time{}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	step("the same bad file, touched", now)

	writeRaw(t, path, `{"format": 9, "version": 2, "flags": {}}`)
	step("another bad file", now, report{1, flagfile.ErrUnsupportedFormat})

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	step("file removed", now, report{1, fs.ErrNotExist})
	step("still removed", now.Add(2*RereadInterval))
	if !f.Enabled("a", "k") || f.Version() != 1 {
		t.Fatal("the last good file is not kept")
	}

	writeFlags(t, path, 1, map[string]int{"a": 100})
	step("the good file back", now, report{1, nil})
	if f.Err() != nil {
		t.Fatalf("Err = %v after a good file", f.Err())
	}

	// An in-place rewrite that keeps inode, size and modification time
	// goes unseen by stat: the reread after RereadInterval finds it.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	same := bytes.Replace(data, []byte(`"percent":100`), []byte(`"percent":0  `), 1) // the same size
	if len(same) != len(data) || bytes.Equal(same, data) {
		t.Fatalf("rewrite of %q failed", data)
	}
	if err := os.WriteFile(path, same, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Time{}, fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	step("rewritten in place, stat unchanged", now)
	step("rewritten in place, after RereadInterval", now.Add(2*RereadInterval), report{1, nil})
	if f.Enabled("a", "k") {
		t.Fatal("the rewritten file is not in effect")
	}
}

// TestWatchFollows: while Watch runs, every write is seen, each waited
// for by its report (no sleeps), and other goroutines read meanwhile.
func TestWatchFollows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	t.Setenv(FlagsFileEnv, path)
	writeFlags(t, path, 1, map[string]int{"a": 0, "b": 100})
	f, err := NewFlags(map[string]int{"a": 0})
	if err != nil {
		t.Fatal(err)
	}
	f.poll = 2 * time.Millisecond

	reports := make(chan report, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Watch(ctx, func(v int64, err error) { reports <- report{v, err} }) }()
	if r := nextReport(t, reports); r.version != 1 || r.err != nil {
		t.Fatalf("first report %v, want version 1", r)
	}

	// Readers on other goroutines, for the race detector.
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for ctx.Err() == nil {
				_, _, _ = f.Enabled("a", "k"), f.Version(), f.Err()
			}
		})
	}
	for v := 2; v <= 50; v++ {
		a := 100 * (v % 2)
		writeFlags(t, path, v, map[string]int{"a": a, "b": 100 - a})
		for r := nextReport(t, reports); r.version != int64(v); r = nextReport(t, reports) {
			if r.err != nil {
				t.Fatalf("report %v while waiting for version %d", r, v)
			}
		}
		if f.Enabled("a", "k") != (a == 100) {
			t.Fatalf("version %d: a is not %d%%", v, a)
		}
	}
	cancel()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Watch = %v", err)
	}
	readers.Wait()
}

func TestWatchTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	t.Setenv(FlagsFileEnv, path)
	writeFlags(t, path, 1, nil)
	f, err := NewFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan report, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Watch(ctx, func(v int64, err error) { reports <- report{v, err} }) }()
	nextReport(t, reports) // the first Watch runs
	if err := f.Watch(ctx, nil); !errors.Is(err, ErrAlreadyWatching) {
		t.Errorf("second Watch = %v, want ErrAlreadyWatching", err)
	}
	cancel()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("Watch = %v", err)
	}
	// Once it has returned, Watch may run again.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := f.Watch(ctx, nil); err != nil {
		t.Fatalf("Watch after Watch = %v", err)
	}
}

func nextReport(t *testing.T, reports <-chan report) report {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no report from Watch in 5 s")
	}
	return report{}
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("not returned 5 s after its context was cancelled")
	}
	return nil
}
