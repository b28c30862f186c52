package child

import (
	"fmt"
	"maps"
	"os"
	"sync/atomic"
	"time"

	"github.com/baton-sh/baton/handoff/flagfile"
)

// FlagsFileEnv names the variable in which baton passes the path of the
// flags file.
const FlagsFileEnv = "BATON_FLAGS_FILE"

const (
	// PollInterval is how often Watch looks at the flags file (a stat).
	PollInterval = 100 * time.Millisecond
	// RereadInterval is the longest Watch goes without reading the file
	// when its stat looks unchanged. A replaced file normally shows in its
	// inode, size or modification time, but an inode can be reused, and
	// on a file system with coarse timestamps two writes in one tick can
	// look alike; reading again now and then bounds how long such a change
	// can go unseen.
	RereadInterval = time.Second
)

// Flags are the feature flags of a service: the defaults declared in code,
// overridden by the file named in BATON_FLAGS_FILE. Without that variable
// (plain systemd, tests) the defaults are all there is. A flag in the file
// but not declared is still answered; a declared flag missing from the
// file has its default; a flag in neither is off. A file that cannot be
// read or is invalid changes nothing: the last good one (or the defaults)
// stays in effect, and Err says why.
//
// Its methods may be called from any goroutine.
type Flags struct {
	path     string         // the flags file; "" when BATON_FLAGS_FILE is unset
	defaults map[string]int // declared in code; never changed after NewFlags

	// current is replaced, never modified, by NewFlags and then only by
	// the running Watch (watching makes sure there is one at most).
	current  atomic.Pointer[flagState]
	watching atomic.Bool

	poll, reread time.Duration // PollInterval and RereadInterval; tests shorten them
}

// flagState is what the flags are at one moment.
type flagState struct {
	percent map[string]int // defaults overlaid with the file's flags
	version int64          // of the file in effect; 0 when none has been read
	err     error          // of the last look at the file; nil if it went well
}

// NewFlags returns the flags of a service that declares defaults, a
// percentage (0 to 100) by flag name (see flagfile.CheckName), and reads
// the file in BATON_FLAGS_FILE once, if set, so that the first answers
// already come from it. The error is for invalid defaults only; a file
// that cannot be used is reported by Err (and by Watch).
func NewFlags(defaults map[string]int) (*Flags, error) {
	for name, p := range defaults {
		if err := flagfile.CheckName(name); err != nil {
			return nil, fmt.Errorf("child: flag defaults: %w", err)
		}
		if err := flagfile.CheckPercent(p); err != nil {
			return nil, fmt.Errorf("child: flag defaults: flag %q: %w", name, err)
		}
	}
	f := &Flags{
		path:     os.Getenv(FlagsFileEnv),
		defaults: maps.Clone(defaults),
		poll:     PollInterval,
		reread:   RereadInterval,
	}
	f.current.Store(&flagState{percent: maps.Clone(defaults)})
	if f.path != "" {
		if data, _, err := readFlagsFile(f.path); err != nil {
			f.fail(err)
		} else if file, err := flagfile.Parse(data); err != nil {
			f.fail(fmt.Errorf("child: flags file %s: %w", f.path, err))
		} else {
			f.apply(file)
		}
	}
	return f, nil
}

// Enabled reports whether flag is on for key (a user id, a client address:
// whatever the service splits its traffic by): flagfile.On at the flag's
// percentage. The same key gets the same answer until the percentage
// changes, and raising it only adds keys.
func (f *Flags) Enabled(flag, key string) bool {
	p, _ := f.Percent(flag)
	return flagfile.On(flag, key, p)
}

// Percent is flag's percentage now, and whether it is known (declared or in
// the file); an unknown flag is at 0.
func (f *Flags) Percent(flag string) (int, bool) {
	p, ok := f.current.Load().percent[flag]
	return p, ok
}

// Version is the version of the flags file in effect, or 0 when none has
// been read (the defaults are in effect).
func (f *Flags) Version() int64 {
	return f.current.Load().version
}

// Err is why the last look at the flags file failed, or nil if it went well
// (or there is no file to look at).
func (f *Flags) Err() error {
	return f.current.Load().err
}

// apply puts file in effect over the defaults.
func (f *Flags) apply(file flagfile.File) {
	percent := maps.Clone(f.defaults)
	if percent == nil {
		percent = make(map[string]int, len(file.Flags))
	}
	for name, fl := range file.Flags {
		percent[name] = fl.Percent
	}
	f.current.Store(&flagState{percent: percent, version: file.Version})
}

// fail records err and keeps the flags as they are.
func (f *Flags) fail(err error) {
	old := f.current.Load()
	f.current.Store(&flagState{percent: old.percent, version: old.version, err: err})
}
