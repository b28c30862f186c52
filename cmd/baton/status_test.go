//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

func TestStatusCmd(t *testing.T) {
	started := time.Now().Add(-65 * time.Second)
	f := &fakeBackend{status: supervisor.Status{
		Service: "web", ConfigPath: "/etc/baton/web.toml", PID: 42, Serving: 2, Candidate: 3,
		Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered"}},
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "serving", Strategy: "blue-green", PID: 1001, PIDs: []int{1001}, Ready: true, Started: started,
				ReadyAfter: 12 * time.Millisecond, Executable: "/srv/app", SHA256: "0123456789abcdef0123", Weight: 100, Share: -1,
				Instances: []supervisor.InstanceStatus{{State: "running", PID: 1001, Ready: true, Routed: true}}},
			{ID: 3, State: "starting", Strategy: "blue-green", Started: started, Restarts: 2, Share: -1,
				Instances: []supervisor.InstanceStatus{{State: "running", Restarts: 2}}},
		},
	}}
	sock := serveFake(t, f)
	var out bytes.Buffer
	if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^service web \(baton pid 42, config /etc/baton/web.toml\)$`,
		`(?m)^listener http +tcp +127\.0\.0\.1:8080 +steered$`,
		`(?m)^upgrade in progress: generation 3 \(blue-green\), starting$`,
		`(?m)^  generation 2: weight 100%, share not known yet$`,
		`(?m)^  generation 3: weight 0%, share not known yet$`,
		`(?m)^ID +STATE +STRATEGY +PID +READY +UPTIME +RESTARTS +EXECUTABLE +SHA256$`,
		`(?m)^2 +serving +blue-green +1001 +12ms +1m5s +0 +/srv/app +0123456789ab$`,
		`(?m)^3 +starting +blue-green +- +no +1m5s +2 +- +-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", re, out.String())
		}
	}
	if strings.Contains(out.String(), "INSTANCE") {
		t.Errorf("an instance table for generations of one instance each:\n%s", out.String())
	}

	out.Reset()
	if err := statusCmd([]string{"--socket", sock, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st control.StatusJSON
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.Service != "web" || len(st.Generations) != 2 || st.Upgrade.Candidate != 3 {
		t.Errorf("--json: %+v, %v", st, err)
	}
}

// canaryStatus is a canary upgrade from generation 2 to 3 at step 2 of 3,
// with two instances per generation.
func canaryStatus(started time.Time) supervisor.Status {
	return supervisor.Status{
		Service: "web", ConfigPath: "/etc/baton/web.toml", PID: 42, Serving: 2, Candidate: 3,
		Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: "steered"}},
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "serving", Strategy: "canary", PIDs: []int{1001, 1002}, Ready: true, Started: started,
				ReadyAfter: 7 * time.Millisecond, Weight: 50, Share: 48.71, Connections: 190,
				Instances: []supervisor.InstanceStatus{
					{Index: 0, State: "running", PID: 1001, Ready: true, ReadyAfter: 5 * time.Millisecond, Routed: true},
					{Index: 1, State: "running", PID: 1002, Ready: true, ReadyAfter: 7 * time.Millisecond, Routed: true, Restarts: 2},
				}},
			{ID: 3, State: "canary", Strategy: "canary", PIDs: []int{1003}, Started: started,
				Weight: 50, Share: 51.29, Connections: 200, Step: 2, Steps: 3, Holding: true, Restarts: 1,
				Instances: []supervisor.InstanceStatus{
					{Index: 0, State: "running", PID: 1003, Ready: true, ReadyAfter: 9 * time.Millisecond, Routed: true,
						Status: "warming up"},
					{Index: 1, State: "running", Restarts: 1, GaveUp: true},
				}},
		},
	}
}

// TestStatusCmdCanary: the upgrade line says the strategy and step, each
// routed generation its weight and share, and the instances get a table of
// their own.
func TestStatusCmdCanary(t *testing.T) {
	started := time.Now().Add(-65 * time.Second)
	sock := serveFake(t, &fakeBackend{status: canaryStatus(started)})
	var out bytes.Buffer
	if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "upgrade in progress: generation 3 (canary), step 2/3 (50%), holding until `baton promote`\n" +
		"  generation 2: weight 50%, share 48.7% of 390 new connections\n" +
		"  generation 3: weight 50%, share 51.3% of 390 new connections\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status lacks\n%s\nin\n%s", want, out.String())
	}
	for _, re := range []string{
		`(?m)^2 +serving +canary +1001,1002 +7ms +1m5s +0 +- +-$`,
		`(?m)^3 +canary +canary +1003 +no +1m5s +1 +- +-$`,
		`(?m)^GENERATION +INSTANCE +STATE +PID +READY +ROUTED +RESTARTS +STATUS$`,
		`(?m)^2 +0 +running +1001 +5ms +yes +0 +-$`,
		`(?m)^2 +1 +running +1002 +7ms +yes +2 +-$`,
		`(?m)^3 +0 +running +1003 +9ms +yes +0 +warming up$`,
		`(?m)^3 +1 +running,gave-up +- +no +no +1 +-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %s in\n%s", re, out.String())
		}
	}
}

// TestUpgradeLine: how far the candidate is, by strategy and step, and its
// share, measured or estimated.
func TestUpgradeLine(t *testing.T) {
	share := func(v float64) *float64 { return &v }
	serving := control.GenerationJSON{ID: 2, State: "serving", Strategy: "canary", Weight: 90}
	tests := []struct {
		name string
		cand control.GenerationJSON
		want string
	}{
		{"canary starting", control.GenerationJSON{Strategy: "canary", State: "starting", Steps: 2},
			"upgrade in progress: generation 3 (canary), starting before step 1/2\n" +
				"  generation 2: weight 90%, share not known yet\n  generation 3: weight 0%, share not known yet\n"},
		{"canary pausing", control.GenerationJSON{Strategy: "canary", State: "canary", Step: 1, Steps: 2, Weight: 10,
			Share: share(9.5), Connections: 19},
			"upgrade in progress: generation 3 (canary), step 1/2 (10%)\n" +
				"  generation 2: weight 90%, share not known yet\n  generation 3: weight 10%, share 9.5% of 19 new connections\n"},
		{"canary past its last step", control.GenerationJSON{Strategy: "canary", State: "canary", Step: 3, Steps: 2, Weight: 50},
			"upgrade in progress: generation 3 (canary), past step 2/2, moving to 100%\n"},
		{"shared mode", control.GenerationJSON{Strategy: "canary", State: "canary", Step: 1, Steps: 2, Weight: 10,
			Share: share(100.0 / 3), ShareEstimated: true},
			"  generation 3: weight 10%, share ~33.3% (by instance count)\n"},
		{"aborting", control.GenerationJSON{Strategy: "canary", State: "canary", Step: 2, Steps: 2, Aborting: "aborted by `baton abort`"},
			"upgrade in progress: generation 3 (canary), being undone: aborted by `baton abort`\n"},
		{"rolling", control.GenerationJSON{Strategy: "rolling", State: "canary", Weight: 50,
			Instances: []control.InstanceJSON{{Routed: true}, {Routed: true}, {}}},
			"upgrade in progress: generation 3 (rolling), 2 new instances routed\n"},
		{"blue-green ready", control.GenerationJSON{Strategy: "blue-green", State: "starting", Ready: true},
			"upgrade in progress: generation 3 (blue-green), starting\n"},
		{"a baton without gradual upgrades", control.GenerationJSON{State: "starting"},
			"upgrade in progress: generation 3\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cand.ID = 3
			st := &control.StatusJSON{Serving: 2, Upgrade: &control.UpgradeJSON{Candidate: 3},
				Generations: []control.GenerationJSON{serving, tt.cand}}
			var out bytes.Buffer
			printStatus(&out, st, time.Now())
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("got\n%s\nwant it to contain\n%s", out.String(), tt.want)
			}
		})
	}
}

// TestStatusProbation: the failed state right below the service line, the
// probation with its end and its standby, the standby's row, and a revert
// that starts the replaced generation again.
func TestStatusProbation(t *testing.T) {
	now := time.Date(2025, 1, 2, 12, 0, 0, 0, time.UTC)
	failed := "3 reverts within 1h0m0s; the last: generation 5: instance 0 crashed during probation: exit status 2"
	gens := []control.GenerationJSON{
		{ID: 2, State: "standby", Strategy: "blue-green", PIDs: []int{1002}, Ready: true, Started: "2025-01-02T11:00:00Z"},
		{ID: 3, State: "serving", Strategy: "blue-green", PIDs: []int{1003}, Ready: true, Started: "2025-01-02T11:59:00Z", Weight: 100},
	}
	tests := []struct {
		name string
		st   control.StatusJSON
		want []string // regexps
		not  []string
	}{
		{"on probation with a standby",
			control.StatusJSON{Serving: 3, Probation: 3, ProbationEnd: "2025-01-02T12:04:05.5Z", Standby: 2, Generations: gens},
			[]string{`(?m)^generation 3 on probation until 12:04:05 \(standby: generation 2\)$`, `(?m)^2 +standby +blue-green +1002 `},
			[]string{"FAILED"}},
		{"on probation without a standby",
			control.StatusJSON{Serving: 3, Probation: 3, ProbationEnd: "2025-01-02T12:04:05Z", Generations: gens[1:]},
			[]string{`(?m)^generation 3 on probation until 12:04:05 \(no standby: a revert starts the replaced generation again\)$`},
			nil},
		{"probation ending another day",
			control.StatusJSON{Serving: 3, Probation: 3, ProbationEnd: "2025-01-03T00:00:30Z", Standby: 2, Generations: gens},
			[]string{`(?m)^generation 3 on probation until 2025-01-03 00:00:30 \(standby: generation 2\)$`},
			nil},
		// Generation 3 was reverted without a standby: generation 2's
		// config and executable start again as generation 4, while 3
		// serves.
		{"revert without a standby",
			control.StatusJSON{Serving: 3, Upgrade: &control.UpgradeJSON{Candidate: 4}, Generations: append(gens[1:2:2],
				control.GenerationJSON{ID: 4, State: "starting", Strategy: "blue-green", PIDs: []int{1004}, Started: "2025-01-02T12:00:00Z", RevertOf: 3})},
			[]string{`(?m)^revert in progress: generation 4 \(reverting generation 3\), starting$`,
				`(?m)^  generation 3: weight 100%, share not known yet$`},
			[]string{"upgrade in progress", "blue-green), starting"}},
		{"failed state",
			control.StatusJSON{Service: "web", BatonPID: 42, Config: "/etc/baton/web.toml", Serving: 3, Failed: failed, Generations: gens[1:]},
			[]string{`\Aservice web \(baton pid 42, config /etc/baton/web.toml\)\nFAILED: ` + regexp.QuoteMeta(failed) +
				"; `baton upgrade --force` to try again\n"},
			[]string{"on probation until"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, &tt.st, now)
			for _, re := range tt.want {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("no match for %s in\n%s", re, out.String())
				}
			}
			for _, s := range tt.not {
				if strings.Contains(out.String(), s) {
					t.Errorf("%q in\n%s", s, out.String())
				}
			}
		})
	}
}

// TestStatusCmdProbation: the probation, standby and failed state come
// through the control socket, and --json keeps their fields.
func TestStatusCmdProbation(t *testing.T) {
	end := time.Now().Add(4 * time.Minute)
	f := &fakeBackend{status: supervisor.Status{
		Service: "web", PID: 42, Serving: 3, Probation: 3, ProbationEnd: end, Standby: 2, Failed: "2 reverts within 1h0m0s",
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "standby", Strategy: "blue-green", PIDs: []int{1002}, Ready: true, Share: -1},
			{ID: 3, State: "serving", Strategy: "blue-green", PIDs: []int{1003}, Ready: true, Weight: 100, Share: -1},
		},
	}}
	sock := serveFake(t, f)
	var out bytes.Buffer
	if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := []string{"\nFAILED: 2 reverts within 1h0m0s; `baton upgrade --force` to try again\n"}
	if end.Day() == time.Now().Day() { // else the test runs at midnight, and the date is in the line
		want = append(want, "\ngeneration 3 on probation until "+end.Format(time.TimeOnly)+" (standby: generation 2)\n")
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	if err := statusCmd([]string{"--socket", sock, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st control.StatusJSON
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.Probation != 3 || st.Standby != 2 || st.Failed == "" || st.ProbationEnd == "" {
		t.Errorf("--json: %+v, %v", st, err)
	}
}
