package flagfile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Mode is the permission of a file Write writes: the services that read it
// may run as other users.
const Mode = 0o644

// Write replaces the file at path with f, atomically: it writes a temporary
// file in the same directory, syncs it, renames it over path and syncs the
// directory. A reader of path sees the old file or the new one, whole,
// never a mix and never a missing file; after a crash the old or the new
// one is there. On an error the temporary file is removed (only a crash
// of the writer in the middle can leave one behind, named
// ".NAME.tmp-RANDOM"); an error from the final directory sync means the
// new file is in place but may not survive a crash.
//
// f must pass Check; a writer keeps the versions increasing itself (the
// first write of a file can start from Read's version + 1, or 1).
func Write(path string, f File) error {
	if err := f.Check(); err != nil {
		return fmt.Errorf("flagfile: write %s: %w", path, err)
	}
	data, err := json.Marshal(f) // map keys sorted: the same File gives the same bytes
	if err != nil {
		return fmt.Errorf("flagfile: write %s: %w", path, err)
	}
	data = append(data, '\n')
	if len(data) > MaxSize {
		return fmt.Errorf("flagfile: write %s: %w: %d bytes, larger than %d", path, ErrInvalid, len(data), MaxSize)
	}
	return WriteAtomic(path, data, Mode)
}

// WriteAtomic replaces the file at path with data and mode as Write does:
// a temporary file in the same directory, fsync, rename, fsync of the
// directory. A reader of path sees the old file or the new one, whole.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := replace(dir, base, data, mode); err != nil {
		return fmt.Errorf("flagfile: write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("flagfile: write %s: the new file is in place, but: %w", path, err)
	}
	return nil
}

// replace writes data to a new temporary file in dir and renames it to
// name, removing the temporary file if anything fails.
func replace(dir, name string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()           // may be closed already; the error is the one that counts
			_ = os.Remove(tmp.Name()) // best effort: the error is the one that counts
		}
	}()
	// Chmod on the open file: CreateTemp makes it 0600, and umask does not
	// apply to fchmod.
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
