//go:build linux

package faults_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFaults runs every fault against a baton of its own, in parallel (as
// many at a time as go test's -parallel allows: GOMAXPROCS by default).
func TestFaults(t *testing.T) {
	needRoot(t)
	for _, f := range []struct {
		name string
		run  func(*testing.T)
	}{
		// A new version that fails before it serves: upgrades_test.go.
		{"new version exits at once", faultExitsAtOnce},
		{"new version never ready", faultNeverReady},
		{"new version shuts down its listener", faultShutsDownListener},
		{"new version closes its listener", faultClosesListener},
		{"new version crashes during probation", faultCrashesOnProbation},
		{"old version ignores SIGTERM", faultIgnoresSIGTERM},
		// Output: output_test.go.
		{"stdout flood", faultStdoutFlood},
		// baton itself: kill_test.go.
		{"baton SIGKILLed mid-upgrade", faultBatonKilled},
		{"baton SIGKILLed mid-upgrade, fd store", faultBatonKilledFDStore},
		// The machine: resources_test.go.
		{"address already in use", faultAddressInUse},
		{"fd limit", faultFDLimit},
		// The operator: config_test.go, deploy_test.go.
		{"config turns invalid", faultConfigInvalid},
		{"deploy leaves the new version unrunnable", faultUnrunnable},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			f.run(t)
			t.Logf("%s: %v", f.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// badCandidate is the common shape of a new version that fails before it
// serves: generation 1 serves under load; generation 2, with the fault,
// must fail with want in `baton upgrade --wait`'s answer (exit 1) while
// generation 1 serves on, untouched; its processes must be gone; a good
// generation 3 must then upgrade as usual; no request may fail; and once
// baton has stopped, nothing may be left.
func badCandidate(t *testing.T, bad serviceConfig, want string) {
	s := newService(t)
	s.write(t, serviceConfig{instances: bad.instances})
	b := s.start(t, nil)
	addr, _ := b.ready()
	pids1 := b.readyAll(1, max(bad.instances, 1))
	before := s.waitStarted(t, len(pids1))
	load := startLoad(t, addr)

	bad.version = "2"
	s.write(t, bad)
	out, code := s.upgrade(t)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("upgrade to the bad version: exit %d\n%s\nwant exit 1 and %q", code, out, want)
	}
	b.waitFor(`"retired" of generation 2`, msg("retired", 2))
	var candidates []procID
	for _, p := range s.started(t) {
		if !containsProc(before, p) {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		t.Error("no process of generation 2 ever ran")
	}
	if body := answeredBy(t, addr, 1); !slices.ContainsFunc(pids1, func(pid int) bool { return strings.Contains(body, " pid "+strconv.Itoa(pid)+" ") }) {
		t.Errorf("generation 1 answers from another process than its own %v: %q", pids1, body)
	}
	waitGone(t, candidates...)
	if b.has(msg("process exited", 1)) {
		t.Error("a process of generation 1 exited during the failed upgrade")
	}

	s.write(t, serviceConfig{version: "3", instances: bad.instances})
	s.mustUpgrade(t)
	answeredBy(t, addr, 3)
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}

func containsProc(ps []procID, p procID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
