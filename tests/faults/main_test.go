//go:build linux

// Package faults_test is baton's fault suite: the real bin/baton runs
// tests/faults/faultapp, a service that serves like examples/hello and
// misbehaves in one precise way on request (FAULT=...), under real traffic
// on loopback (internal/loadgen). Each fault is a subtest of TestFaults
// that asserts, by counting, that no request failed while an old
// generation served, and that nothing is left once baton has exited: no
// process of the service (every faultapp records its pid and start time,
// so a test knows each one that ever ran) and no listening socket.
//
// It needs root (kernel steering, as in production); otherwise it skips.
package faults_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The real binaries, built once by TestMain.
var batonBin, appBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-faults")
	if err != nil {
		panic(err)
	}
	batonBin, appBin = filepath.Join(dir, "baton"), filepath.Join(dir, "faultapp")
	for bin, pkg := range map[string]string{batonBin: "../../cmd/baton", appBin: "./faultapp"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault suite runs baton kernel-steered, as in production: it needs root (CAP_BPF)")
	}
}

// Bounds of every wait.
const (
	logWait     = 20 * time.Second // for a log line
	exitWait    = 30 * time.Second // for baton to exit
	goneWait    = 10 * time.Second // for a process to be gone
	upgradeWait = "30s"            // `baton upgrade --wait --timeout`
)

// service is the config of one baton under test, and where its processes
// leave their traces.
type service struct {
	dir     string
	cfg     string   // the config file
	sock    string   // the control socket
	pidDir  string   // FAULT_PIDDIR: one file per faultapp process that ever ran
	content string   // the config as last written
	guards  []procID // the guard of each baton that got ready
}

// serviceConfig is what a test changes in the config; the rest is fixed.
type serviceConfig struct {
	fault     string // FAULT for the processes of the generation
	only      string // FAULT_INSTANCE: the one instance that misbehaves; "" : all
	version   string // GREETING_VERSION
	instances int    // 0: 1
	address   string // "" : 127.0.0.1:0
	extra     string // more TOML, after the [control] section
	readiness string // [readiness] timeout; "" : 10s
	drain     string // [drain] timeout; "" : 10s
	command   string // the program; "" : faultapp as built
	directory string // [service] directory; "" : none
}

func newService(t *testing.T) *service {
	dir := t.TempDir()
	s := &service{dir: dir, cfg: filepath.Join(dir, "baton.toml"), sock: filepath.Join(dir, "control.sock"), pidDir: filepath.Join(dir, "pids")}
	if err := os.Mkdir(s.pidDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// write writes the config; a later upgrade reads it.
func (s *service) write(t *testing.T, c serviceConfig) {
	t.Helper()
	c.instances = max(c.instances, 1)
	c.address = cmpOr(c.address, "127.0.0.1:0")
	c.version = cmpOr(c.version, "1")
	c.readiness = cmpOr(c.readiness, "10s")
	c.drain = cmpOr(c.drain, "10s")
	c.command = cmpOr(c.command, appBin)
	dir := ""
	if c.directory != "" {
		dir = fmt.Sprintf("directory = %q\n", c.directory)
	}
	s.content = fmt.Sprintf(`[service]
command = [%q]
%senvironment = { FAULT = %q, FAULT_INSTANCE = %q, GREETING_VERSION = %q, FAULT_PIDDIR = %q }
instances = %d

[[listener]]
name = "http"
address = %q

[readiness]
timeout = %q

[drain]
timeout = %q
grace = "20ms"

[control]
socket = %q
%s`, c.command, dir, c.fault, c.only, c.version, s.pidDir, c.instances, c.address, c.readiness, c.drain, s.sock, c.extra)
	s.writeRaw(t, s.content)
}

func (s *service) writeRaw(t *testing.T, content string) {
	t.Helper()
	// Written whole and renamed, as a deploy tool would: baton never reads
	// half a file.
	tmp := s.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.cfg); err != nil {
		t.Fatal(err)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
