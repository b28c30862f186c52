package supervisor

// The config file is decoded in stages, each of which can only see errors
// the previous ones have ruled out:
//
//  1. scanKeyLines (config_lines.go) finds the line of each key, which the
//     toml package keeps to itself, and refuses nesting deeper than
//     maxNesting before the toml package sees it.
//  2. toml.Decode into a generic tree: TOML syntax (toml.ParseError, which
//     carries the line and column).
//  3. The shape of the tree: sections are tables, [[listener]] an array of
//     tables.
//  4. Every key of the file (MetaData.Keys) is in configKeys, spelled
//     exactly. A tree leaves nothing undecoded, so this is the strictness
//     check: it finds all unknown keys, and, unlike decoding into a struct,
//     refuses a key written in another case ("Timeout" for timeout).
//  5. Each value is type-checked, range-checked and converted
//     (config_values.go, config_listeners.go).
//
// The text is decoded once; parsing is linear in its size.

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// configKeys is the config format: each section and its keys. The value
// checks read exactly these keys.
var configKeys = map[string][]string{
	"service":   {"name", "command", "directory", "environment", "user", "group", "supplementary_groups", "no_new_privs", "instances"},
	"listener":  {"name", "address", "network", "mode", "private"},
	"readiness": {"check", "timeout", "command", "interval", "delay", "listener", "path", "host", "body", "check_timeout"},
	"upgrade":   {"steering", "strategy", "steps", "probation", "max_reverts", "revert_window"},
	"health": {"check", "listener", "path", "host", "body", "command", "interval", "timeout",
		"success_threshold", "failure_threshold", "initial_delay", "watchdog"},
	"analysis": {"listener", "interval", "measurements", "failure_limit", "rules", "min_requests", "min_checks",
		"metrics_path", "error_metric", "error_label", "error_match", "max_crashes",
		"max_error_ratio_factor", "max_error_ratio_margin", "max_probe_failure_ratio_factor",
		"max_probe_failure_ratio_margin", "max_latency_p99_factor", "max_latency_p99_margin",
		"max_rss_factor", "max_rss_margin", "max_cpu_factor", "max_cpu_margin"},
	"hooks":   {"pre_start", "post_promote", "post_revert", "timeout"},
	"flags":   {}, // flag names are free; each flag's keys are flagKeys
	"drain":   {"signal", "timeout", "grace"},
	"restart": {"max_tries", "backoff", "max_backoff", "reset_after"},
	"control": {"socket", "group"},
	"log":     {"format"},
	"metrics": {"address"},
}

// stepKeys are the keys of each of [upgrade] steps.
var stepKeys = []string{"weight", "pause"}

// parser turns the decoded file into a Config, with errors located in it.
type parser struct {
	file  string
	lines *keyLines
}

// decodeConfig is ParseConfig for text no larger than maxConfigSize.
func decodeConfig(file, text string) (*Config, error) {
	p := &parser{file: file, lines: scanKeyLines(text)}
	if p.lines.tooDeep > 0 {
		return nil, &ConfigError{File: file, Line: p.lines.tooDeep, Err: errTooDeep}
	}
	var tree map[string]any
	md, err := toml.Decode(text, &tree)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: file, Line: pe.Position.Line, Key: displayDotted(pe.LastKey), Err: &syntaxError{pe}}
		}
		return nil, &ConfigError{File: file, Err: err}
	}
	s, err := p.sections(tree)
	if err != nil {
		return nil, err
	}
	if err := p.checkUnknown(&md); err != nil {
		return nil, err
	}
	return p.config(s)
}

// configSections is the decoded file with its shape checked. A section the
// file leaves out is nil.
type configSections struct {
	service, readiness, upgrade, drain, restart map[string]any
	health, analysis, hooks, flags              map[string]any
	control, log, metrics                       map[string]any
	environment                                 map[string]any // [service] environment
	listeners                                   []map[string]any
}

// sections checks the shape of the tree, which toml.Decode does not know.
func (p *parser) sections(tree map[string]any) (*configSections, error) {
	var s configSections
	for _, sec := range []struct {
		name  string
		table *map[string]any
	}{
		{"service", &s.service},
		{"readiness", &s.readiness},
		{"upgrade", &s.upgrade},
		{"health", &s.health},
		{"analysis", &s.analysis},
		{"hooks", &s.hooks},
		{"flags", &s.flags},
		{"drain", &s.drain},
		{"restart", &s.restart},
		{"control", &s.control},
		{"log", &s.log},
		{"metrics", &s.metrics},
	} {
		v, ok := tree[sec.name]
		if !ok {
			continue
		}
		if *sec.table, ok = v.(map[string]any); !ok {
			return nil, p.errorf(-1, []string{sec.name}, "must be a table: write [%s] on a line of its own with its keys below it, not %s", sec.name, describe(v))
		}
	}
	if v, ok := s.service["environment"]; ok {
		if s.environment, ok = v.(map[string]any); !ok {
			return nil, p.errorf(-1, []string{"service", "environment"}, `must be a table such as { GREETING = "hello" }, not %s`, describe(v))
		}
	}
	if v, ok := tree["listener"]; ok {
		if s.listeners, ok = tables(v); !ok {
			return nil, p.errorf(-1, []string{"listener"}, "must be an array of tables: write [[listener]] above each listener's keys, not %s", describe(v))
		}
	}
	return &s, nil
}

// tables is v as an array of tables, written either as [[name]] sections or
// as an array of inline tables.
func tables(v any) ([]map[string]any, bool) {
	switch v := v.(type) {
	case []map[string]any:
		return v, true
	case []any:
		ts := make([]map[string]any, len(v))
		for i, e := range v {
			t, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			ts[i] = t
		}
		return ts, true
	}
	return nil, false
}

// checkUnknown refuses the keys the format does not have, listing all of
// them; a key under an unknown one is not listed again.
func (p *parser) checkUnknown(md *toml.MetaData) error {
	var (
		first     toml.Key
		firstLine int
		more      []string
		reported  = make(map[string]bool) // unknown keys listed so far
		seen      = make(map[string]int)  // key → occurrences so far, for arrays of tables
	)
	for _, k := range md.Keys() {
		s := k.String()
		n := seen[s]
		seen[s]++
		if knownKey(k) || underAny(k, reported) {
			continue
		}
		reported[s] = true
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
	case k[0] == "flags":
		return len(k) == 2 || (len(k) == 3 && slices.Contains(flagKeys, k[2]))
	case !slices.Contains(names, k[1]):
		return false
	case len(k) == 2:
		return true
	case k[0] == "upgrade" && k[1] == "steps":
		return len(k) == 3 && slices.Contains(stepKeys, k[2])
	default:
		// Variable names are free-form; a table as a value is refused as a
		// wrong type.
		return k[0] == "service" && k[1] == "environment"
	}
}

// underAny reports whether a key that k is under is in keys. Keys are at
// most maxNesting parts long, so this is a few map lookups.
func underAny(k toml.Key, keys map[string]bool) bool {
	for n := 1; n < len(k); n++ {
		if keys[k[:n].String()] {
			return true
		}
	}
	return false
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
		// Strings whose lengths differ by more than 2 are further apart
		// than that; checking first keeps a long key cheap.
		if abs(len(c)-len(bad)) <= 2 && editDistance(c, bad) <= 2 {
			return fmt.Sprintf("did you mean %q?", c)
		}
	}
	if len(k) == 2 {
		return fmt.Sprintf("%s has %s", displayKey(k[:1]), strings.Join(candidates, ", "))
	}
	return ""
}

func abs(n int) int { return max(n, -n) }

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

// config checks and converts each section.
func (p *parser) config(s *configSections) (*Config, error) {
	c := &Config{Path: p.file}
	var err error
	if c.Service, err = p.service(s.service, s.environment); err != nil {
		return nil, err
	}
	if c.Listeners, err = p.listeners(s.listeners); err != nil {
		return nil, err
	}
	if c.Readiness, err = p.readiness(s.readiness, c.Listeners); err != nil {
		return nil, err
	}
	if c.Upgrade, err = p.upgrade(s.upgrade); err != nil {
		return nil, err
	}
	if err := p.probation(s.upgrade, &c.Upgrade); err != nil {
		return nil, err
	}
	if c.Health, err = p.health(s.health, c.Listeners); err != nil {
		return nil, err
	}
	if c.Analysis, err = p.analysis(s.analysis, c.Listeners); err != nil {
		return nil, err
	}
	if c.Hooks, err = p.hooks(s.hooks); err != nil {
		return nil, err
	}
	if c.Flags, err = p.flags(s.flags); err != nil {
		return nil, err
	}
	for _, f := range c.Flags {
		if f.OffOn == "analysis" && !c.Analysis.Enabled {
			return nil, p.errorf(-1, []string{"flags", f.Name, "off_on"}, "\"analysis\" needs an [analysis] section, which says how the service is judged")
		}
	}
	if c.Drain, err = p.drain(s.drain); err != nil {
		return nil, err
	}
	if c.Restart, err = p.restart(s.restart); err != nil {
		return nil, err
	}
	if c.Service.Name, err = p.serviceName(s.service); err != nil {
		return nil, err
	}
	if c.Control, err = p.control(s.control, c.Service.Name); err != nil {
		return nil, err
	}
	if c.Log.Format, err = p.oneOf(-1, s.log["format"], "text", []string{"text", "json"}, "log", "format"); err != nil {
		return nil, err
	}
	if c.Metrics.Address, err = p.metricsAddress(s.metrics); err != nil {
		return nil, err
	}
	return c, nil
}

// errAt is an error for key path, in listener elem (-1 outside listeners).
func (p *parser) errAt(elem int, path []string, err error) error {
	return &ConfigError{File: p.file, Line: p.lines.line(elem, path...), Key: displayKey(path), Err: err}
}

func (p *parser) errorf(elem int, path []string, format string, args ...any) error {
	return p.errAt(elem, path, fmt.Errorf(format, args...))
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
