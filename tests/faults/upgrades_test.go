//go:build linux

package faults_test

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// faultExitsAtOnce: a new version that exits before it says anything.
func faultExitsAtOnce(t *testing.T) {
	badCandidate(t, serviceConfig{fault: "exit"}, "exited before it was ready: exit status 3")
}

// faultNeverReady: a new version that runs (and accepts, had it any
// connection) but never says READY=1: the readiness timeout decides.
func faultNeverReady(t *testing.T) {
	badCandidate(t, serviceConfig{fault: "never-ready", readiness: "1s"}, "not ready within 1s")
}

// faultShutsDownListener: one instance of three calls shutdown(2) on its
// inherited listener, then says READY=1 anyway. Its socket is its own
// (steered), so the old generation's are untouched; a socket that no
// longer listens cannot be routed to, and the upgrade fails instead of
// sending connections to it.
func faultShutsDownListener(t *testing.T) {
	badCandidate(t, serviceConfig{fault: "shutdown-listener", only: "1", instances: 3}, "not listening")
}

// faultClosesListener: a new version that closes its inherited listener,
// whether it then never gets ready or says READY=1 anyway. baton's own
// copy of the socket still listens, so a candidate that says it is ready
// must still hold its socket (baton looks in /proc) before it gets any
// connection; otherwise connections would wait where nobody accepts.
func faultClosesListener(t *testing.T) {
	badCandidate(t, serviceConfig{fault: "close-listener,never-ready", readiness: "1s"}, "not ready within 1s")
	badCandidate(t, serviceConfig{fault: "close-listener"}, "no longer holds its socket")
}

// faultCrashesOnProbation: a new version that is ready and promoted, then
// crashes during its probation. The old generation stood by at weight 0
// (every listener is steered), so the revert is one weight change: it
// serves again, the same process; `baton upgrade --wait` says why (exit
// 1). Requests in flight on the process that crashed may fail (at most one
// per client) and nothing else: none is refused, and none fails once the
// old generation serves again.
func faultCrashesOnProbation(t *testing.T) {
	s := newService(t)
	probation := "[upgrade]\nprobation = \"3s\"\n"
	s.write(t, serviceConfig{extra: probation})
	b := s.start(t, nil)
	addr, pid1 := b.ready()
	load := startLoad(t, addr)

	s.write(t, serviceConfig{version: "2", fault: "crash-after=500ms", extra: probation})
	out, code := s.upgrade(t)
	if code != 1 || !strings.Contains(out, "reverted during probation") || !strings.Contains(out, "exit status 2") {
		t.Errorf("upgrade to a version that crashes on probation: exit %d\n%s\nwant 1, reverted during probation, exit status 2", code, out)
	}
	promoted := b.waitFor(`"promoted" of generation 2`, msg("promoted", 2))
	reverting := b.waitFor(`"reverting" of generation 2`, msg("reverting", 2))
	b.waitFor(`"retired" of generation 2`, msg("retired", 2))
	pidGone(t, num(promoted["pid"]))
	if body := answeredBy(t, addr, 1); !strings.Contains(body, " pid "+strconv.Itoa(pid1)+" ") {
		t.Errorf("after the revert: %q; want generation 1's own process %d, which stood by", body, pid1)
	}
	t.Logf("revert: %v", reverting["reason"])
	crash := load.Stop()
	t.Logf("load across the crash: sent %d, failed %d %v, by generation %v", crash.Sent, crash.Failed, crash.Errors, crash.Generations)
	if crash.Generations["2"] == 0 {
		t.Error("generation 2 answered nothing: it crashed before it served")
	}
	if crash.Failed > 8 {
		t.Errorf("%d requests failed; at most the 8 clients' requests in flight on the crashed process may", crash.Failed)
	}
	for reason := range crash.Errors {
		if strings.Contains(reason, "refused") {
			t.Errorf("a client was refused: %v", crash.Errors)
		}
	}

	// Generation 1 serves on, and a good version (without probation, to
	// be quick) upgrades as usual.
	load = startLoad(t, addr)
	s.write(t, serviceConfig{version: "3"})
	s.mustUpgrade(t)
	answeredBy(t, addr, 3)
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}

// faultIgnoresSIGTERM: the old version ignores its stop signal, and has
// a grandchild in its process group. After [drain] timeout its process
// group gets SIGKILL: both are gone, and no request failed (it answered
// with Connection: close, so nothing of its was in flight by then).
func faultIgnoresSIGTERM(t *testing.T) {
	s := newService(t)
	s.write(t, serviceConfig{fault: "ignore-term,no-keepalive,grandchild", drain: "1s"})
	b := s.start(t, nil)
	addr, _ := b.ready()
	stubborn := s.started(t) // its process and the grandchild
	if len(stubborn) != 2 {
		t.Fatalf("generation 1: %v; want its process and its grandchild", stubborn)
	}
	load := startLoad(t, addr)

	s.write(t, serviceConfig{version: "2", drain: "1s"})
	s.mustUpgrade(t) // returns once generation 1 has retired
	stopping := b.waitFor(`"stopping" of generation 1`, msg("stopping", 1))
	b.waitFor("the kill of generation 1", msg("process did not exit in time; killing its process group", 1))
	exited := b.waitFor(`"process exited" of generation 1`, msg("process exited", 1))
	if st := str(exited["status"]); !strings.Contains(st, "killed") {
		t.Errorf("generation 1 exited with %q; want killed", st)
	}
	took := logTime(t, exited).Sub(logTime(t, stopping))
	t.Logf("stop signal to exit: %v (drain timeout 1s)", took)
	if took < time.Second || took > 3*time.Second {
		t.Errorf("killed %v after its stop signal; want [drain] timeout, 1s", took)
	}
	waitGone(t, stubborn...)
	answeredBy(t, addr, 2)
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}

// logTime is the time of a log line.
func logTime(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, str(m["time"]))
	if err != nil {
		t.Fatalf("log line without a time: %v", m)
	}
	return at
}
