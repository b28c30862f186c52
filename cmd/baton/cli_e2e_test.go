//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/loadgen"
)

// TestCLIEndToEnd drives a real `baton run` with the real CLI, as a deploy
// script would: status (table and JSON), upgrade --wait for a good and a
// failing version (exit 0 and 1), rollback --wait, and stop, with load
// flowing and no request failing.
func TestCLIEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	addr := b.waitLog("listener ready")["address"].(string)
	b.waitLog("process ready")
	url := "http://" + addr
	load := loadgen.Run(context.Background(), loadgen.Options{URL: url, Clients: 8, SlowEvery: 10, SlowMS: 100})
	defer load.Stop()

	// status, human and JSON.
	out, code := runBaton(t, "status", "-c", cfg)
	if code != 0 || !strings.Contains(out, "serving") || !strings.Contains(out, addr) {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	out, code = runBaton(t, "status", "--json", "--socket", filepath.Join(dir, "control.sock"))
	var st struct {
		Service     string `json:"service"`
		Serving     int    `json:"serving"`
		Generations []struct {
			ID         int    `json:"id"`
			State      string `json:"state"`
			PIDs       []int  `json:"pids"`
			Executable string `json:"executable"`
			SHA256     string `json:"sha256"`
		} `json:"generations"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	if st.Service != "baton" || st.Serving != 1 || len(st.Generations) != 1 || st.Generations[0].Executable != helloBin ||
		len(st.Generations[0].SHA256) != 64 || len(st.Generations[0].PIDs) != 1 {
		t.Errorf("status --json: %+v", st)
	}

	// A good upgrade: exit 0, every step shown.
	writeHelloConfig(t, dir, "2", "")
	out, code = runBaton(t, "upgrade", "--wait", "-c", cfg)
	for _, want := range []string{"generation 2: spawned", "generation 2: ready", "generation 2: promoted",
		"generation 1: draining", "generation 1: retired", "upgrade complete: generation 2 serving"} {
		if !strings.Contains(out, want) {
			t.Errorf("upgrade --wait output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("good upgrade --wait: exit %d, want 0\n%s", code, out)
	}

	// A version that exits at once: exit 1, the old one keeps serving.
	writeHelloConfig(t, dir, "3", "")
	content, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(content), fmt.Sprintf("%q", helloBin), `"/bin/false"`, 1)), 0o644)
	out, code = runBaton(t, "upgrade", "--wait", "-c", cfg)
	if code != 1 || !strings.Contains(out, "upgrade failed") {
		t.Errorf("failing upgrade --wait: exit %d, want 1\n%s", code, out)
	}

	// Rollback to generation 1's config (version 1).
	writeHelloConfig(t, dir, "2", "")
	out, code = runBaton(t, "rollback", "--wait", "-c", cfg)
	if code != 0 {
		t.Errorf("rollback --wait: exit %d\n%s", code, out)
	}
	if _, err := loadgen.WaitFor(context.Background(), url, func(b string) bool {
		return strings.Contains(b, "(version 1)")
	}, 10*time.Second); err != nil {
		t.Errorf("after rollback: %v", err)
	}
	res := load.Stop()
	if res.Failed != 0 || res.Sent == 0 {
		t.Errorf("sent %d, failed %d: %v", res.Sent, res.Failed, res.Errors)
	}

	// stop: exit 0, baton drains and exits 0, the socket file goes.
	if out, code = runBaton(t, "stop", "-c", cfg); code != 0 {
		t.Errorf("stop: exit %d\n%s", code, out)
	}
	if code := b.wait(); code != 0 {
		t.Errorf("baton exited %d after stop, want 0", code)
	}
	for _, f := range []string{"control.sock", "control.pid"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	// Nothing to talk to any more: exit 2.
	if out, code = runBaton(t, "status", "-c", cfg); code != 2 {
		t.Errorf("status with baton gone: exit %d, want 2\n%s", code, out)
	}
}

// TestSecondBatonRefused: a second baton for the same control socket
// refuses to start, and the first one goes on serving.
func TestSecondBatonRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", "")
	b := startBaton(t, cfg)
	b.waitLog("process ready")
	out, code := runBaton(t, "run", "-c", cfg)
	if code != 1 || !strings.Contains(out, "another baton") {
		t.Errorf("second baton: exit %d, want 1 and 'another baton'\n%s", code, out)
	}
	if out, code := runBaton(t, "status", "-c", cfg); code != 0 {
		t.Errorf("first baton no longer answers: exit %d\n%s", code, out)
	}
}

// TestMetricsEndpoint: [metrics] address serves the documented metrics.
func TestMetricsEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", fmt.Sprintf("\n[metrics]\naddress = %q\n", maddr))
	b := startBaton(t, cfg)
	addr := b.addr(t)
	b.waitLog("process ready")
	writeHelloConfig(t, dir, "2", fmt.Sprintf("\n[metrics]\naddress = %q\n", maddr))
	if out, code := runBaton(t, "upgrade", "--wait", "-c", cfg); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", code, out)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`baton_upgrades_total{result="promoted"} 1`, `baton_upgrades_total{result="failed"} 0`,
		`baton_reverts_total{cause="rollback",reason="manual"} 0`, `baton_reverts_total{cause="crash",reason="probation"} 0`,
		"baton_restarts_total 0", "baton_serving_generation 2",
		"baton_readiness_seconds_count 2", "baton_drain_seconds_count 1",
		`baton_generations{state="serving"} 1`, `baton_listener_info{address="` + addr + `"`,
		`baton_generation_resident_memory_bytes{generation="2",state="serving"}`,
		`baton_generation_cpu_seconds_total{generation="2",state="serving"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// TestFeatureFlagsEndToEnd: `baton flag` flips a flag of a real service
// with traffic flowing and no process started: the service reads it from
// its flags file. An undeclared flag is refused (exit 1, naming the
// declared ones), a value out of range is a usage error (exit 2), and the
// metrics show the value and the change.
func TestFeatureFlagsEndToEnd(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := writeHelloConfig(t, dir, "1", fmt.Sprintf(`
[flags]
shout = { default = false, description = "greet loudly" }

[metrics]
address = %q
`, maddr))
	b := startBaton(t, cfg)
	base := "http://" + b.addr(t)
	url := base + "/?user=alice"
	pid := b.waitLog("process ready")["pid"]
	load := loadgen.Run(context.Background(), loadgen.Options{URL: base, Clients: 4})
	defer load.Stop()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	// shouting waits (bounded) until the greeting shouts or not, as asked:
	// the service polls its flags file.
	shouting := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := hc.Get(url)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "(shouting)") == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %q after 10s; want shouting %v", url, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	shouting(false)

	out, code := runBaton(t, "flag", "list", "-c", cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^shout +off +off +config +\S+ +greet loudly$`).MatchString(out) ||
		!strings.Contains(out, "flags file "+filepath.Join(dir, "control.flags.json")+", version ") {
		t.Errorf("flag list: exit %d\n%s", code, out)
	}
	out, code = runBaton(t, "flag", "set", "shout", "on", "-c", cfg)
	if code != 0 || out != "flag shout is now on (default off)\n" {
		t.Errorf("flag set shout on: exit %d\n%s", code, out)
	}
	shouting(true)

	out, code = runBaton(t, "flag", "set", "-c", cfg, "nope", "10%")
	if code != 1 || !strings.Contains(out, `flag set failed: no such flag "nope" (declared: shout)`) {
		t.Errorf("flag set nope: exit %d, want 1\n%s", code, out)
	}
	out, code = runBaton(t, "flag", "set", "shout", "150", "-c", cfg)
	if code != 2 || !strings.Contains(out, `value "150": want on, off`) {
		t.Errorf("flag set shout 150: exit %d, want 2\n%s", code, out)
	}

	out, code = runBaton(t, "flag", "list", "--json", "-c", cfg)
	var fl control.FlagsJSON
	if err := json.Unmarshal([]byte(out), &fl); code != 0 || err != nil || len(fl.Flags) != 1 || fl.Version < 2 {
		t.Fatalf("flag list --json: exit %d, %v\n%s", code, err, out)
	}
	if f := fl.Flags[0]; f.Name != "shout" || f.Percent != 100 || f.Default != 0 || !f.Set || f.By != "operator" ||
		f.Description != "greet loudly" {
		t.Errorf("flag list --json: %+v", f)
	}

	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`baton_flag_percent{flag="shout"} 100`, `baton_flag_changes_total{by="operator",flag="shout"} 1`,
		`baton_flag_changes_total{by="analysis",flag="shout"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	out, code = runBaton(t, "flag", "reset", "shout", "-c", cfg)
	if code != 0 || out != "flag shout is back to its default: off\n" {
		t.Errorf("flag reset shout: exit %d\n%s", code, out)
	}
	shouting(false)

	// Flipped without a restart or an upgrade: the same one process.
	out, code = runBaton(t, "status", "--json", "-c", cfg)
	var st control.StatusJSON
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Generations) != 1 ||
		len(st.Generations[0].PIDs) != 1 || float64(st.Generations[0].PIDs[0]) != pid || st.Generations[0].Restarts != 0 {
		t.Errorf("status after the flips: exit %d, %v\n%s", code, err, out)
	}
	if st := load.Stop(); st.Failed > 0 {
		t.Errorf("%d of %d requests failed while the flag flipped: %v", st.Failed, st.Sent, st.Errors)
	}
}
