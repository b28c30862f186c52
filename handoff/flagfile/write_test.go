package flagfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteAtomic: a reader reading the path in a tight loop while 1,000
// writes replace it never sees an error (no half-written file, no missing
// file) and sees the versions only increase.
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	file := func(v int) File {
		// Sizes vary from write to write, so that a torn read would show.
		flags := map[string]Flag{"a": {Percent: v % 101}}
		for i := range v % 17 {
			flags[string(rune('b'+i))] = Flag{Percent: i}
		}
		return File{Format: 1, Version: int64(v), Flags: flags}
	}
	if err := Write(path, file(1)); err != nil {
		t.Fatal(err)
	}

	const writes = 1000
	type result struct {
		reads, distinct int
		err             error
	}
	done, stop := make(chan result, 1), make(chan struct{})
	go func() {
		var r result
		last := int64(0)
		for last < writes {
			select {
			case <-stop: // the writer failed
				done <- r
				return
			default:
			}
			f, err := Read(path)
			if err != nil {
				r.err = err
				break
			}
			r.reads++
			if f.Version < last {
				r.err = errors.New("the version went backwards")
				break
			}
			if f.Version > last {
				r.distinct++
			}
			if int64(f.Flags["a"].Percent) != f.Version%101 || int64(len(f.Flags)) != 1+f.Version%17 {
				r.err = errors.New("a file that no write wrote")
				break
			}
			last = f.Version
		}
		done <- r
	}()
	var writeErr error
	for v := 2; v <= writes && writeErr == nil; v++ {
		writeErr = Write(path, file(v))
	}
	if writeErr != nil {
		close(stop)
		<-done
		t.Fatal(writeErr)
	}
	r := <-done // bounded: the last write is done, so the reader's next Read sees it
	if r.err != nil {
		t.Fatalf("after %d reads: %v", r.reads, r.err)
	}
	t.Logf("%d reads saw %d of %d versions", r.reads, r.distinct, writes)
	assertOnlyFile(t, dir, "flags.json")
}

func TestWriteMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	for range 2 { // creating and replacing
		if err := Write(path, File{Format: 1, Version: 1, Flags: map[string]Flag{}}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != Mode {
			t.Fatalf("mode %v, want %v", fi.Mode(), os.FileMode(Mode))
		}
	}
}

// TestWriteFailures: an invalid File is not written at all, and a write
// that fails leaves neither a temporary file nor a changed file behind.
func TestWriteFailures(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	good := File{Format: 1, Version: 5, Flags: map[string]Flag{"a": {Percent: 5}}}
	if err := Write(path, good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    File
		kind error
	}{
		{"format 0", File{Version: 6, Flags: map[string]Flag{}}, ErrUnsupportedFormat},
		{"version 0", File{Format: 1, Flags: map[string]Flag{}}, ErrInvalid},
		{"nil flags", File{Format: 1, Version: 6}, ErrInvalid},
		{"percent out of range", File{Format: 1, Version: 6, Flags: map[string]Flag{"a": {Percent: 200}}}, ErrInvalid},
		{"bad name", File{Format: 1, Version: 6, Flags: map[string]Flag{"a b": {Percent: 1}}}, ErrInvalid},
	} {
		if err := Write(path, c.f); !errors.Is(err, c.kind) {
			t.Errorf("%s: Write = %v, want %v", c.name, err, c.kind)
		}
	}
	if f, err := Read(path); err != nil || f.Version != good.Version {
		t.Fatalf("after failed writes: Read = %+v, %v; want version %d", f, err, good.Version)
	}
	assertOnlyFile(t, dir, "flags.json")

	// The rename fails: the path is a directory.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "flags.json", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(sub, "flags.json"), good); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	assertOnlyFile(t, sub, "flags.json")

	// The directory does not exist: nothing can be created.
	if err := Write(filepath.Join(dir, "missing", "flags.json"), good); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Write into a missing directory = %v, want os.ErrNotExist", err)
	}
}

// assertOnlyFile fails unless dir holds exactly one entry, name: no
// temporary file was left behind.
func assertOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != name {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %q, want only %q", dir, names, name)
	}
}
