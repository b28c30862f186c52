//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// TestProbationAgainstSupervisor drives probation through the CLI against
// a real supervisor (in this process, the hello example as its service),
// with traffic: an upgrade that passes its probation; one whose process is
// killed during probation, which `upgrade --wait` reports as a revert
// (exit 1) and which, with max_reverts = 0, puts the service in the failed
// state that `status` shows and that refuses the next upgrade (exit 1)
// until `upgrade --force`.
func TestProbationAgainstSupervisor(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	cfgPath := filepath.Join(dir, "probation.toml")
	writeConfig := func(version, probation string) {
		t.Helper()
		content := fmt.Sprintf(`[service]
command = [%q]
environment = { GREETING_VERSION = %q }

[[listener]]
name = "http"
address = "127.0.0.1:0"

[readiness]
timeout = "10s"

[upgrade]
probation = %q
max_reverts = 0

[control]
socket = %q
`, helloBin, version, probation, sock)
		if err := os.WriteFile(cfgPath, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("1", "1s")
	runInProcess(t, cfgPath)

	status := func() control.StatusJSON { t.Helper(); return statusJSON(t, sock) }
	until := func(what string, ok func(control.StatusJSON) bool) control.StatusJSON {
		t.Helper()
		return waitStatus(t, sock, what, ok)
	}
	text := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := statusCmd([]string{"--socket", sock}, &out, io.Discard); err != nil {
			t.Fatalf("status: %v", err)
		}
		return out.String()
	}
	st := until("generation 1 ready", func(st control.StatusJSON) bool {
		return st.Serving == 1 && len(st.Generations) == 1 && st.Generations[0].Ready
	})
	steered := st.Listeners[0].Mode == supervisor.ModeSteered
	url := "http://" + st.Listeners[0].Address + "/"
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	get := func() string {
		t.Helper()
		gen, err := loadgen.Get(context.Background(), hc, url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		return gen
	}

	// Passed: the wait lasts until the probation's end.
	writeConfig("2", "1s")
	var out bytes.Buffer
	if err := upgradeCmd([]string{"--socket", sock, "--wait", "--timeout", "60s"}, &out, io.Discard); err != nil {
		t.Fatalf("upgrade --wait: %v\n%s", err, out.String())
	}
	t.Logf("upgrade --wait printed:\n%s", out.String())
	for _, re := range []string{
		`(?m)^generation 2: promoted, replacing generation 1\ngeneration 2: probation passed \(1s\)$`,
		`(?m)^generation 1: retired\nupgrade complete: generation 2 serving\n\z`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("upgrade --wait printed no match for %s", re)
		}
	}
	if st := status(); st.Serving != 2 || st.Probation != 0 || st.Standby != 0 || st.Failed != "" {
		t.Errorf("after the probation: %+v", st)
	}

	// Reverted: generation 3 is killed during its probation.
	writeConfig("3", "1m")
	type result struct {
		out string
		err error
	}
	upgraded := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		err := upgradeCmd([]string{"--socket", sock, "--wait", "--timeout", "60s"}, &out, io.Discard)
		upgraded <- result{out.String(), err}
	}()
	st = until("generation 3 on probation", func(st control.StatusJSON) bool { return st.Probation == 3 })
	if steered && st.Standby != 2 {
		t.Errorf("steered: standby %d, want generation 2", st.Standby)
	}
	if s := text(); !strings.Contains(s, "\ngeneration 3 on probation until ") ||
		(steered && !regexp.MustCompile(`(?m)^2 +standby `).MatchString(s)) {
		t.Errorf("status during probation:\n%s", s)
	}
	if gen := get(); gen != "3" {
		t.Errorf("GET during probation: generation %s, want 3", gen)
	}
	var victim int
	for _, g := range st.Generations {
		if g.ID == 3 && len(g.PIDs) > 0 {
			victim = g.PIDs[0]
		}
	}
	if victim == 0 {
		t.Fatalf("no process of generation 3: %+v", st)
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := within(t, upgraded, 30*time.Second, "upgrade --wait after the kill")
	t.Logf("upgrade --wait printed:\n%s", r.out)
	var ue usageError
	if r.err == nil || errors.As(r.err, &ue) ||
		!strings.HasPrefix(r.err.Error(), "upgrade failed: generation 3 reverted during probation: instance 0 crashed during probation: ") {
		t.Errorf("upgrade --wait of a version killed during probation: %v, want a plain error (exit 1)", r.err)
	}
	if !regexp.MustCompile(`(?m)^generation 3: reverted \(crash\): instance 0 crashed during probation: .+ \(back to generation 2\)$`).MatchString(r.out) {
		t.Errorf("upgrade --wait printed no revert line")
	}

	// The failed state: shown, and refusing upgrades until one is forced.
	st = until("the failed state, and a ready serving generation", func(st control.StatusJSON) bool {
		for _, g := range st.Generations {
			if g.ID == st.Serving && g.Ready && g.State == "serving" {
				return st.Failed != "" && st.Serving != 3
			}
		}
		return false
	})
	if steered && st.Serving != 2 {
		t.Errorf("steered: generation %d serves after the revert, want the standby, 2", st.Serving)
	}
	if gen := get(); gen == "3" {
		t.Error("GET after the revert: answered by generation 3")
	}
	if s := text(); !regexp.MustCompile("(?m)^FAILED: 1 reverts within 1h0m0s; the last: generation 3: instance 0 crashed during probation: .+; `baton upgrade --force` to try again$").MatchString(s) {
		t.Errorf("status in the failed state:\n%s", s)
	}
	writeConfig("4", "1s")
	err := upgradeCmd([]string{"--socket", sock}, io.Discard, io.Discard)
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "upgrade failed: "+supervisor.ErrFailedState.Error()+" (") {
		t.Errorf("upgrade in the failed state: %v, want a refusal (exit 1)", err)
	}
	out.Reset()
	if err := upgradeCmd([]string{"--socket", sock, "--force", "--wait", "--timeout", "60s"}, &out, io.Discard); err != nil {
		t.Fatalf("upgrade --force --wait: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), ": probation passed (1s)\n") {
		t.Errorf("upgrade --force --wait printed\n%s", out.String())
	}
	if st := status(); st.Failed != "" {
		t.Errorf("failed state after a forced upgrade: %q", st.Failed)
	}
	if gen := get(); gen != fmt.Sprint(status().Serving) {
		t.Errorf("GET after the forced upgrade: generation %s, want %d", gen, status().Serving)
	}
}
