package supervisor

// This file is the config file's public face: the Config it becomes, the
// defaults for what it leaves out, and its errors. The decoding is in
// config_decode.go, the checks of each value in config_values.go and
// config_listeners.go, and the lines that errors point at come from
// config_lines.go.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

// Defaults for the settings a config file leaves out.
const (
	// DefaultReadinessTimeout is how long a new generation has to become
	// ready; one that is not ready in time is a failed upgrade.
	DefaultReadinessTimeout = 30 * time.Second
	// DefaultExecInterval is the time between two tries of an exec readiness
	// check.
	DefaultExecInterval = 500 * time.Millisecond
	// DefaultDrainTimeout is how long an old generation has to exit after the
	// drain signal before its whole process group gets SIGKILL.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultDrainGrace is the wait between the old generation's accept queue
	// becoming empty and the drain signal, for connections the kernel is
	// still handing over.
	DefaultDrainGrace = 100 * time.Millisecond
	// DefaultRestartMaxTries is how many consecutive failed restarts of a
	// crashed serving generation baton makes before it gives up.
	DefaultRestartMaxTries = 5
	// DefaultRestartBackoff is the wait before the first restart after a
	// crash; it doubles after each further crash.
	DefaultRestartBackoff = 100 * time.Millisecond
	// DefaultRestartMaxBackoff caps the doubling of the restart backoff.
	DefaultRestartMaxBackoff = 10 * time.Second
	// DefaultRestartResetAfter is how long a generation has to run for its
	// crash to count as the first one again.
	DefaultRestartResetAfter = 30 * time.Second
	// DefaultDrainSignal asks the old generation to finish and exit.
	DefaultDrainSignal = syscall.SIGTERM
	// DefaultCheckTimeout bounds each try of an http or tcp readiness check.
	DefaultCheckTimeout = probe.DefaultTimeout
	// DefaultMaxReverts and DefaultRevertWindow: a third revert within an
	// hour puts the service in the failed state.
	DefaultMaxReverts   = 2
	DefaultRevertWindow = time.Hour
	// DefaultHookTimeout bounds each hook.
	DefaultHookTimeout = probe.DefaultHookTimeout
)

// maxConfigSize is the most text ParseConfig takes. A config file is a few
// kilobytes; the bound keeps a wrong path (a log, /dev/zero) from being read
// whole and, with maxNesting, bounds the time a parse can take.
const maxConfigSize = 1 << 20

// Config is a parsed and validated config file.
type Config struct {
	Path      string // file it was read from
	Service   ServiceConfig
	Listeners []handoff.ListenerSpec // in file order; at least one
	Readiness ReadinessConfig
	Upgrade   UpgradeConfig
	Health    HealthConfig
	Analysis  AnalysisConfig
	Hooks     HooksConfig
	Flags     []FlagConfig // by name
	Drain     DrainConfig
	Restart   RestartConfig
	Control   ControlConfig
	Log       LogConfig
	Metrics   MetricsConfig
}

// ControlConfig says where baton's control socket is and who may use it.
type ControlConfig struct {
	// Socket is the control socket's path, always set: [control] socket, or
	// DefaultControlSocket(Service.Name).
	Socket string
	// Group may also use the socket (mode 0660 instead of 0600); "" for
	// none. GID is its id, -1 for none.
	Group string
	GID   int
}

// LogConfig says how baton logs.
type LogConfig struct {
	Format string // "text" (default) or "json"; the --log-format flag overrides it
}

// MetricsConfig says where Prometheus metrics are served.
type MetricsConfig struct {
	Address string // "host:port"; "" (the default) serves none
}

// ServiceConfig is the program run for each generation.
type ServiceConfig struct {
	// Name names the service in status, metrics and the default control
	// socket path: [service] name, or the config file's base name without
	// its extension.
	Name        string
	Command     []string          // argv, run without a shell; Command[0] is not empty
	Directory   string            // absolute working directory, or "" for baton's own
	Environment map[string]string // added to a minimal environment; never a variable baton sets
	// Credentials: who the service runs as ([service] user, group,
	// supplementary_groups); nil for baton's own user.
	Credentials *Credentials
	// NoNewPrivs sets PR_SET_NO_NEW_PRIVS for the service's processes.
	NoNewPrivs bool
	// Instances is how many processes each generation runs, 1 to
	// MaxInstances, all handed the same listeners.
	Instances int
}

// ReadinessConfig says when a new generation is ready to take traffic.
type ReadinessConfig struct {
	Check    string        // "notify" (READY=1 on NOTIFY_SOCKET), "exec", "delay", "http" or "tcp"
	Timeout  time.Duration // > 0
	Command  []string      // exec only: ready once it exits 0
	Interval time.Duration // exec, http, tcp (else 0): time between tries
	Delay    time.Duration // delay only (else 0): ready this long after start if still running; < Timeout
	Target   ProbeTarget   // http, tcp: what each try reaches
	// CheckTimeout bounds each try of an http or tcp check (else 0).
	CheckTimeout time.Duration
}

// ProbeTarget is what an http or tcp check reaches: the instance's own
// socket of a private listener, so that a check judges exactly one process.
type ProbeTarget struct {
	Listener string // name of a private listener
	Path     string // http: the path asked for, "/" by default
	Host     string // http: the Host header, "" for the address
	Body     string // http: the body must contain it; "" for any
}

// HealthConfig says how a generation is watched while it serves.
type HealthConfig struct {
	// Check is "http", "tcp" or "exec", or "" for no health checks.
	Check    string
	Target   ProbeTarget    // http, tcp
	Command  []string       // exec
	Schedule probe.Schedule // interval, timeout, thresholds, initial delay
	// Watchdog, if set, is the longest a process may go without sending
	// WATCHDOG=1 once ready (it gets WATCHDOG_USEC and WATCHDOG_PID).
	Watchdog time.Duration
}

// AnalysisConfig says how a candidate is judged against the serving
// generation during canary steps and probation. Enabled is false without
// an [analysis] section.
type AnalysisConfig struct {
	Enabled bool
	probe.AnalysisConfig
	// Listener is the private listener whose address serves MetricsPath on
	// each instance (the error ratio's source).
	Listener string
}

// HooksConfig are commands run around an upgrade.
type HooksConfig struct {
	PreStart    []string      // before the candidate starts; failing aborts the upgrade
	PostPromote []string      // once an upgrade is final (after probation)
	PostRevert  []string      // after an automatic revert or an abort
	Timeout     time.Duration // each hook's time limit
}

// Upgrade strategies ([upgrade] strategy).
const (
	// StrategyBlueGreen: the new generation takes every new connection once
	// all its instances are ready.
	StrategyBlueGreen = "blue-green"
	// StrategyCanary: the new generation takes the share of each step in
	// turn, then every new connection.
	StrategyCanary = "canary"
	// StrategyRolling: instances are replaced one at a time, each new one
	// ready before an old one drains.
	StrategyRolling = "rolling"
)

// MaxInstances is the most instances a generation may have: the slots of
// one generation in the steering program's socket array.
const MaxInstances = handoff.WeightedInstances

// UpgradeConfig says how new connections are moved to a new generation.
type UpgradeConfig struct {
	Steering string // "auto", "bpf" or "shared"
	Strategy string // StrategyBlueGreen (default), StrategyCanary or StrategyRolling
	// Steps are the canary's shares, in increasing order, each 1-99; the
	// last step is followed by 100%. Set for StrategyCanary only.
	Steps []CanaryStep
	// Probation is how long a promoted generation stays on probation: a
	// crash, a failed health check or a failed analysis in that time
	// reverts to the generation it replaced. 0: none.
	Probation time.Duration
	// A revert that makes more than MaxReverts within RevertWindow puts
	// the service in the failed state, where upgrades are refused until
	// one is forced (the revert itself still happens).
	MaxReverts   int
	RevertWindow time.Duration
}

// CanaryStep is one step of a canary upgrade.
type CanaryStep struct {
	Weight int           // percent of new connections for the new generation, 1-99
	Pause  time.Duration // how long the step lasts; 0: until `baton promote`
}

// DrainConfig says how an old generation is stopped.
type DrainConfig struct {
	Signal  syscall.Signal // never SIGKILL or SIGSTOP
	Timeout time.Duration  // > 0; then SIGKILL to the process group
	Grace   time.Duration  // >= 0
}

// RestartConfig says how a crashed serving generation is restarted.
type RestartConfig struct {
	MaxTries   int           // >= 0; 0 means a crash is not restarted
	Backoff    time.Duration // > 0
	MaxBackoff time.Duration // >= Backoff
	ResetAfter time.Duration // > 0
}

// LoadConfig reads and parses a config file.
func LoadConfig(path string) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// The path is already the ConfigError's File.
			err = fmt.Errorf("cannot %s: %w", pe.Op, pe.Err)
		}
		return nil, &ConfigError{File: path, Err: err}
	}
	return ParseConfig(path, data)
}

// readConfig reads up to one byte more than maxConfigSize, enough for
// ParseConfig to refuse a file that is too large.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only: closing cannot lose data
	return io.ReadAll(io.LimitReader(f, maxConfigSize+1))
}

// ParseConfig parses config text; path is used only in messages.
func ParseConfig(path string, data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, &ConfigError{File: path, Err: fmt.Errorf("is larger than %d bytes, the most a config file may have", maxConfigSize)}
	}
	return decodeConfig(path, string(data))
}

// ConfigError is the error for a config file that cannot be used. Every error
// LoadConfig and ParseConfig return is one.
type ConfigError struct {
	File string // the config file
	Line int    // 1-based line of Key, or 0 if not known (e.g. a missing section)
	Key  string // the key as an operator finds it in the file, e.g. "[drain] timeout"; may be ""
	Err  error  // what is wrong with it
}

// Error gives "file: line N: key: problem", leaving out what is not known.
// Unknown keys read "file: line N: unknown key [section] key".
func (e *ConfigError) Error() string {
	parts := make([]string, 0, 4)
	if e.File != "" {
		parts = append(parts, e.File)
	}
	if e.Line > 0 {
		parts = append(parts, "line "+strconv.Itoa(e.Line))
	}
	var uk *unknownKeyError
	switch {
	case errors.As(e.Err, &uk):
		parts = append(parts, "unknown key "+e.Key+uk.detail())
	case e.Err == nil:
		parts = append(parts, strings.TrimPrefix(e.Key+": invalid", ": "))
	default:
		if e.Key != "" {
			parts = append(parts, e.Key)
		}
		parts = append(parts, e.Err.Error())
	}
	return strings.Join(parts, ": ")
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ErrUnknownKey is matched (errors.Is) by the error for a key the config
// format does not have.
var ErrUnknownKey = errors.New("unknown key")

// unknownKeyError is a ConfigError's Err for unknown keys: the first one is
// the ConfigError's Key, the rest are listed here so that one run of baton
// shows all of them.
type unknownKeyError struct {
	hint string   // for the first key, e.g. `did you mean "command"?`
	more []string // the others, each with its line
}

func (e *unknownKeyError) detail() string {
	var b strings.Builder
	if e.hint != "" {
		b.WriteString(" (" + e.hint + ")")
	}
	if len(e.more) > 0 {
		b.WriteString("; also unknown: " + strings.Join(e.more, ", "))
	}
	return b.String()
}

func (e *unknownKeyError) Error() string        { return "unknown key" + e.detail() }
func (e *unknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

// syntaxError keeps the toml.ParseError (errors.As finds it, with its
// Position and ErrorWithUsage) but leaves its line out of the message, which
// ConfigError already gives.
type syntaxError struct{ err toml.ParseError }

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid TOML at column %d: %s", e.err.Position.Col, e.err.Message)
}

func (e *syntaxError) Unwrap() error { return e.err }

// errTooDeep is the error for a file nested more deeply than maxNesting.
var errTooDeep = fmt.Errorf("keys and arrays nest more than %d deep here; the config format needs 3 at most", maxNesting)

// ErrListenersChanged is matched (errors.Is) by ListenersEqual's errors.
var ErrListenersChanged = errors.New("listeners can only change with a restart of baton")

// ListenersEqual reports whether two configs declare the same listeners
// (names, networks, addresses, modes, order), and if not, an error describing
// the first difference. The error matches ErrListenersChanged: listening
// sockets are opened once and kept across generations, so a reload cannot
// change them. A nil Config has no listeners.
func ListenersEqual(a, b *Config) error {
	var old, cur []handoff.ListenerSpec
	if a != nil {
		old = a.Listeners
	}
	if b != nil {
		cur = b.Listeners
	}
	index := func(specs []handoff.ListenerSpec) map[string]int {
		m := make(map[string]int, len(specs))
		for i, s := range specs {
			m[s.Name] = i
		}
		return m
	}
	oldIdx, curIdx := index(old), index(cur)

	for _, o := range old {
		j, ok := curIdx[o.Name]
		if !ok {
			return fmt.Errorf("listener %q removed; %w", o.Name, ErrListenersChanged)
		}
		n := cur[j]
		switch {
		case o.Network != n.Network:
			return fmt.Errorf("listener %q: network changed from %q to %q; %w", o.Name, o.Network, n.Network, ErrListenersChanged)
		case o.Address != n.Address:
			return fmt.Errorf("listener %q: address changed from %q to %q; %w", o.Name, o.Address, n.Address, ErrListenersChanged)
		case o.Private != n.Private:
			return fmt.Errorf("listener %q: private changed from %t to %t; %w", o.Name, o.Private, n.Private, ErrListenersChanged)
		case o.Mode != n.Mode:
			return fmt.Errorf("listener %q: mode changed from %s to %s; %w", o.Name, modeString(o.Mode), modeString(n.Mode), ErrListenersChanged)
		}
	}
	for _, n := range cur {
		if _, ok := oldIdx[n.Name]; !ok {
			return fmt.Errorf("listener %q added; %w", n.Name, ErrListenersChanged)
		}
	}
	if len(old) != len(cur) { // only with duplicate names, which a parsed Config has not
		return fmt.Errorf("number of listeners changed from %d to %d; %w", len(old), len(cur), ErrListenersChanged)
	}
	for i := range old {
		if old[i].Name != cur[i].Name {
			return fmt.Errorf("listener %q moved from position %d to %d (listeners are passed in file order, from fd 3); %w",
				old[i].Name, i+1, curIdx[old[i].Name]+1, ErrListenersChanged)
		}
	}
	return nil
}

func modeString(m os.FileMode) string {
	if m == 0 {
		return "the default"
	}
	return fmt.Sprintf("%#o", uint32(m.Perm()))
}
