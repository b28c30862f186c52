package supervisor

// The checks and conversions of what watches a generation: http and tcp
// readiness checks, [health], [analysis], [hooks], and the probation keys
// of [upgrade].

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

var healthChecks = []string{"http", "tcp", "exec"}

// target reads the keys of an http or tcp check in section sec: the
// private listener it reaches (the first private one by default), and for
// http the path, Host and expected body.
func (p *parser) target(secName string, sec map[string]any, check string, listeners []handoff.ListenerSpec) (ProbeTarget, error) {
	t := ProbeTarget{Path: "/"}
	key := func(k string) []string { return []string{secName, k} }
	var private []string
	for _, l := range listeners {
		if l.Private {
			private = append(private, l.Name)
		}
	}
	if v := sec["listener"]; v != nil {
		name, err := p.str(-1, v, key("listener")...)
		if err != nil {
			return t, err
		}
		if !slices.Contains(private, name) {
			return t, p.errorf(-1, key("listener"), "%q is not a private listener (private ones: %s); a check must reach one instance, not whichever process accepts on a shared address", name, quoteAll(private))
		}
		t.Listener = name
	} else {
		if len(private) == 0 {
			return t, p.errorf(-1, key("check"), "check = %q needs a private listener, so that it reaches each instance itself and not whichever process accepts on a shared address; add one the service serves its health endpoint on:\n\t[[listener]]\n\tname = \"health\"\n\taddress = \"127.0.0.1:0\"\n\tprivate = true", check)
		}
		t.Listener = private[0]
	}
	for _, k := range []struct {
		name string
		dst  *string
	}{{"path", &t.Path}, {"host", &t.Host}, {"body", &t.Body}} {
		v := sec[k.name]
		if v == nil {
			continue
		}
		if check != "http" {
			return t, p.errorf(-1, key(k.name), "is only used by check = \"http\", and check is %q", check)
		}
		s, err := p.str(-1, v, key(k.name)...)
		if err != nil {
			return t, err
		}
		*k.dst = s
	}
	if t.Path == "" || t.Path[0] != '/' {
		return t, p.errorf(-1, key("path"), "%q must start with /", t.Path)
	}
	return t, nil
}

// health checks [health]; no section means no health checks.
func (p *parser) health(sec map[string]any, listeners []handoff.ListenerSpec) (HealthConfig, error) {
	var h HealthConfig
	key := func(k string) []string { return []string{"health", k} }
	var err error
	if sec == nil {
		return h, nil
	}
	if v := sec["watchdog"]; v != nil {
		if h.Watchdog, err = p.duration(-1, v, false, key("watchdog")...); err != nil {
			return h, err
		}
	}
	if sec["check"] == nil {
		for k := range sec {
			if k != "watchdog" {
				return h, p.errorf(-1, key("check"), "missing: %s needs a check (http, tcp or exec)", k)
			}
		}
		return h, nil
	}
	if h.Check, err = p.oneOf(-1, sec["check"], "", healthChecks, key("check")...); err != nil {
		return h, err
	}
	switch h.Check {
	case "exec":
		if sec["command"] == nil {
			return h, p.errorf(-1, key("command"), `missing: check = "exec" needs the command to run, e.g. command = ["/usr/local/bin/healthcheck"]`)
		}
		if h.Command, err = p.command(-1, sec["command"], key("command")...); err != nil {
			return h, err
		}
		for _, k := range []string{"listener", "path", "host", "body"} {
			if sec[k] != nil {
				return h, p.errorf(-1, key(k), "is only used by http and tcp checks, and check is \"exec\"")
			}
		}
	default:
		if sec["command"] != nil {
			return h, p.errorf(-1, key("command"), "is only used by check = \"exec\", and check is %q", h.Check)
		}
		if h.Target, err = p.target("health", sec, h.Check, listeners); err != nil {
			return h, err
		}
	}
	s := probe.Schedule{}
	for _, d := range []struct {
		name string
		dst  *time.Duration
		zero bool
	}{{"interval", &s.Interval, false}, {"timeout", &s.Timeout, false}, {"initial_delay", &s.InitialDelay, true}} {
		if v := sec[d.name]; v != nil {
			if *d.dst, err = p.duration(-1, v, d.zero, key(d.name)...); err != nil {
				return h, err
			}
		}
	}
	for _, n := range []struct {
		name string
		dst  *int
	}{{"success_threshold", &s.SuccessThreshold}, {"failure_threshold", &s.FailureThreshold}} {
		if v := sec[n.name]; v != nil {
			if *n.dst, err = p.count(-1, v, 1, key(n.name)...); err != nil {
				return h, err
			}
		}
	}
	h.Schedule = s.WithDefaults()
	if err := h.Schedule.Validate(); err != nil {
		return h, p.errAt(-1, []string{"health"}, err)
	}
	return h, nil
}

// count is v as a whole number of at least min.
func (p *parser) count(elem int, v any, min int, path ...string) (int, error) {
	n, ok := v.(int64)
	switch {
	case !ok:
		return 0, p.errorf(elem, path, "must be a whole number, not %s", describe(v))
	case n < int64(min):
		return 0, p.errorf(elem, path, "is %d; it must be %d or more", n, min)
	case n > 1<<31-1:
		return 0, p.errorf(elem, path, "%d is too large", n)
	}
	return int(n), nil
}

// analysis checks [analysis]: the keys of probe.AnalysisConfig, plus the
// private listener whose address serves metrics_path.
func (p *parser) analysis(sec map[string]any, listeners []handoff.ListenerSpec) (AnalysisConfig, error) {
	a := AnalysisConfig{AnalysisConfig: probe.DefaultAnalysisConfig()}
	if sec == nil {
		return a, nil
	}
	a.Enabled = true
	rest := make(map[string]any, len(sec))
	for k, v := range sec {
		if k != "listener" {
			rest[k] = v
		}
	}
	// The section's values, already type-free TOML, decoded onto the
	// defaults by the toml package (strictly: unknown keys were refused
	// before this).
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(rest); err != nil {
		return a, p.errAt(-1, []string{"analysis"}, err)
	}
	if _, err := toml.Decode(buf.String(), &a.AnalysisConfig); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			err = errors.New(pe.Message)
		}
		return a, p.errAt(-1, []string{"analysis"}, err)
	}
	if err := a.AnalysisConfig.Validate(); err != nil {
		return a, p.errAt(-1, []string{"analysis"}, err)
	}
	if slices.Contains(a.Rules, probe.RuleErrorRatio) {
		t, err := p.target("analysis", map[string]any{"listener": sec["listener"]}, "tcp", listeners)
		if err != nil {
			return a, err
		}
		a.Listener = t.Listener
	}
	return a, nil
}

// hooks checks [hooks].
func (p *parser) hooks(sec map[string]any) (HooksConfig, error) {
	h := HooksConfig{Timeout: DefaultHookTimeout}
	key := func(k string) []string { return []string{"hooks", k} }
	var err error
	for _, c := range []struct {
		name string
		dst  *[]string
	}{{"pre_start", &h.PreStart}, {"post_promote", &h.PostPromote}, {"post_revert", &h.PostRevert}} {
		if v := sec[c.name]; v != nil {
			if *c.dst, err = p.command(-1, v, key(c.name)...); err != nil {
				return h, err
			}
		}
	}
	if v := sec["timeout"]; v != nil {
		if h.Timeout, err = p.duration(-1, v, false, key("timeout")...); err != nil {
			return h, err
		}
	}
	return h, nil
}

// probation reads the probation keys of [upgrade] into u.
func (p *parser) probation(sec map[string]any, u *UpgradeConfig) error {
	key := func(k string) []string { return []string{"upgrade", k} }
	u.MaxReverts, u.RevertWindow = DefaultMaxReverts, DefaultRevertWindow
	var err error
	if v := sec["probation"]; v != nil {
		if u.Probation, err = p.duration(-1, v, true, key("probation")...); err != nil {
			return err
		}
	}
	if v := sec["max_reverts"]; v != nil {
		if u.MaxReverts, err = p.count(-1, v, 0, key("max_reverts")...); err != nil {
			return err
		}
	}
	if v := sec["revert_window"]; v != nil {
		if u.RevertWindow, err = p.duration(-1, v, false, key("revert_window")...); err != nil {
			return err
		}
	}
	return nil
}

// checkTarget reads the keys of an http or tcp readiness check.
func (p *parser) readinessTarget(sec map[string]any, r *ReadinessConfig, listeners []handoff.ListenerSpec) error {
	var err error
	if r.Target, err = p.target("readiness", sec, r.Check, listeners); err != nil {
		return err
	}
	r.Interval, r.CheckTimeout = DefaultExecInterval, DefaultCheckTimeout
	if v := sec["interval"]; v != nil {
		if r.Interval, err = p.duration(-1, v, false, "readiness", "interval"); err != nil {
			return err
		}
	}
	if v := sec["check_timeout"]; v != nil {
		if r.CheckTimeout, err = p.duration(-1, v, false, "readiness", "check_timeout"); err != nil {
			return err
		}
	}
	return nil
}
