//go:build linux

package supervisor

// Feature flags: switches declared in [flags] that baton serves to the
// service's processes through a file (BATON_FLAGS_FILE, format in
// handoff/flagfile), flipped without starting a process. The loop owns
// the values; every change is written atomically (temporary file, rename)
// with a version one higher, logged, and kept in a state file next to the
// flags file, so that values an operator set survive a restart of baton.
// A flag with off_on = "analysis" is turned off by baton itself when the
// serving generation's analysis, measured against its own figures from
// before the flag went on, fails (see flagwatch.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/baton-sh/baton/handoff/flagfile"
)

// ErrUnknownFlag is wrapped by the error of a change to a flag the config
// does not declare.
var ErrUnknownFlag = errors.New("no such flag")

// flagState is one flag's current value. Owned by the loop.
type flagState struct {
	cfg     FlagConfig
	percent int
	set     bool // an operator set it: kept across restarts and config changes
	changed time.Time
	by      string // who changed it last: "config", "operator", "analysis"
}

// FlagStatus describes one flag.
type FlagStatus struct {
	Name        string
	Percent     int  // 0 off, 100 on, else the percent of keys it is on for
	Default     int  // the config's value
	Set         bool // set by an operator (`baton flag set`); reset returns it to Default
	Description string
	OffOn       string // "analysis", or ""
	Changed     time.Time
	By          string // "config", "operator" or "analysis"
}

type (
	flagsReq struct{ reply chan<- flagsResult }
	flagSet  struct {
		name    string
		percent int
		reset   bool
		reply   chan<- error
	}
	flagsResult struct {
		flags   []FlagStatus
		version int64
		path    string
	}
)

// flagStatePath is where operator-set values are kept: next to the
// control socket.
func flagPaths(cfg *Config) (file, state string) {
	base := strings.TrimSuffix(cfg.Control.Socket, ".sock")
	return base + ".flags.json", base + ".flags-state.json"
}

// flagStateFile is the state file's format.
type flagStateFile struct {
	Version int64          `json:"version"`
	Set     map[string]int `json:"set"` // operator-set percents by flag name
}

// setupFlags loads the state file (a corrupt one is reported and replaced
// by the config's defaults) and writes the flags file, when the config
// declares flags.
func (s *Supervisor) setupFlags() error {
	s.flagsPath, s.flagsStatePath = flagPaths(s.base)
	s.flags = map[string]*flagState{}
	if len(s.base.Flags) == 0 {
		return nil
	}
	now := time.Now()
	for _, fc := range s.base.Flags {
		s.flags[fc.Name] = &flagState{cfg: fc, percent: fc.Percent, changed: now, by: "config"}
	}
	st, err := readFlagState(s.flagsStatePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		s.log.Error("flag state file unreadable; the config's defaults apply and it is replaced", "file", s.flagsStatePath, "err", err)
	default:
		s.flagsVersion = st.Version
		for name, p := range st.Set {
			f, ok := s.flags[name]
			if !ok {
				s.log.Warn("flag in the state file is no longer declared; dropped", "flag", name)
				continue
			}
			f.percent, f.set, f.by = p, true, "operator"
		}
	}
	if f, err := flagfile.Read(s.flagsPath); err == nil && int64(f.Version) > s.flagsVersion {
		s.flagsVersion = int64(f.Version) // versions never go back, whatever the state file says
	}
	if err := s.writeFlags(); err != nil {
		return fmt.Errorf("feature flags: %w", err)
	}
	s.log.Info("feature flags served", "file", s.flagsPath, "flags", len(s.flags), "version", s.flagsVersion)
	return nil
}

func readFlagState(path string) (flagStateFile, error) {
	var st flagStateFile
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	for name, p := range st.Set {
		if p < 0 || p > 100 {
			return st, fmt.Errorf("%s: flag %q: percent %d is not 0-100", path, name, p)
		}
	}
	return st, nil
}

// writeFlags writes the flags file with the next version, then the state
// file. The flags file is what children read: it is renamed into place
// whole.
func (s *Supervisor) writeFlags() error {
	if err := os.MkdirAll(filepath.Dir(s.flagsPath), 0o755); err != nil {
		return err
	}
	s.flagsVersion++
	f := flagfile.File{Format: flagfile.Format, Version: s.flagsVersion, Flags: map[string]flagfile.Flag{}}
	st := flagStateFile{Version: s.flagsVersion, Set: map[string]int{}}
	for name, fl := range s.flags {
		f.Flags[name] = flagfile.Flag{Percent: fl.percent}
		if fl.set {
			st.Set[name] = fl.percent
		}
	}
	if err := flagfile.Write(s.flagsPath, f); err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return flagfile.WriteAtomic(s.flagsStatePath, data, 0o600)
}

// changeFlag sets a flag's value and publishes it; on a failed write the
// value stays as it was.
func (s *Supervisor) changeFlag(name string, percent int, set bool, by, why string) error {
	f, ok := s.flags[name]
	if !ok {
		return fmt.Errorf("%w %q (%s)", ErrUnknownFlag, name, s.declared())
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("flag %q: %d is not a percent (0-100)", name, percent)
	}
	old := *f
	f.percent, f.set, f.by, f.changed = percent, set, by, time.Now()
	if err := s.writeFlags(); err != nil {
		*f = old
		s.flagsVersion--
		return fmt.Errorf("flag %q not changed: %w", name, err)
	}
	args := []any{"flag", name, "from", old.percent, "to", percent, "by", by, "version", s.flagsVersion}
	if why != "" {
		args = append(args, "reason", why)
	}
	s.log.Info("flag changed", args...)
	s.emitFlag(name, old.percent, percent, by)
	s.watchFlag(f, old.percent)
	return nil
}

func (s *Supervisor) emitFlag(name string, from, to int, by string) {
	s.emit(Event{Kind: EventFlag, Gen: s.servingID(), Reason: fmt.Sprintf("%s: %d%% -> %d%% (%s)", name, from, to, by),
		Flag: name, By: by, Weight: to})
}

// declared lists the declared flags for messages.
func (s *Supervisor) declared() string {
	if len(s.flags) == 0 {
		return "the config declares none"
	}
	return "declared: " + strings.Join(s.flagNames(), ", ")
}

func (s *Supervisor) flagNames() []string {
	names := make([]string, 0, len(s.flags))
	for n := range s.flags {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *Supervisor) flagStatus() flagsResult {
	r := flagsResult{version: s.flagsVersion, path: s.flagsPath}
	for _, name := range s.flagNames() {
		f := s.flags[name]
		r.flags = append(r.flags, FlagStatus{Name: name, Percent: f.percent, Default: f.cfg.Percent, Set: f.set,
			Description: f.cfg.Description, OffOn: f.cfg.OffOn, Changed: f.changed, By: f.by})
	}
	return r
}

// applyFlagsConfig takes the flags of a newly promoted generation's config:
// new flags start at their default, removed ones go, and a flag no operator
// set follows its default.
func (s *Supervisor) applyFlagsConfig(cfg *Config) {
	if len(s.flags) == 0 && len(cfg.Flags) == 0 {
		return
	}
	changed := false
	type change struct {
		name     string
		from, to int
	}
	var changes []change
	declared := map[string]bool{}
	for _, fc := range cfg.Flags {
		declared[fc.Name] = true
		f, ok := s.flags[fc.Name]
		switch {
		case !ok:
			s.flags[fc.Name] = &flagState{cfg: fc, percent: fc.Percent, changed: time.Now(), by: "config"}
			changed = true
			changes = append(changes, change{fc.Name, 0, fc.Percent})
		case !f.set && f.percent != fc.Percent:
			changes = append(changes, change{fc.Name, f.percent, fc.Percent})
			f.percent, f.changed, f.by = fc.Percent, time.Now(), "config"
			changed = true
		}
		if ok {
			f.cfg = fc
		}
	}
	for name := range s.flags {
		if !declared[name] {
			delete(s.flags, name)
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := s.writeFlags(); err != nil {
		s.log.Error("flags file not written", "file", s.flagsPath, "err", err)
		return
	}
	s.log.Info("feature flags follow the new config", "flags", strings.Join(s.flagNames(), ","), "version", s.flagsVersion)
	for _, c := range changes {
		s.emitFlag(c.name, c.from, c.to, "config")
	}
}

// Flags lists the feature flags, their version and the file children read.
func (s *Supervisor) Flags(ctx context.Context) ([]FlagStatus, int64, string, error) {
	reply := make(chan flagsResult, 1)
	r, err := ask(s, ctx, flagsReq{reply: reply}, reply)
	return r.flags, r.version, r.path, err
}

// SetFlag sets a flag to percent (0 off, 100 on), as an operator.
func (s *Supervisor) SetFlag(ctx context.Context, name string, percent int) error {
	return s.flagChange(ctx, flagSet{name: name, percent: percent})
}

// ResetFlag returns a flag to its config's default.
func (s *Supervisor) ResetFlag(ctx context.Context, name string) error {
	return s.flagChange(ctx, flagSet{name: name, reset: true})
}

func (s *Supervisor) flagChange(ctx context.Context, req flagSet) error {
	reply := make(chan error, 1)
	req.reply = reply
	return answer(ask(s, ctx, req, reply))
}

func (s *Supervisor) onFlagSet(req flagSet) error {
	if req.reset {
		f, ok := s.flags[req.name]
		if !ok {
			return fmt.Errorf("%w %q (%s)", ErrUnknownFlag, req.name, s.declared())
		}
		return s.changeFlag(req.name, f.cfg.Percent, false, "operator", "reset to the config's default")
	}
	return s.changeFlag(req.name, req.percent, true, "operator", "")
}
