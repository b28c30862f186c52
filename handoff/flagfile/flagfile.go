package flagfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	// Format is the only format this package reads and writes.
	Format = 1
	// MaxSize is the largest file Read (and a well-behaved reader) accepts,
	// so that a reader's memory stays bounded whatever lies at the path.
	MaxSize = 1 << 20
	// MaxVersion is the largest version: 2^53-1, the largest integer that
	// every JSON reader (JavaScript's included) keeps exact.
	MaxVersion = 1<<53 - 1
	// MaxNameLen is the longest flag name, in bytes.
	MaxNameLen = 64
)

var (
	// ErrUnsupportedFormat is wrapped by the error for a file whose format
	// is not Format.
	ErrUnsupportedFormat = errors.New("unsupported flags file format")
	// ErrInvalid is wrapped by every other error about a file's content.
	ErrInvalid = errors.New("invalid flags file")
)

// File is the content of a flags file.
type File struct {
	Format  int             `json:"format"`  // always Format in a valid file
	Version int64           `json:"version"` // 1 to MaxVersion; larger at every write
	Flags   map[string]Flag `json:"flags"`   // by flag name
}

// Flag is one flag's setting.
type Flag struct {
	Percent int `json:"percent"` // 0 (off) to 100 (on for every key)
}

// Enabled reports whether flag is on for key, and whether the file has the
// flag at all (a flag it does not have is off).
func (f File) Enabled(flag, key string) (on, known bool) {
	fl, known := f.Flags[flag]
	return known && On(flag, key, fl.Percent), known
}

// Read reads and checks the flags file at path.
func Read(path string) (File, error) {
	data, err := readLimited(path)
	if err != nil {
		return File{}, fmt.Errorf("flagfile: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return File{}, fmt.Errorf("flagfile: %s: %w", path, err)
	}
	return f, nil
}

// readLimited reads at most MaxSize bytes from path, and fails if there
// is more.
func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close() // read-only: closing cannot lose anything
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrInvalid, MaxSize)
	}
	return data, nil
}

// Parse decodes and checks the content of a flags file. Every error wraps
// ErrUnsupportedFormat or ErrInvalid.
func Parse(data []byte) (File, error) {
	if len(data) > MaxSize {
		return File{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	// Pointers tell a member that is missing from one that is zero.
	var raw struct {
		Format  *int   `json:"format"`
		Version *int64 `json:"version"`
		Flags   map[string]struct {
			Percent *int `json:"percent"`
		} `json:"flags"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return File{}, fmt.Errorf("%w: empty", ErrInvalid)
		}
		return File{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("%w: more data after the JSON object", ErrInvalid)
	}
	if raw.Format == nil {
		return File{}, fmt.Errorf("%w: \"format\" is missing", ErrInvalid)
	}
	if *raw.Format != Format {
		return File{}, fmt.Errorf("%w: format %d (this reader knows format %d)", ErrUnsupportedFormat, *raw.Format, Format)
	}
	if raw.Version == nil {
		return File{}, fmt.Errorf("%w: \"version\" is missing", ErrInvalid)
	}
	if raw.Flags == nil {
		return File{}, fmt.Errorf("%w: \"flags\" is missing", ErrInvalid)
	}
	f := File{Format: *raw.Format, Version: *raw.Version, Flags: make(map[string]Flag, len(raw.Flags))}
	for name, fl := range raw.Flags {
		if fl.Percent == nil {
			return File{}, fmt.Errorf("%w: flag %q: \"percent\" is missing", ErrInvalid, name)
		}
		f.Flags[name] = Flag{Percent: *fl.Percent}
	}
	if err := f.Check(); err != nil {
		return File{}, err
	}
	return f, nil
}

// Check reports whether f is a valid file of format Format: what Parse
// accepts and Write writes. Every error wraps ErrUnsupportedFormat or
// ErrInvalid.
func (f File) Check() error {
	if f.Format != Format {
		return fmt.Errorf("%w: format %d (this reader knows format %d)", ErrUnsupportedFormat, f.Format, Format)
	}
	if f.Version < 1 || f.Version > MaxVersion {
		return fmt.Errorf("%w: version %d is not in 1-%d", ErrInvalid, f.Version, int64(MaxVersion))
	}
	if f.Flags == nil {
		return fmt.Errorf("%w: \"flags\" is missing", ErrInvalid)
	}
	for name, fl := range f.Flags {
		if err := CheckName(name); err != nil {
			return err
		}
		if fl.Percent < 0 || fl.Percent > 100 {
			return fmt.Errorf("%w: flag %q: percent %d is not in 0-100", ErrInvalid, name, fl.Percent)
		}
	}
	return nil
}

// CheckName reports whether name is a valid flag name: 1 to MaxNameLen
// bytes of ASCII letters, digits, '_', '-' and '.'. The restriction keeps
// Bucket unambiguous (a name never holds the zero byte that separates it
// from the key) and names easy to use in any language, URL or metric.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: flag name %.140q is not 1 to %d bytes long", ErrInvalid, name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return fmt.Errorf("%w: flag name %q: %q is not a letter, digit, '_', '-' or '.'", ErrInvalid, name, c)
		}
	}
	return nil
}

// CheckPercent reports whether p is a valid percentage, 0 to 100.
func CheckPercent(p int) error {
	if p < 0 || p > 100 {
		return fmt.Errorf("%w: percent %d is not in 0-100", ErrInvalid, p)
	}
	return nil
}
