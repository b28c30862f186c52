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
	"strings"
	"testing"
	"time"

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
		`baton_reverts_total{reason="manual"} 0`, "baton_restarts_total 0", "baton_serving_generation 2",
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
