package supervisor

// The checks of [flags]: feature flags baton serves to the service.

import (
	"sort"
	"strings"
)

// FlagConfig is one feature flag declared in [flags].
type FlagConfig struct {
	Name string
	// Percent is the flag's default: 0 (off), 100 (on), or the percent of
	// keys it is on for.
	Percent     int
	Description string
	// OffOn names the condition that turns the flag off by itself:
	// "analysis" (the analysis of the serving generation fails while the
	// flag is on), or "" for none.
	OffOn string
}

// flagKeys are the keys of a flag's table.
var flagKeys = []string{"default", "percent", "description", "off_on"}

// flags checks [flags]: each key is a flag's name, its value a table such
// as { default = false }, { percent = 10 } or { default = true,
// description = "...", off_on = "analysis" }.
func (p *parser) flags(sec map[string]any) ([]FlagConfig, error) {
	if len(sec) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(sec))
	for name := range sec {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]FlagConfig, 0, len(names))
	for _, name := range names {
		key := func(k ...string) []string { return append([]string{"flags", name}, k...) }
		t, ok := sec[name].(map[string]any)
		if !ok {
			return nil, p.errorf(-1, key(), "must be a table such as { default = false } or { percent = 10 }, not %s", describe(sec[name]))
		}
		if err := checkFlagName(name); err != nil {
			return nil, p.errorf(-1, key(), "%v", err)
		}
		f := FlagConfig{Name: name}
		switch {
		case t["default"] != nil && t["percent"] != nil:
			return nil, p.errorf(-1, key("percent"), "give either default (on or off) or percent, not both")
		case t["default"] != nil:
			b, ok := t["default"].(bool)
			if !ok {
				return nil, p.errorf(-1, key("default"), "must be true or false, not %s", describe(t["default"]))
			}
			if b {
				f.Percent = 100
			}
		case t["percent"] != nil:
			n, ok := t["percent"].(int64)
			if !ok || n < 0 || n > 100 {
				return nil, p.errorf(-1, key("percent"), "must be a whole number of percent, 0 to 100, not %s", describe(t["percent"]))
			}
			f.Percent = int(n)
		}
		if v := t["description"]; v != nil {
			s, err := p.str(-1, v, key("description")...)
			if err != nil {
				return nil, err
			}
			f.Description = s
		}
		if v := t["off_on"]; v != nil {
			s, err := p.oneOf(-1, v, "", []string{"analysis"}, key("off_on")...)
			if err != nil {
				return nil, err
			}
			f.OffOn = s
		}
		out = append(out, f)
	}
	return out, nil
}

// checkFlagName keeps flag names to what every language and shell can
// carry: letters, digits, '_', '-' and '.'.
func checkFlagName(name string) error {
	if name == "" || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != "" {
		return errBadFlagName
	}
	return nil
}

var errBadFlagName = errorString("a flag's name is 1 to 64 letters, digits, '_', '-' or '.'")

type errorString string

func (e errorString) Error() string { return string(e) }
