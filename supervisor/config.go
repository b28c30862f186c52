package supervisor

// The config file is decoded in four steps, each of which can only see errors
// the previous one has ruled out:
//
//  1. toml.Decode into a generic tree: TOML syntax (toml.ParseError, which
//     carries the line and column).
//  2. The shape of the tree: sections are tables, [[listener]] an array of
//     tables. Checked here, because the toml package reports a section of the
//     wrong type only as text.
//  3. toml.Decode into rawFile, whose leaves are `any` so that it cannot fail
//     on a value; MetaData.Undecoded and an exact-spelling check find the
//     unknown keys.
//  4. Each value is type-checked, range-checked and converted here.
//
// The toml package keeps the position of keys to itself (and, for keys in an
// array of tables, keeps only the last element's), so the lines in errors come
// from keyLines, which re-reads the text once it is known to be valid TOML.

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
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
)

// Config is a parsed and validated config file.
type Config struct {
	Path      string // file it was read from
	Service   ServiceConfig
	Listeners []handoff.ListenerSpec // in file order; at least one
	Readiness ReadinessConfig
	Upgrade   UpgradeConfig
	Drain     DrainConfig
	Restart   RestartConfig
}

// ServiceConfig is the program run for each generation.
type ServiceConfig struct {
	Command     []string          // argv, run without a shell; Command[0] is not empty
	Directory   string            // absolute working directory, or "" for baton's own
	Environment map[string]string // added to a minimal environment; never a variable baton sets
}

// ReadinessConfig says when a new generation is ready to take traffic.
type ReadinessConfig struct {
	Check    string        // "notify" (READY=1 on NOTIFY_SOCKET), "exec" or "delay"
	Timeout  time.Duration // > 0
	Command  []string      // exec only: ready once it exits 0
	Interval time.Duration // exec only (else 0): time between tries
	Delay    time.Duration // delay only (else 0): ready this long after start if still running; < Timeout
}

// UpgradeConfig says how new connections are moved to a new generation.
type UpgradeConfig struct {
	Steering string // "auto", "bpf" or "shared"
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

// ErrListenersChanged is matched (errors.Is) by ListenersEqual's errors.
var ErrListenersChanged = errors.New("listeners can only change with a restart of baton")

// LoadConfig reads and parses a config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
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

// ParseConfig parses config text; path is used only in messages.
func ParseConfig(path string, data []byte) (*Config, error) {
	text := string(data)

	var tree map[string]any
	if _, err := toml.Decode(text, &tree); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: path, Line: pe.Position.Line, Key: displayDotted(pe.LastKey), Err: &syntaxError{pe}}
		}
		return nil, &ConfigError{File: path, Err: err}
	}

	p := &parser{file: path, lines: scanKeyLines(text)}
	if err := p.checkShape(tree); err != nil {
		return nil, err
	}
	var raw rawFile
	md, err := toml.Decode(text, &raw)
	if err != nil {
		// checkShape rules out every error this decode could have.
		return nil, &ConfigError{File: path, Err: err}
	}
	if err := p.checkUnknown(&md); err != nil {
		return nil, err
	}
	return p.config(&raw, tree)
}

// rawFile is the config file as TOML has it. Its leaves are `any` so that
// decoding it never fails on a value: parser checks them, knowing which key
// and which listener each came from.
type rawFile struct {
	Service   rawService    `toml:"service"`
	Listener  []rawListener `toml:"listener"`
	Readiness rawReadiness  `toml:"readiness"`
	Upgrade   rawUpgrade    `toml:"upgrade"`
	Drain     rawDrain      `toml:"drain"`
	Restart   rawRestart    `toml:"restart"`
}

type rawService struct {
	Command     any            `toml:"command"`
	Directory   any            `toml:"directory"`
	Environment map[string]any `toml:"environment"`
}

type rawListener struct {
	Name    any `toml:"name"`
	Address any `toml:"address"`
	Network any `toml:"network"`
	Mode    any `toml:"mode"`
}

type rawReadiness struct {
	Check    any `toml:"check"`
	Timeout  any `toml:"timeout"`
	Command  any `toml:"command"`
	Interval any `toml:"interval"`
	Delay    any `toml:"delay"`
}

type rawUpgrade struct {
	Steering any `toml:"steering"`
}

type rawDrain struct {
	Signal  any `toml:"signal"`
	Timeout any `toml:"timeout"`
	Grace   any `toml:"grace"`
}

type rawRestart struct {
	MaxTries   any `toml:"max_tries"`
	Backoff    any `toml:"backoff"`
	MaxBackoff any `toml:"max_backoff"`
	ResetAfter any `toml:"reset_after"`
}

// configKeys is the config format: each section and its keys. It must match
// rawFile's tags; a key here but not there shows up as undecoded.
var configKeys = map[string][]string{
	"service":   {"command", "directory", "environment"},
	"listener":  {"name", "address", "network", "mode"},
	"readiness": {"check", "timeout", "command", "interval", "delay"},
	"upgrade":   {"steering"},
	"drain":     {"signal", "timeout", "grace"},
	"restart":   {"max_tries", "backoff", "max_backoff", "reset_after"},
}

var (
	readinessChecks = []string{"notify", "exec", "delay"}
	steerings       = []string{"auto", "bpf", "shared"}
	networks        = []string{"tcp", "tcp4", "tcp6", "unix", "udp", "udp4", "udp6"}
)

// reservedEnv are variables baton sets for each generation; the service's
// environment must not override them. So must not any BATON_ variable.
var reservedEnv = []string{
	"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
}

// maxUnixPath is the longest unix socket address: sun_path is 108 bytes, with
// room for the terminating NUL of a path (an abstract name's leading NUL
// replaces the '@').
const maxUnixPath = 107

// parser turns the decoded file into a Config, with errors located in it.
type parser struct {
	file  string
	lines *keyLines
}

// errAt is an error for key path, in listener elem (-1 outside listeners).
func (p *parser) errAt(elem int, path []string, err error) error {
	return &ConfigError{File: p.file, Line: p.lines.line(elem, path...), Key: displayKey(path), Err: err}
}

func (p *parser) errorf(elem int, path []string, format string, args ...any) error {
	return p.errAt(elem, path, fmt.Errorf(format, args...))
}

func (p *parser) checkShape(tree map[string]any) error {
	for _, sec := range []string{"service", "readiness", "upgrade", "drain", "restart"} {
		v, ok := tree[sec]
		if !ok {
			continue
		}
		if _, ok := v.(map[string]any); !ok {
			return p.errorf(-1, []string{sec}, "must be a table: write [%s] on a line of its own with its keys below it, not %s", sec, describe(v))
		}
	}
	if svc, ok := tree["service"].(map[string]any); ok {
		if env, ok := svc["environment"]; ok {
			if _, ok := env.(map[string]any); !ok {
				return p.errorf(-1, []string{"service", "environment"}, `must be a table such as { GREETING = "hello" }, not %s`, describe(env))
			}
		}
	}
	if v, ok := tree["listener"]; ok {
		good := true
		switch v := v.(type) {
		case []map[string]any:
		case []any:
			for _, e := range v {
				if _, ok := e.(map[string]any); !ok {
					good = false
				}
			}
		default:
			good = false
		}
		if !good {
			return p.errorf(-1, []string{"listener"}, "must be an array of tables: write [[listener]] above each listener's keys, not %s", describe(v))
		}
	}
	return nil
}

// checkUnknown refuses keys the format does not have: those the decode left
// undecoded, and those it matched only because the toml package falls back to
// a case-insensitive match of field names ("Timeout" for timeout).
func (p *parser) checkUnknown(md *toml.MetaData) error {
	undecoded := make(map[string]bool)
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	var (
		first     toml.Key
		firstLine int
		more      []string
		reported  []toml.Key
		seen      = make(map[string]int) // key → occurrences so far, for arrays of tables
	)
	for _, k := range md.Keys() {
		s := k.String()
		n := seen[s]
		seen[s]++
		if !undecoded[s] && knownKey(k) {
			continue
		}
		if slices.ContainsFunc(reported, func(r toml.Key) bool { return isUnder(k, r) }) {
			continue // under a table already reported
		}
		reported = append(reported, k)
		line := p.lines.nth(s, n)
		if first == nil {
			first, firstLine = k, line
			continue
		}
		d := displayUnknown(md, k)
		if line > 0 {
			d += " (line " + strconv.Itoa(line) + ")"
		}
		more = append(more, d)
	}
	if first == nil {
		return nil
	}
	return &ConfigError{
		File: p.file,
		Line: firstLine,
		Key:  displayUnknown(md, first),
		Err:  &unknownKeyError{hint: suggest(first), more: more},
	}
}

// knownKey reports whether k is in the config format, spelled exactly.
func knownKey(k toml.Key) bool {
	names, ok := configKeys[k[0]]
	switch {
	case !ok:
		return false
	case len(k) == 1:
		return true
	case !slices.Contains(names, k[1]):
		return false
	case len(k) == 2:
		return true
	default:
		// Variable names are free-form; a table as a value is refused as a
		// wrong type.
		return k[0] == "service" && k[1] == "environment"
	}
}

func isUnder(k, parent toml.Key) bool {
	return len(k) > len(parent) && slices.Equal(k[:len(parent)], parent)
}

// suggest is a hint for an unknown key: the known key it is a typo of.
func suggest(k toml.Key) string {
	var candidates []string
	switch {
	case len(k) == 1:
		for sec := range configKeys {
			candidates = append(candidates, sec)
		}
	case len(k) == 2 && configKeys[k[0]] != nil:
		candidates = configKeys[k[0]]
	default:
		return ""
	}
	sort.Strings(candidates)
	bad := k[len(k)-1]
	for _, c := range candidates {
		if strings.EqualFold(c, bad) {
			return fmt.Sprintf("names are case-sensitive: did you mean %q?", c)
		}
	}
	for _, c := range candidates {
		if editDistance(c, bad) <= 2 {
			return fmt.Sprintf("did you mean %q?", c)
		}
	}
	if len(k) == 2 {
		return fmt.Sprintf("%s has %s", displayKey(k[:1]), strings.Join(candidates, ", "))
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (p *parser) config(raw *rawFile, tree map[string]any) (*Config, error) {
	c := &Config{Path: p.file}
	var err error
	if c.Service, err = p.service(&raw.Service, tree["service"] != nil); err != nil {
		return nil, err
	}
	if c.Listeners, err = p.listeners(raw.Listener); err != nil {
		return nil, err
	}
	if c.Readiness, err = p.readiness(&raw.Readiness); err != nil {
		return nil, err
	}
	if c.Upgrade.Steering, err = p.oneOf(-1, raw.Upgrade.Steering, "auto", steerings, "upgrade", "steering"); err != nil {
		return nil, err
	}
	if c.Drain, err = p.drain(&raw.Drain); err != nil {
		return nil, err
	}
	if c.Restart, err = p.restart(&raw.Restart); err != nil {
		return nil, err
	}
	return c, nil
}

func (p *parser) service(raw *rawService, present bool) (ServiceConfig, error) {
	var s ServiceConfig
	if raw.Command == nil {
		if !present {
			return s, p.errorf(-1, []string{"service", "command"}, "missing: the config needs a [service] section with the program to run, e.g. command = [\"/srv/app/current/app\"]")
		}
		return s, p.errorf(-1, []string{"service", "command"}, "missing: the program to run, e.g. command = [\"/srv/app/current/app\"]")
	}
	cmd, err := p.command(-1, raw.Command, "service", "command")
	if err != nil {
		return s, err
	}
	s.Command = cmd

	if raw.Directory != nil {
		path := []string{"service", "directory"}
		dir, err := p.str(-1, raw.Directory, path...)
		if err != nil {
			return s, err
		}
		switch {
		case strings.IndexByte(dir, 0) >= 0:
			return s, p.errorf(-1, path, "contains a NUL byte")
		case !filepath.IsAbs(dir):
			return s, p.errorf(-1, path, "%q is not an absolute path", dir)
		}
		s.Directory = dir
	}

	if raw.Environment != nil {
		s.Environment = make(map[string]string, len(raw.Environment))
		names := make([]string, 0, len(raw.Environment))
		for name := range raw.Environment {
			names = append(names, name)
		}
		sort.Strings(names) // for the same error on every run
		for _, name := range names {
			path := []string{"service", "environment", name}
			switch {
			case name == "":
				return s, p.errorf(-1, path, "a variable needs a name")
			case strings.ContainsAny(name, "=\x00"):
				return s, p.errorf(-1, path, "variable name %q contains '=' or a NUL byte", name)
			case slices.Contains(reservedEnv, name) || strings.HasPrefix(name, "BATON_"):
				return s, p.errorf(-1, path, "%s is set by baton for each generation and cannot be overridden (reserved: %s and BATON_*)", name, strings.Join(reservedEnv, ", "))
			}
			v, ok := raw.Environment[name].(string)
			if !ok {
				return s, p.errorf(-1, path, "must be a string, not %s; quote it: %s = \"...\"", describe(raw.Environment[name]), toml.Key{name})
			}
			if strings.IndexByte(v, 0) >= 0 {
				return s, p.errorf(-1, path, "value contains a NUL byte")
			}
			s.Environment[name] = v
		}
	}
	return s, nil
}

// command is an argv: a non-empty array of strings whose first is not empty.
func (p *parser) command(elem int, v any, path ...string) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, p.errorf(elem, path, "must be an array of strings, the program and its arguments, such as [\"/srv/app/current/app\", \"--flag\"]; not %s", describe(v))
	}
	if len(arr) == 0 {
		return nil, p.errorf(elem, path, "is empty: it needs at least the program to run")
	}
	argv := make([]string, len(arr))
	for i, a := range arr {
		s, ok := a.(string)
		if !ok {
			return nil, p.errorf(elem, path, "element %d must be a string, not %s", i, describe(a))
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, p.errorf(elem, path, "element %d contains a NUL byte", i)
		}
		argv[i] = s
	}
	if argv[0] == "" {
		return nil, p.errorf(elem, path, "the program (first element) is empty")
	}
	return argv, nil
}

func (p *parser) listeners(raw []rawListener) ([]handoff.ListenerSpec, error) {
	if len(raw) == 0 {
		return nil, p.errorf(-1, []string{"listener"}, "missing: the config needs at least one listener, e.g.\n\t[[listener]]\n\tname = \"http\"\n\taddress = \"127.0.0.1:8080\"")
	}
	specs := make([]handoff.ListenerSpec, 0, len(raw))
	names := make(map[string]int)     // name → its line
	addresses := make(map[string]int) // transport and address → its line
	for i := range raw {
		spec, err := p.listener(i, &raw[i])
		if err != nil {
			return nil, err
		}
		if line, dup := names[spec.Name]; dup {
			return nil, p.errorf(i, []string{"listener", "name"}, "%q is already the name of the listener at line %d; names must be unique", spec.Name, line)
		}
		names[spec.Name] = p.lines.line(i, "listener", "name")

		key := transport(spec.Network) + " " + spec.Address
		ephemeral := !spec.IsUnix() && strings.HasSuffix(spec.Address, ":0") // a free port each
		if line, dup := addresses[key]; dup && !ephemeral {
			return nil, p.errorf(i, []string{"listener", "address"}, "%s %s is already the address of the listener at line %d", spec.Network, spec.Address, line)
		}
		addresses[key] = p.lines.line(i, "listener", "address")
		specs = append(specs, spec)
	}
	return specs, nil
}

// transport is what two listeners must share to conflict.
func transport(network string) string {
	switch network {
	case "udp", "udp4", "udp6":
		return "udp"
	case "unix":
		return "unix"
	}
	return "tcp"
}

func (p *parser) listener(i int, raw *rawListener) (handoff.ListenerSpec, error) {
	var spec handoff.ListenerSpec
	key := func(k string) []string { return []string{"listener", k} }

	if raw.Name == nil {
		return spec, p.errorf(i, key("name"), "missing: each listener needs a name, its entry in LISTEN_FDNAMES, e.g. name = \"http\"")
	}
	name, err := p.str(i, raw.Name, key("name")...)
	if err != nil {
		return spec, err
	}
	if err := checkListenerName(name); err != nil {
		return spec, p.errAt(i, key("name"), err)
	}
	spec.Name = name

	spec.Network = "tcp"
	if raw.Network != nil {
		if spec.Network, err = p.oneOf(i, raw.Network, "tcp", networks, key("network")...); err != nil {
			return spec, err
		}
	}

	if raw.Address == nil {
		return spec, p.errorf(i, key("address"), "missing: listener %q needs an address, e.g. address = \"127.0.0.1:8080\"", name)
	}
	addr, err := p.str(i, raw.Address, key("address")...)
	if err != nil {
		return spec, err
	}
	if spec.IsUnix() {
		err = checkUnixAddress(addr)
	} else {
		addr, err = canonicalAddress(spec.Network, addr)
	}
	if err != nil {
		return spec, p.errAt(i, key("address"), err)
	}
	spec.Address = addr

	if raw.Mode != nil {
		switch {
		case !spec.IsUnix():
			return spec, p.errorf(i, key("mode"), "only applies to unix sockets, and this listener's network is %q: remove mode", spec.Network)
		case strings.HasPrefix(addr, "@"):
			return spec, p.errorf(i, key("mode"), "an abstract socket (%s) has no file to set permissions on: remove mode", addr)
		}
		s, ok := raw.Mode.(string)
		if !ok {
			return spec, p.errorf(i, key("mode"), "must be a string of octal digits such as \"0660\", not %s", describe(raw.Mode))
		}
		mode, err := parseMode(s)
		if err != nil {
			return spec, p.errAt(i, key("mode"), err)
		}
		spec.Mode = mode
	}
	return spec, nil
}

// checkListenerName follows sd_listen_fds_with_names: the name is one entry
// of the ':'-separated LISTEN_FDNAMES.
func checkListenerName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > 255:
		return fmt.Errorf("is %d bytes long; the limit is 255", len(name))
	}
	for _, c := range []byte(name) {
		switch {
		case c == ':':
			return fmt.Errorf("%q contains ':', which separates the names in LISTEN_FDNAMES", name)
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("%q may only have printable ASCII characters, without whitespace", name)
		}
	}
	return nil
}

func checkUnixAddress(addr string) error {
	switch {
	case strings.IndexByte(addr, 0) >= 0:
		return errors.New("contains a NUL byte")
	case addr == "@":
		return errors.New(`"@" needs a name after it for an abstract socket, e.g. "@baton-http"`)
	case !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@"):
		return fmt.Errorf("unix socket %q must be an absolute path (starting with /) or an abstract name (starting with @)", addr)
	case len(addr) > maxUnixPath:
		return fmt.Errorf("unix socket address is %d bytes long; the limit is %d", len(addr), maxUnixPath)
	}
	return nil
}

// canonicalAddress checks an IP "host:port" address and writes it the way
// net/netip does, so that the same address is always the same string.
func canonicalAddress(network, addr string) (string, error) {
	const form = `write host:port with an IP address, e.g. "127.0.0.1:8080", "[::1]:8080", or ":8080" for all addresses`
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w; %s", err, form)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		if port != "" && strings.Trim(port, "0123456789") == "" {
			return "", fmt.Errorf("port %s in %q is out of range: it must be 0 to 65535", port, addr)
		}
		return "", fmt.Errorf("port %q in %q is not a number; %s", port, addr, form)
	}
	portStr := strconv.FormatUint(n, 10)
	if host == "" {
		return ":" + portStr, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("host %q in %q is not an IP address; baton does not look up host names: use an IP address such as 127.0.0.1 or ::1, or an empty host (\":%s\") for all addresses", host, addr, portStr)
	}
	switch {
	case strings.HasSuffix(network, "4") && !ip.Unmap().Is4():
		return "", fmt.Errorf("%s is not an IPv4 address, which network %q needs", host, network)
	case strings.HasSuffix(network, "6") && ip.Is4():
		return "", fmt.Errorf("%s is not an IPv6 address, which network %q needs", host, network)
	}
	return net.JoinHostPort(ip.String(), portStr), nil
}

// parseMode parses permission bits written in octal, like chmod's.
func parseMode(s string) (os.FileMode, error) {
	const form = `write the permission bits in octal, e.g. "0660"`
	if s == "" || len(s) > 4 || strings.Trim(s, "01234567") != "" {
		return 0, fmt.Errorf("invalid mode %q: %s", s, form)
	}
	m, err := strconv.ParseUint(s, 8, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("invalid mode %q: %w; %s", s, err, form)
	case m > 0o777:
		return 0, fmt.Errorf("invalid mode %q: only permission bits (at most 0777) apply to a socket", s)
	case m == 0:
		return 0, fmt.Errorf("mode %q would let no one connect; %s, or remove mode for the default", s, form)
	}
	return os.FileMode(m), nil
}

func (p *parser) readiness(raw *rawReadiness) (ReadinessConfig, error) {
	r := ReadinessConfig{Check: "notify", Timeout: DefaultReadinessTimeout}
	key := func(k string) []string { return []string{"readiness", k} }
	var err error
	if r.Check, err = p.oneOf(-1, raw.Check, "notify", readinessChecks, key("check")...); err != nil {
		return r, err
	}
	if raw.Timeout != nil {
		if r.Timeout, err = p.duration(-1, raw.Timeout, false, key("timeout")...); err != nil {
			return r, err
		}
	}

	onlyFor := func(k, check string) error {
		return p.errorf(-1, key(k), "is only used by check = %q, and check is %q: remove %s, or set check = %q", check, r.Check, k, check)
	}
	switch r.Check {
	case "exec":
		if raw.Command == nil {
			return r, p.errorf(-1, key("command"), `missing: check = "exec" needs the command to run, e.g. command = ["/usr/bin/curl", "-sf", "http://127.0.0.1:8080/health"]`)
		}
		if r.Command, err = p.command(-1, raw.Command, key("command")...); err != nil {
			return r, err
		}
		r.Interval = DefaultExecInterval
		if raw.Interval != nil {
			if r.Interval, err = p.duration(-1, raw.Interval, false, key("interval")...); err != nil {
				return r, err
			}
		}
	case "delay":
		if raw.Delay == nil {
			return r, p.errorf(-1, key("delay"), `missing: check = "delay" needs how long after start the service counts as ready, e.g. delay = "2s"`)
		}
		if r.Delay, err = p.duration(-1, raw.Delay, false, key("delay")...); err != nil {
			return r, err
		}
		if r.Delay >= r.Timeout {
			return r, p.errorf(-1, key("delay"), "%v is not shorter than [readiness] timeout %v, so every upgrade would time out", r.Delay, r.Timeout)
		}
	}
	if raw.Command != nil && r.Check != "exec" {
		return r, onlyFor("command", "exec")
	}
	if raw.Interval != nil && r.Check != "exec" {
		return r, onlyFor("interval", "exec")
	}
	if raw.Delay != nil && r.Check != "delay" {
		return r, onlyFor("delay", "delay")
	}
	return r, nil
}

func (p *parser) drain(raw *rawDrain) (DrainConfig, error) {
	d := DrainConfig{Signal: DefaultDrainSignal, Timeout: DefaultDrainTimeout, Grace: DefaultDrainGrace}
	key := func(k string) []string { return []string{"drain", k} }
	var err error
	if raw.Signal != nil {
		s, err := p.str(-1, raw.Signal, key("signal")...)
		if err != nil {
			return d, err
		}
		if d.Signal, err = parseSignal(s); err != nil {
			return d, p.errAt(-1, key("signal"), err)
		}
	}
	if raw.Timeout != nil {
		if d.Timeout, err = p.duration(-1, raw.Timeout, false, key("timeout")...); err != nil {
			return d, err
		}
	}
	if raw.Grace != nil {
		if d.Grace, err = p.duration(-1, raw.Grace, true, key("grace")...); err != nil {
			return d, err
		}
	}
	return d, nil
}

// signalAliases are the other names Linux has for some signals.
var signalAliases = map[string]string{"SIGIOT": "SIGABRT", "SIGPOLL": "SIGIO", "SIGCLD": "SIGCHLD"}

// parseSignal takes a signal name with or without "SIG", in any case.
func parseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if alias, ok := signalAliases[name]; ok {
		name = alias
	}
	sig := unix.SignalNum(name)
	switch sig {
	case 0:
		return 0, fmt.Errorf("unknown signal %q: use a signal name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 or SIGWINCH", s)
	case syscall.SIGKILL:
		return 0, errors.New("SIGKILL cannot be the drain signal: the service could not finish the requests in flight, and baton sends SIGKILL anyway once [drain] timeout has passed")
	case syscall.SIGSTOP:
		return 0, errors.New("SIGSTOP cannot be the drain signal: it pauses the service instead of stopping it, so the service would never exit")
	}
	return sig, nil
}

func (p *parser) restart(raw *rawRestart) (RestartConfig, error) {
	r := RestartConfig{
		MaxTries:   DefaultRestartMaxTries,
		Backoff:    DefaultRestartBackoff,
		MaxBackoff: DefaultRestartMaxBackoff,
		ResetAfter: DefaultRestartResetAfter,
	}
	key := func(k string) []string { return []string{"restart", k} }
	var err error
	if raw.MaxTries != nil {
		n, ok := raw.MaxTries.(int64)
		switch {
		case !ok:
			return r, p.errorf(-1, key("max_tries"), "must be a whole number, not %s", describe(raw.MaxTries))
		case n < 0:
			return r, p.errorf(-1, key("max_tries"), "is %d; it must be 0 (never restart) or more", n)
		case n > 1<<31-1:
			return r, p.errorf(-1, key("max_tries"), "%d is too large", n)
		}
		r.MaxTries = int(n)
	}
	if raw.Backoff != nil {
		if r.Backoff, err = p.duration(-1, raw.Backoff, false, key("backoff")...); err != nil {
			return r, err
		}
	}
	if raw.MaxBackoff != nil {
		if r.MaxBackoff, err = p.duration(-1, raw.MaxBackoff, false, key("max_backoff")...); err != nil {
			return r, err
		}
	}
	if r.MaxBackoff < r.Backoff {
		k := key("max_backoff")
		if raw.MaxBackoff == nil {
			k = key("backoff")
		}
		return r, p.errorf(-1, k, "max_backoff %v is less than backoff %v", r.MaxBackoff, r.Backoff)
	}
	if raw.ResetAfter != nil {
		if r.ResetAfter, err = p.duration(-1, raw.ResetAfter, false, key("reset_after")...); err != nil {
			return r, err
		}
	}
	return r, nil
}

// str is v as a string.
func (p *parser) str(elem int, v any, path ...string) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", p.errorf(elem, path, "must be a string, not %s", describe(v))
	}
	return s, nil
}

// oneOf is v as one of choices, or def if v is absent.
func (p *parser) oneOf(elem int, v any, def string, choices []string, path ...string) (string, error) {
	if v == nil {
		return def, nil
	}
	s, err := p.str(elem, v, path...)
	if err != nil {
		return "", err
	}
	if !slices.Contains(choices, s) {
		return "", p.errorf(elem, path, "unknown value %q: use one of %s (default %q)", s, quoteAll(choices), def)
	}
	return s, nil
}

// duration is v, a Go duration string such as "1m30s", as a positive
// duration (or, with allowZero, a non-negative one).
func (p *parser) duration(elem int, v any, allowZero bool, path ...string) (time.Duration, error) {
	const form = `write a number and a unit (ns, us, ms, s, m, h), e.g. "30s" or "1m30s"`
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			return 0, p.errorf(elem, path, "must be a string with a unit, not the number %d: did you mean \"%ds\"?", n, n)
		}
		return 0, p.errorf(elem, path, "must be a duration string such as \"30s\", not %s", describe(v))
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, p.errAt(elem, path, fmt.Errorf("%w; %s", err, form))
	case d < 0:
		return 0, p.errorf(elem, path, "%q is negative", s)
	case d == 0 && !allowZero:
		return 0, p.errorf(elem, path, "%q is zero; it must be longer", s)
	}
	return d, nil
}

// describe names a TOML value, for "must be X, not <describe>".
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %.60q", v)
	case int64:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the float %v", v)
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// displayKey writes a key the way an operator finds it in the file:
// "[drain] timeout", "[[listener]] address", "[service] environment.FOO".
func displayKey(path []string) string {
	if len(path) == 0 {
		return ""
	}
	head := "[" + toml.Key(path[:1]).String() + "]"
	if path[0] == "listener" {
		head = "[[listener]]"
	}
	if len(path) == 1 {
		return head
	}
	return head + " " + toml.Key(path[1:]).String()
}

// displayUnknown is displayKey for a key that may not be a section.
func displayUnknown(md *toml.MetaData, k toml.Key) string {
	if len(k) > 1 {
		return displayKey(k)
	}
	switch md.Type(k...) {
	case "Hash":
		return "[" + k.String() + "]"
	case "ArrayHash":
		return "[[" + k.String() + "]]"
	}
	return k.String()
}

// displayDotted is displayKey for the toml package's dotted LastKey.
func displayDotted(k string) string {
	if k == "" || strings.ContainsAny(k, `"'`) {
		return k
	}
	return displayKey(strings.Split(k, "."))
}

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

// keyLines records the line of each key in a config file, in file order.
type keyLines struct {
	keys []keyLine
}

type keyLine struct {
	key  string // toml.Key.String() of the full key
	elem int    // which element of a top-level array of tables ([[listener]]) it is in; -1 outside one
	line int
}

// line is the line of a key in element elem (-1 outside arrays of tables).
// For a key the file does not have, it is the line of the first key under
// it, or else of the nearest enclosing table that is in the file (such as a
// table header); 0 if none is.
func (kl *keyLines) line(elem int, path ...string) int {
	for n := len(path); n > 0; n-- {
		k := toml.Key(path[:n]).String()
		for _, e := range kl.keys {
			if e.elem == elem && e.key == k {
				return e.line
			}
		}
		under := k + "."
		for _, e := range kl.keys {
			if e.elem == elem && strings.HasPrefix(e.key, under) {
				return e.line
			}
		}
	}
	return 0
}

// nth is the line of the nth (from 0) appearance of key, counted the way
// toml.MetaData.Keys lists keys; failing that, of its first; or 0.
func (kl *keyLines) nth(key string, n int) int {
	first := 0
	for _, e := range kl.keys {
		if e.key != key {
			continue
		}
		if n == 0 {
			return e.line
		}
		n--
		if first == 0 {
			first = e.line
		}
	}
	return first
}

// scanKeyLines finds the keys in text, which must be valid TOML: it reads
// table headers, keys and the structure of values (strings, arrays, inline
// tables) and skips the rest. Invalid TOML gives wrong lines, not a panic.
func scanKeyLines(text string) *keyLines {
	sc := keyScanner{s: text, elem: -1, counts: make(map[string]int)}
	sc.i = len(text) - len(strings.TrimPrefix(text, "\ufeff"))
	sc.scan()

	var newlines []int
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			newlines = append(newlines, i)
		}
	}
	for i := range sc.out {
		sc.out[i].line = sort.SearchInts(newlines, sc.out[i].line) + 1 // byte offset to line
	}
	return &keyLines{keys: sc.out}
}

type keyScanner struct {
	s      string
	i      int
	table  []string       // the current [table]
	elem   int            // keyLine.elem of keys in the current table
	counts map[string]int // top-level key → elements of its array of tables so far
	out    []keyLine      // with byte offsets for lines, until scanKeyLines converts them
}

func (sc *keyScanner) add(path []string, elem, offset int) {
	sc.out = append(sc.out, keyLine{key: toml.Key(path).String(), elem: elem, line: offset})
}

func (sc *keyScanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

func (sc *keyScanner) skip(n int) { sc.i = min(sc.i+n, len(sc.s)) }

func (sc *keyScanner) scan() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		case '[':
			sc.header()
		default:
			start := sc.i
			k := sc.key()
			if k == nil {
				sc.skipLine()
				continue
			}
			path := join(sc.table, k)
			sc.add(path, sc.elem, start)
			sc.skipSpace()
			if sc.peek() == '=' {
				sc.i++
			}
			sc.value(path, sc.elem)
			sc.skipLine() // a comment, or the rest of a date-time
		}
	}
}

func (sc *keyScanner) header() {
	start := sc.i
	array := strings.HasPrefix(sc.s[sc.i:], "[[")
	if array {
		sc.skip(2)
	} else {
		sc.skip(1)
	}
	k := sc.key()
	sc.skipLine()
	if k == nil {
		return
	}
	sc.table = k
	if array && len(k) == 1 {
		sc.counts[k[0]]++
	}
	sc.elem = sc.counts[k[0]] - 1 // -1 unless under a top-level array of tables
	sc.add(k, sc.elem, start)
}

// key reads a dotted key.
func (sc *keyScanner) key() []string {
	var parts []string
	for {
		sc.skipSpace()
		var part string
		switch c := sc.peek(); {
		case c == '"':
			part = sc.basicKey()
		case c == '\'':
			end := strings.IndexAny(sc.s[sc.i+1:], "'\n")
			if end < 0 {
				return nil
			}
			part = sc.s[sc.i+1 : sc.i+1+end]
			sc.skip(end + 2)
		default:
			start := sc.i
			for sc.i < len(sc.s) && isBareKeyByte(sc.s[sc.i]) {
				sc.i++
			}
			if sc.i == start {
				return nil
			}
			part = sc.s[start:sc.i]
		}
		parts = append(parts, part)
		sc.skipSpace()
		if sc.peek() != '.' {
			return parts
		}
		sc.i++
	}
}

func isBareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// basicKey reads a "quoted" key, undoing its escapes.
func (sc *keyScanner) basicKey() string {
	var b strings.Builder
	sc.i++ // the opening quote
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return b.String()
		case c == '\n':
			return b.String()
		case c != '\\' || sc.i+1 >= len(sc.s):
			b.WriteByte(c)
			sc.i++
			continue
		}
		e := sc.s[sc.i+1]
		sc.skip(2)
		if r, ok := map[byte]rune{'b': '\b', 't': '\t', 'n': '\n', 'f': '\f', 'r': '\r', 'e': 0x1b, '"': '"', '\\': '\\'}[e]; ok {
			b.WriteRune(r)
			continue
		}
		if n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]; n > 0 && sc.i+n <= len(sc.s) {
			if r, err := strconv.ParseUint(sc.s[sc.i:sc.i+n], 16, 32); err == nil {
				b.WriteRune(rune(r))
			}
			sc.skip(n)
		}
	}
	return b.String()
}

// value skips a value, recording the keys of its inline tables.
func (sc *keyScanner) value(path []string, elem int) {
	sc.skipSpace()
	switch sc.peek() {
	case '"':
		sc.str('"', true)
	case '\'':
		sc.str('\'', false)
	case '[':
		sc.array(path, elem)
	case '{':
		sc.inlineTable(path, elem)
	default: // number, boolean or date-time
		start := sc.i
		for sc.i < len(sc.s) {
			c := sc.s[sc.i]
			if c == ' ' && sc.i-start == len("2006-01-02") && sc.i+1 < len(sc.s) && sc.s[sc.i+1] >= '0' && sc.s[sc.i+1] <= '9' {
				sc.i++ // the space between date and time
				continue
			}
			if strings.IndexByte(" \t\r\n,]}#", c) >= 0 {
				return
			}
			sc.i++
		}
	}
}

// str skips a string quoted by q, single-line or multi-line.
func (sc *keyScanner) str(q byte, escapes bool) {
	q3 := strings.Repeat(string(q), 3)
	if strings.HasPrefix(sc.s[sc.i:], q3) {
		sc.skip(3)
		for sc.i < len(sc.s) {
			switch {
			case escapes && sc.s[sc.i] == '\\':
				sc.skip(2)
			case strings.HasPrefix(sc.s[sc.i:], q3):
				sc.skip(3)
				// Up to two more quotes belong to the string.
				for n := 0; n < 2 && sc.peek() == q; n++ {
					sc.i++
				}
				return
			default:
				sc.i++
			}
		}
		return
	}
	sc.i++
	for sc.i < len(sc.s) {
		switch c := sc.s[sc.i]; {
		case escapes && c == '\\':
			sc.skip(2)
		case c == q:
			sc.i++
			return
		case c == '\n':
			return
		default:
			sc.i++
		}
	}
}

func (sc *keyScanner) array(path []string, elem int) {
	sc.i++ // [
	for sc.i < len(sc.s) {
		sc.skipSpaceLines()
		switch sc.peek() {
		case 0:
			return
		case ']':
			sc.i++
			return
		case ',':
			sc.i++
		case '{':
			e := elem
			if len(path) == 1 { // listener = [{...}, {...}] is an array of tables too
				e = sc.counts[path[0]]
				sc.counts[path[0]]++
			}
			sc.inlineTable(path, e)
		default:
			before := sc.i
			sc.value(path, elem)
			if sc.i == before {
				sc.i++
			}
		}
	}
}

func (sc *keyScanner) inlineTable(path []string, elem int) {
	sc.i++ // {
	for sc.i < len(sc.s) {
		sc.skipSpaceLines()
		switch sc.peek() {
		case 0:
			return
		case '}':
			sc.i++
			return
		case ',':
			sc.i++
		default:
			start := sc.i
			k := sc.key()
			if k == nil {
				sc.i++
				continue
			}
			full := join(path, k)
			sc.add(full, elem, start)
			sc.skipSpace()
			if sc.peek() == '=' {
				sc.i++
			}
			sc.value(full, elem)
		}
	}
}

func (sc *keyScanner) skipSpace() {
	for sc.i < len(sc.s) && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipSpaceLines skips whitespace, newlines and comments.
func (sc *keyScanner) skipSpaceLines() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the end of the line.
func (sc *keyScanner) skipLine() {
	if n := strings.IndexByte(sc.s[sc.i:], '\n'); n >= 0 {
		sc.i += n
	} else {
		sc.i = len(sc.s)
	}
}

func join(a, b []string) []string {
	return append(slices.Clip(a), b...)
}
