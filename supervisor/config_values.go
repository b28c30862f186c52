package supervisor

// The checks and conversions of the values in [service], [readiness],
// [upgrade], [drain] and [restart] (listeners are in config_listeners.go).
// Each section arrives as the map toml.Decode made of it, nil if the file
// leaves it out; its values are still `any`, so every check starts with the
// type.

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
)

var (
	readinessChecks = []string{"notify", "exec", "delay", "http", "tcp"}
	steerings       = []string{"auto", "bpf", "shared"}
	strategies      = []string{StrategyBlueGreen, StrategyCanary, StrategyRolling}
)

// reservedEnv are variables baton sets for each generation; the service's
// environment must not override them. So must not any BATON_ variable.
var reservedEnv = []string{
	"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
}

// service checks [service]; env is its environment table.
func (p *parser) service(sec, env map[string]any) (ServiceConfig, error) {
	var s ServiceConfig
	if sec["command"] == nil {
		if sec == nil {
			return s, p.errorf(-1, []string{"service", "command"}, "missing: the config needs a [service] section with the program to run, e.g. command = [\"/srv/app/current/app\"]")
		}
		return s, p.errorf(-1, []string{"service", "command"}, "missing: the program to run, e.g. command = [\"/srv/app/current/app\"]")
	}
	cmd, err := p.command(-1, sec["command"], "service", "command")
	if err != nil {
		return s, err
	}
	s.Command = cmd
	if err := p.identity(sec, &s); err != nil {
		return s, err
	}
	s.Instances = 1
	if v := sec["instances"]; v != nil {
		n, ok := v.(int64)
		switch {
		case !ok:
			return s, p.errorf(-1, []string{"service", "instances"}, "must be a whole number, not %s", describe(v))
		case n < 1 || n > MaxInstances:
			return s, p.errorf(-1, []string{"service", "instances"}, "is %d; it must be 1 to %d", n, MaxInstances)
		}
		s.Instances = int(n)
	}

	if v := sec["directory"]; v != nil {
		path := []string{"service", "directory"}
		dir, err := p.str(-1, v, path...)
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

	if env != nil {
		s.Environment = make(map[string]string, len(env))
		names := make([]string, 0, len(env))
		for name := range env {
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
			v, ok := env[name].(string)
			if !ok {
				return s, p.errorf(-1, path, "must be a string, not %s; quote it: %s = \"...\"", describe(env[name]), toml.Key{name})
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

func (p *parser) readiness(sec map[string]any, listeners []handoff.ListenerSpec) (ReadinessConfig, error) {
	r := ReadinessConfig{Check: "notify", Timeout: DefaultReadinessTimeout}
	key := func(k string) []string { return []string{"readiness", k} }
	var err error
	if r.Check, err = p.oneOf(-1, sec["check"], "notify", readinessChecks, key("check")...); err != nil {
		return r, err
	}
	if v := sec["timeout"]; v != nil {
		if r.Timeout, err = p.duration(-1, v, false, key("timeout")...); err != nil {
			return r, err
		}
	}

	switch r.Check {
	case "exec":
		if sec["command"] == nil {
			return r, p.errorf(-1, key("command"), `missing: check = "exec" needs the command to run, e.g. command = ["/usr/bin/curl", "-sf", "http://127.0.0.1:8080/health"]`)
		}
		if r.Command, err = p.command(-1, sec["command"], key("command")...); err != nil {
			return r, err
		}
		r.Interval = DefaultExecInterval
		if v := sec["interval"]; v != nil {
			if r.Interval, err = p.duration(-1, v, false, key("interval")...); err != nil {
				return r, err
			}
		}
	case "http", "tcp":
		if err := p.readinessTarget(sec, &r, listeners); err != nil {
			return r, err
		}
	case "delay":
		if sec["delay"] == nil {
			return r, p.errorf(-1, key("delay"), `missing: check = "delay" needs how long after start the service counts as ready, e.g. delay = "2s"`)
		}
		if r.Delay, err = p.duration(-1, sec["delay"], false, key("delay")...); err != nil {
			return r, err
		}
		if r.Delay >= r.Timeout {
			return r, p.errorf(-1, key("delay"), "%v is not shorter than [readiness] timeout %v, so every upgrade would time out", r.Delay, r.Timeout)
		}
	}
	// The keys of the other checks.
	for _, k := range []struct {
		key    string
		checks []string
	}{
		{"command", []string{"exec"}}, {"interval", []string{"exec", "http", "tcp"}}, {"delay", []string{"delay"}},
		{"listener", []string{"http", "tcp"}}, {"check_timeout", []string{"http", "tcp"}},
		{"path", []string{"http"}}, {"host", []string{"http"}}, {"body", []string{"http"}},
	} {
		if sec[k.key] != nil && !slices.Contains(k.checks, r.Check) {
			return r, p.errorf(-1, key(k.key), "is only used by check = %s, and check is %q: remove %s, or set check = %q", strings.Join(k.checks, " or "), r.Check, k.key, k.checks[0])
		}
	}
	return r, nil
}

func (p *parser) drain(sec map[string]any) (DrainConfig, error) {
	d := DrainConfig{Signal: DefaultDrainSignal, Timeout: DefaultDrainTimeout, Grace: DefaultDrainGrace}
	key := func(k string) []string { return []string{"drain", k} }
	var err error
	if v := sec["signal"]; v != nil {
		s, err := p.str(-1, v, key("signal")...)
		if err != nil {
			return d, err
		}
		if d.Signal, err = parseSignal(s); err != nil {
			return d, p.errAt(-1, key("signal"), err)
		}
	}
	if v := sec["timeout"]; v != nil {
		if d.Timeout, err = p.duration(-1, v, false, key("timeout")...); err != nil {
			return d, err
		}
	}
	if v := sec["grace"]; v != nil {
		if d.Grace, err = p.duration(-1, v, true, key("grace")...); err != nil {
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

// upgrade checks [upgrade].
func (p *parser) upgrade(sec map[string]any) (UpgradeConfig, error) {
	var u UpgradeConfig
	var err error
	if u.Steering, err = p.oneOf(-1, sec["steering"], "auto", steerings, "upgrade", "steering"); err != nil {
		return u, err
	}
	if u.Strategy, err = p.oneOf(-1, sec["strategy"], StrategyBlueGreen, strategies, "upgrade", "strategy"); err != nil {
		return u, err
	}
	v, ok := sec["steps"]
	switch {
	case !ok && u.Strategy == StrategyCanary:
		return u, p.errorf(-1, []string{"upgrade", "strategy"}, `"canary" needs steps, e.g. steps = [{ weight = 10, pause = "30s" }, { weight = 50 }]`)
	case !ok:
		return u, nil
	case u.Strategy != StrategyCanary:
		return u, p.errorf(-1, []string{"upgrade", "steps"}, "are only for strategy = \"canary\" (strategy is %q)", u.Strategy)
	}
	steps, ok := tables(v)
	if !ok {
		return u, p.errorf(-1, []string{"upgrade", "steps"}, `must be an array of tables such as [{ weight = 10, pause = "30s" }], not %s`, describe(v))
	}
	if len(steps) == 0 {
		return u, p.errorf(-1, []string{"upgrade", "steps"}, "is empty: a canary needs at least one step below 100%%")
	}
	for i, t := range steps {
		at := func(k string) []string { return []string{"upgrade", "steps", k} }
		var st CanaryStep
		w, ok := t["weight"].(int64)
		switch {
		case t["weight"] == nil:
			return u, p.errorf(-1, []string{"upgrade", "steps"}, "step %d has no weight (percent of new connections, 1-99)", i+1)
		case !ok:
			return u, p.errorf(-1, at("weight"), "step %d: must be a whole number of percent, not %s", i+1, describe(t["weight"]))
		case w < 1 || w > 99:
			return u, p.errorf(-1, at("weight"), "step %d: %d is not 1 to 99 (100%% follows the last step by itself)", i+1, w)
		case i > 0 && int(w) <= u.Steps[i-1].Weight:
			return u, p.errorf(-1, at("weight"), "step %d: %d is not more than the step before it (%d): steps only go up", i+1, w, u.Steps[i-1].Weight)
		}
		st.Weight = int(w)
		if pv := t["pause"]; pv != nil {
			if st.Pause, err = p.duration(-1, pv, false, at("pause")...); err != nil {
				return u, err
			}
		}
		u.Steps = append(u.Steps, st)
	}
	return u, nil
}

func (p *parser) restart(sec map[string]any) (RestartConfig, error) {
	r := RestartConfig{
		MaxTries:   DefaultRestartMaxTries,
		Backoff:    DefaultRestartBackoff,
		MaxBackoff: DefaultRestartMaxBackoff,
		ResetAfter: DefaultRestartResetAfter,
	}
	key := func(k string) []string { return []string{"restart", k} }
	var err error
	if v := sec["max_tries"]; v != nil {
		n, ok := v.(int64)
		switch {
		case !ok:
			return r, p.errorf(-1, key("max_tries"), "must be a whole number, not %s", describe(v))
		case n < 0:
			return r, p.errorf(-1, key("max_tries"), "is %d; it must be 0 (never restart) or more", n)
		case n > 1<<31-1:
			return r, p.errorf(-1, key("max_tries"), "%d is too large", n)
		}
		r.MaxTries = int(n)
	}
	if v := sec["backoff"]; v != nil {
		if r.Backoff, err = p.duration(-1, v, false, key("backoff")...); err != nil {
			return r, err
		}
	}
	if v := sec["max_backoff"]; v != nil {
		if r.MaxBackoff, err = p.duration(-1, v, false, key("max_backoff")...); err != nil {
			return r, err
		}
	}
	if r.MaxBackoff < r.Backoff {
		k := key("max_backoff")
		if sec["max_backoff"] == nil {
			k = key("backoff")
		}
		return r, p.errorf(-1, k, "max_backoff %v is less than backoff %v", r.MaxBackoff, r.Backoff)
	}
	if v := sec["reset_after"]; v != nil {
		if r.ResetAfter, err = p.duration(-1, v, false, key("reset_after")...); err != nil {
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
