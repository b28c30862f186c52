//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

// flagBackend is a fakeBackend whose flags change as asked, and that
// refuses a flag it does not declare as the supervisor does.
func flagBackend(t *testing.T) (sock string, asked <-chan string) {
	t.Helper()
	changed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	f := &fakeBackend{flags: []supervisor.FlagStatus{
		{Name: "new_checkout", Percent: 100, Default: 100, Changed: changed, By: "config"},
		{Name: "search_v2", Percent: 0, Description: "the new search backend", Changed: changed, By: "config"},
		{Name: "shout", Percent: 0, Default: 100, Set: true, OffOn: "analysis", Changed: changed, By: "analysis"},
		{Name: "zz_legacy", Percent: 0, Changed: changed, By: "operator"}, // reset
	}}
	ch := make(chan string, 10)
	f.setFlag = func(name string, percent int, reset bool) error { // called with f.mu held
		for i := range f.flags {
			if fl := &f.flags[i]; fl.Name == name {
				if reset {
					percent = fl.Default
				}
				ch <- fmt.Sprintf("%s %d reset=%v", name, percent, reset)
				fl.Percent, fl.Set, fl.By = percent, !reset, "operator"
				return nil
			}
		}
		ch <- "unknown " + name
		return fmt.Errorf("%w %q (declared: new_checkout, search_v2, shout)", supervisor.ErrUnknownFlag, name)
	}
	return serveFake(t, f), ch
}

func TestFlagList(t *testing.T) {
	sock, _ := flagBackend(t)
	var out bytes.Buffer
	if err := run([]string{"flag", "list", "--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^flags file /run/baton/web\.flags\.json, version 7$`,
		`(?m)^NAME +VALUE +DEFAULT +SET-BY +CHANGED +DESCRIPTION$`,
		`(?m)^new_checkout +on +on +config +2025-01-02 03:04:05 +-$`,
		`(?m)^search_v2 +off +off +config +2025-01-02 03:04:05 +the new search backend$`,
		`(?m)^shout +off +on +analysis +2025-01-02 03:04:05 +\(turned off if the analysis fails while it is on\)$`,
		`(?m)^zz_legacy +off +off +operator \(reset\) +2025-01-02 03:04:05 +-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", re, out.String())
		}
	}

	out.Reset()
	if err := run([]string{"flag", "list", "--json", "--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var fl control.FlagsJSON
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fl); err != nil || fl.Version != 7 || len(fl.Flags) != 4 || fl.Flags[2].OffOn != "analysis" {
		t.Errorf("--json: %+v, %v", fl, err)
	}
}

func TestFlagListNone(t *testing.T) {
	sock := serveFake(t, &fakeBackend{})
	var out bytes.Buffer
	if err := run([]string{"flag", "list", "--socket", sock}, &out, io.Discard); err != nil ||
		out.String() != "no feature flags: the config declares none ([flags])\n" {
		t.Errorf("%v, %q", err, out.String())
	}
}

// TestFlagSetReset: each form of a value reaches the supervisor as its
// percent; the answer says what the flag is now. Flags may come anywhere.
func TestFlagSetReset(t *testing.T) {
	sock, asked := flagBackend(t)
	for _, tt := range []struct {
		args       []string
		asked, out string
	}{
		{[]string{"set", "search_v2", "10"}, "search_v2 10 reset=false", "flag search_v2 is now 10% (default off)\n"},
		{[]string{"set", "search_v2", "25%"}, "search_v2 25 reset=false", "flag search_v2 is now 25% (default off)\n"},
		{[]string{"set", "search_v2", "on"}, "search_v2 100 reset=false", "flag search_v2 is now on (default off)\n"},
		{[]string{"set", "search_v2", "OFF"}, "search_v2 0 reset=false", "flag search_v2 is now off (default off)\n"},
		{[]string{"set", "search_v2", "0%"}, "search_v2 0 reset=false", "flag search_v2 is now off (default off)\n"},
		{[]string{"set", "shout", "100"}, "shout 100 reset=false", "flag shout is now on (default on)\n"},
		{[]string{"reset", "shout"}, "shout 100 reset=true", "flag shout is back to its default: on\n"},
	} {
		for _, args := range [][]string{
			append(append([]string{"flag"}, tt.args...), "--socket", sock),
			append([]string{"flag", tt.args[0], "--socket", sock}, tt.args[1:]...),
		} {
			var out bytes.Buffer
			if err := run(args, &out, io.Discard); err != nil || out.String() != tt.out {
				t.Errorf("%q: %v, %q; want %q", args, err, out.String(), tt.out)
				continue
			}
			if got := <-asked; got != tt.asked { // buffered: asked before the answer came
				t.Errorf("%q: the supervisor was asked %q, want %q", args, got, tt.asked)
			}
		}
	}
}

// TestFlagRefused: an undeclared flag is refused by the supervisor: exit
// 1, the declared ones named.
func TestFlagRefused(t *testing.T) {
	sock, asked := flagBackend(t)
	for _, args := range [][]string{{"set", "serch_v2", "on"}, {"reset", "serch_v2"}} {
		var out bytes.Buffer
		err := run(append(append([]string{"flag"}, args...), "--socket", sock), &out, io.Discard)
		var ue usageError
		want := "flag " + args[0] + ` failed: no such flag "serch_v2" (declared: new_checkout, search_v2, shout)`
		if err == nil || errors.As(err, &ue) || err.Error() != want {
			t.Errorf("%q: %v, want a plain error (exit 1): %s", args, err, want)
		}
		if !errors.Is(err, errDecided) || out.Len() != 0 {
			t.Errorf("%q: %v, printed %q", args, err, out.String())
		}
		if got := <-asked; got != "unknown serch_v2" {
			t.Errorf("asked %q", got)
		}
	}
}

// TestFlagUsage: what is not a request is exit 2, and never reaches the
// supervisor; so is a name the protocol refuses.
func TestFlagUsage(t *testing.T) {
	sock, asked := flagBackend(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "flag: want `flag list [--json]`, `flag set NAME on|off|PERCENT` or `flag reset NAME`"},
		{[]string{"get", "x"}, `; not "get"`},
		{[]string{"set", "--socket", sock}, "flag set: NAME is required"},
		{[]string{"set", "search_v2", "--socket", sock}, "flag set: a value (on, off or a percent) is required"},
		{[]string{"set", "search_v2", "10", "11", "--socket", sock}, `flag set: unexpected argument "11"`},
		{[]string{"reset", "--socket", sock}, "flag reset: NAME is required"},
		{[]string{"reset", "a", "b", "--socket", sock}, `flag reset: unexpected argument "b"`},
		{[]string{"list", "x", "--socket", sock}, `flag list: unexpected argument "x"`},
		{[]string{"set", "--json", "x", "on", "--socket", sock}, "flag provided but not defined: -json"},
		{[]string{"set", "search_v2", "101", "--socket", sock}, `flag set: value "101": want on, off, or a whole percent from 0 to 100 (10 or 10%)`},
		{[]string{"set", "search_v2", "-1", "--socket", sock}, "flag provided but not defined: -1"},
		{[]string{"set", "search_v2", "--", "-1", "--socket", sock}, `flag set: unexpected argument "--socket"`},
		{[]string{"set", "search_v2", "--", "-5", "-c", "x"}, `flag set: unexpected argument "-c"`},
		{[]string{"set", "search_v2", "10.5", "--socket", sock}, `value "10.5"`},
		{[]string{"set", "search_v2", "yes", "--socket", sock}, `value "yes"`},
		{[]string{"set", "search_v2", "10"}, "flag set: -c FILE or --socket PATH is required"},
		{[]string{"set", "search v2", "on", "--socket", sock}, `flag set: baton answered: invalid flag name "search v2"`},
	} {
		err := run(append([]string{"flag"}, tt.args...), io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
	select {
	case got := <-asked:
		t.Errorf("the supervisor was asked %q", got)
	default:
	}
}

func TestParseFlagValue(t *testing.T) {
	for in, want := range map[string]int{"on": 100, "On": 100, "off": 0, "0": 0, "100": 100, "10": 10, "10%": 10, "0%": 0, "100%": 100} {
		if got, err := parseFlagValue(in); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "%", "101", "-1", "10%%", "1e1", "ten", " 10", "true"} {
		if got, err := parseFlagValue(in); err == nil {
			t.Errorf("%q: %d, want an error", in, got)
		}
	}
}
