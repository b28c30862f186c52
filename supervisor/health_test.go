//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// withAdmin is the default listener plus a private one ("admin") on which
// every instance serves /healthz and /metrics on a port of its own.
const withAdmin = "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\n" +
	"[[listener]]\nname = \"admin\"\naddress = \"127.0.0.1:0\"\nprivate = true"

// httpReady is an http readiness check on the private listener.
const httpReady = "check = \"http\"\npath = \"/healthz\"\ntimeout = \"1s\"\ninterval = \"50ms\""

// fastHealth is a [health] check every 100 ms, unhealthy after 2 failures.
const fastHealth = "[health]\ncheck = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfailure_threshold = 2"

// noRefusals fails the test if any request of res was refused.
func noRefusals(t *testing.T, res loadgen.Result) {
	t.Helper()
	for reason := range res.Errors {
		if strings.Contains(reason, "refused") {
			t.Errorf("clients were refused: %v", res.Errors)
		}
	}
}

// noFailures logs the load's totals and fails the test if any request
// failed: what kernel steering promises.
func noFailures(t *testing.T, res loadgen.Result) {
	t.Helper()
	t.Logf("sent %d, failed %d, by generation %v", res.Sent, res.Failed, res.Generations)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
}

// sharedLoss logs the load's totals and checks what one socket shared by
// every generation promises: a request lost now and then (an old process
// told to stop while it still accepts, see the notes), none refused, and
// no more than 0.5%.
func sharedLoss(t *testing.T, res loadgen.Result) {
	t.Helper()
	t.Logf("sent %d, failed %d, by generation %v", res.Sent, res.Failed, res.Generations)
	noRefusals(t, res)
	if res.Failed*200 > res.Sent {
		t.Errorf("%d of %d requests failed (more than 0.5%%): %v", res.Failed, res.Sent, res.Errors)
	}
}

// TestProbeTargetsTheInstance: with an old generation that is healthy on
// the same addresses, a new one whose own health endpoint fails is not
// ready: the check reaches the new instance's private socket, not
// whichever process accepts on a shared address.
func TestProbeTargetsTheInstance(t *testing.T) {
	for _, steering := range []string{"bpf", "shared"} {
		t.Run(steering, func(t *testing.T) {
			h := start(t, app{Version: "v1", Listeners: withAdmin, Readiness: httpReady, Steering: steering})
			st := h.status()
			if st.Listeners[1].Mode != supervisor.ModePrivate {
				t.Fatalf("listener modes %+v, want the second private", st.Listeners)
			}
			_, err := h.upgrade(app{Version: "v2", Listeners: withAdmin, Readiness: httpReady, Steering: steering,
				Env: map[string]string{"APP_UNHEALTHY": "1"}})
			if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "503") {
				t.Fatalf("upgrade to an unhealthy version: %v, want a failure naming its 503", err)
			}
			if st := h.settled(); st.Serving != 1 {
				t.Errorf("serving %d after the failed upgrade, want 1", st.Serving)
			}
			// And a healthy one passes the same check.
			if gen, err := h.upgrade(app{Version: "v3", Listeners: withAdmin, Readiness: httpReady, Steering: steering}); err != nil || gen != 3 {
				t.Errorf("upgrade to a healthy version: %d, %v", gen, err)
			}
		})
	}
}

// probationUnderLoad upgrades to bad under load with a probation of 10 s
// and waits for the revert; it returns the load and the upgrade's error.
func probationUnderLoad(t *testing.T, steering string, bad app) (*harness, loadgen.Result, error) {
	good := app{Version: "v1", Listeners: withAdmin, Readiness: httpReady, Steering: steering,
		Upgrade: "probation = \"10s\"", Extra: fastHealth}
	h := start(t, good)
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	bad.Listeners, bad.Readiness, bad.Steering = withAdmin, httpReady, steering
	bad.Upgrade = "probation = \"10s\""
	if bad.Extra == "" {
		bad.Extra = fastHealth
	}
	start := time.Now()
	_, err := h.upgrade(bad)
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the revert took %s; the probation (10s) should not have run out", took)
	}
	st := h.settled()
	if st.Serving == 2 {
		t.Errorf("generation 2 still serves after its revert")
	}
	waitSent(t, load, load.Snapshot().Sent+200)
	res := load.Stop()
	counts := fresh(t, h.url, 200, 4)
	if counts[strconv.Itoa(st.Serving)] != 200 {
		t.Errorf("after the revert, answers by generation %v; want all from %d", counts, st.Serving)
	}
	return h, res, err
}

// TestRevertOnCrashDuringProbation: a version that crashes after it was
// promoted is reverted; with steering, the old generation stood by and
// takes the traffic back with one weight change.
func TestRevertOnCrashDuringProbation(t *testing.T) {
	h, res, err := probationUnderLoad(t, "bpf", app{Version: "v2", Env: map[string]string{"APP_CRASH_AFTER": "700ms"}})
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "crashed during probation") {
		t.Fatalf("upgrade: %v; want a revert saying the new version crashed", err)
	}
	if st := h.status(); st.Serving != 1 {
		t.Errorf("serving %d after the revert, want 1 (the standby)", st.Serving)
	}
	t.Logf("sent %d, failed %d, by generation %v: %v", res.Sent, res.Failed, res.Generations, res.Errors)
	noRefusals(t, res)
	// Only requests in flight on the process that crashed may fail: at
	// most one per client.
	if res.Failed > 16 {
		t.Errorf("%d of %d requests failed; at most the 16 in flight on the crashed process may", res.Failed, res.Sent)
	}
}

// TestRevertOnLivenessFailure: a version whose health check starts failing
// during probation is reverted, and since it never crashed nothing fails.
func TestRevertOnLivenessFailure(t *testing.T) {
	_, res, err := probationUnderLoad(t, "bpf", app{Version: "v2", Env: map[string]string{"APP_UNHEALTHY_AFTER": "500ms"}})
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "health check failed") {
		t.Fatalf("upgrade: %v; want a revert saying the health check failed", err)
	}
	noFailures(t, res)
}

// TestRevertOnLivenessFailureShared: the same without steering: the old
// generation was drained at promotion and the revert starts it again from
// its pinned config; the failing one serves until it is ready.
func TestRevertOnLivenessFailureShared(t *testing.T) {
	h, res, err := probationUnderLoad(t, "shared", app{Version: "v2", Env: map[string]string{"APP_UNHEALTHY_AFTER": "500ms"}})
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "health check failed") {
		t.Fatalf("upgrade: %v; want a revert saying the health check failed", err)
	}
	if st := h.status(); st.Serving != 3 {
		t.Errorf("serving %d; want 3, generation 1's config started again", st.Serving)
	}
	body, err := loadgen.WaitFor(h.ctx, h.url, func(string) bool { return true }, 5*time.Second)
	if err != nil || !strings.Contains(body, "(version v1)") {
		t.Errorf("after the revert: %q, %v; want version v1", body, err)
	}
	sharedLoss(t, res)
}

// TestWatchdog: a process gets WATCHDOG_USEC and WATCHDOG_PID (its own pid:
// the app exits if go-systemd says the watchdog is not for it); once it
// stops sending WATCHDOG=1, it is restarted.
func TestWatchdog(t *testing.T) {
	h := start(t, app{Version: "v1", Env: map[string]string{"APP_WATCHDOG_STOP_AFTER": "1s"},
		Extra: "[health]\nwatchdog = \"300ms\""})
	first := h.gen(h.status(), 1).PID
	st := h.waitFor("a restart after the missed keep-alives", func(st supervisor.Status) bool {
		g := h.gen(st, 1)
		return g.Restarts >= 1 && g.PID != first && g.Ready
	})
	if !strings.Contains(h.logs.String(), "no WATCHDOG=1 for 300ms") {
		t.Errorf("the log does not say why the process was restarted")
	}
	if h.gen(st, 1).Restarts > 1 {
		t.Errorf("%d restarts within the first second of the new process; the keep-alives of the first one counted for nothing", h.gen(st, 1).Restarts)
	}
}

// TestAnalysis: during probation, a version answering 20% of requests with
// 500s is reverted on its error ratio against the old one's; a healthy one
// passes and is promoted.
func TestAnalysis(t *testing.T) {
	analysis := "[analysis]\ninterval = \"500ms\"\nmeasurements = 4\nmin_requests = 20\nrules = [\"error_ratio\", \"crashes\"]"
	base := app{Listeners: withAdmin, Readiness: httpReady, Upgrade: "probation = \"3s\"", Extra: analysis}
	v1 := base
	v1.Version = "v1"
	h := start(t, v1)
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)

	bad := base
	bad.Version, bad.Env = "v2", map[string]string{"APP_ERROR_PERCENT": "20"}
	_, err := h.upgrade(bad)
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "analysis failed") || !strings.Contains(err.Error(), "error ratio") {
		t.Fatalf("upgrade to a version failing 20%%: %v; want a revert on its error ratio", err)
	}
	if st := h.settled(); st.Serving != 1 {
		t.Errorf("serving %d, want 1", st.Serving)
	}
	if !strings.Contains(h.logs.String(), "analysis measurement") {
		t.Errorf("no measurement logged")
	}
	good := base
	good.Version = "v3"
	if gen, err := h.upgrade(good); err != nil || gen != 3 {
		t.Fatalf("upgrade to a healthy version: %d, %v", gen, err)
	}
	h.settled()
	res := load.Stop()
	t.Logf("sent %d, failed %d, by generation %v: %v", res.Sent, res.Failed, res.Generations, res.Errors)
	for reason := range res.Errors {
		if reason != "status 500" {
			t.Errorf("failures other than the bad version's own 500s: %v", res.Errors)
		}
	}
}

// TestRollbackDuringProbation: `baton rollback` during probation is a
// revert: the standby takes the traffic back at once.
func TestRollbackDuringProbation(t *testing.T) {
	a := app{Version: "v1", Upgrade: "probation = \"1m\""}
	h := start(t, a)
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	a.Version = "v2"
	done := h.upgradeAsync(a)
	h.waitFor("generation 2 on probation", func(st supervisor.Status) bool { return st.Probation == 2 && st.Standby == 1 })
	gen, err := h.sup.Rollback(h.ctx)
	if err != nil || gen != 1 {
		t.Fatalf("rollback during probation: %d, %v; want generation 1 back", gen, err)
	}
	if err := waitUpgrade(t, done); !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "rolled back by hand") {
		t.Errorf("the upgrade: %v; want it reverted by hand", err)
	}
	if counts := fresh(t, h.url, 100, 4); counts["1"] != 100 {
		t.Errorf("answers by generation %v; want all from 1", counts)
	}
	h.settled()
	waitSent(t, load, load.Snapshot().Sent+100)
	if res := load.Stop(); res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
}

// TestFailedStateAfterRepeatedReverts: with max_reverts = 1, the second
// revert puts the service in the failed state: upgrades are refused until
// one is forced, and the serving generation keeps serving throughout.
func TestFailedStateAfterRepeatedReverts(t *testing.T) {
	up := "probation = \"10s\"\nmax_reverts = 1"
	h := start(t, app{Version: "v1", Upgrade: up})
	bad := app{Version: "bad", Upgrade: up, Env: map[string]string{"APP_CRASH_AFTER": "200ms"}}
	for i := 1; i <= 2; i++ {
		if _, err := h.upgrade(bad); !errors.Is(err, supervisor.ErrUpgradeFailed) {
			t.Fatalf("bad upgrade %d: %v", i, err)
		}
		h.settled()
	}
	st := h.status()
	if st.Failed == "" || st.Serving != 1 {
		t.Fatalf("after 2 reverts: failed %q, serving %d; want the failed state, generation 1 serving", st.Failed, st.Serving)
	}
	_, err := h.upgrade(app{Version: "v2", Upgrade: up})
	if !errors.Is(err, supervisor.ErrFailedState) || !strings.Contains(err.Error(), "2 reverts within 1h0m0s") {
		t.Fatalf("upgrade in the failed state: %v, want ErrFailedState", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	h.write(app{Version: "v2", Upgrade: "probation = \"200ms\"\nmax_reverts = 1"})
	gen, err := h.sup.ForceUpgrade(ctx)
	if err != nil {
		t.Fatalf("forced upgrade: %v", err)
	}
	if st := h.settled(); st.Failed != "" || st.Serving != gen {
		t.Errorf("after the forced upgrade: failed %q, serving %d; want no failed state, %d serving", st.Failed, st.Serving, gen)
	}
}

// TestRevertRunsTheOldExecutable: the revert (shared mode: a restart from
// the pinned executable) runs the old binary even after a deploy renamed
// another file over its path, or deleted it.
func TestRevertRunsTheOldExecutable(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"renamed over", "deleted"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			v1 := filepath.Join(dir, "app")
			copyFile(t, self, v1)
			var want syscall.Stat_t
			if err := syscall.Stat(v1, &want); err != nil {
				t.Fatal(err)
			}
			up := "probation = \"10s\""
			h := start(t, app{Version: "v1", Steering: "shared", Upgrade: up, RawCommand: []string{v1}})
			// The deploy: a new file takes v1's path (renamed over it), or
			// the new version lives elsewhere and v1's file goes.
			v2 := filepath.Join(dir, "app-v2")
			copyFile(t, self, v2)
			cmd := v2
			if how == "renamed over" {
				if err := os.Rename(v2, v1); err != nil {
					t.Fatal(err)
				}
				cmd = v1
			} else if err := os.Remove(v1); err != nil {
				t.Fatal(err)
			}
			_, err := h.upgrade(app{Version: "v2", Steering: "shared", Upgrade: up, RawCommand: []string{cmd},
				Env: map[string]string{"APP_CRASH_AFTER": "300ms"}})
			if !errors.Is(err, supervisor.ErrUpgradeFailed) {
				t.Fatalf("upgrade: %v, want a revert", err)
			}
			st := h.waitFor("the reverted generation ready", func(st supervisor.Status) bool {
				return st.Serving == 3 && h.gen(st, 3).Ready && len(st.Generations) == 1
			})
			var got syscall.Stat_t
			if err := syscall.Stat(fmt.Sprintf("/proc/%d/exe", h.gen(st, 3).PID), &got); err != nil {
				t.Fatal(err)
			}
			if got.Ino != want.Ino || got.Dev != want.Dev {
				t.Errorf("the reverted process runs inode %d, want %d (the old binary)", got.Ino, want.Ino)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestHooks: pre_start runs before the candidate and a failing one leaves
// the serving generation alone; post_promote runs once the upgrade is
// final and post_revert after a revert, each with the environment that
// says what happened.
func TestHooks(t *testing.T) {
	dir := t.TempDir()
	record := func(name string) string {
		return fmt.Sprintf(`["/bin/sh", "-c", "echo \"$BATON_HOOK $BATON_GENERATION $BATON_SERVING $BATON_REASON\" >> %s/hooks.log"]`, dir)
	}
	hooks := func(pre string) string {
		return fmt.Sprintf("[hooks]\npre_start = %s\npost_promote = %s\npost_revert = %s\ntimeout = \"5s\"",
			pre, record("post_promote"), record("post_revert"))
	}
	h := start(t, app{Version: "v1", Extra: hooks(record("pre_start"))})
	if gen, err := h.upgrade(app{Version: "v2", Extra: hooks(record("pre_start"))}); err != nil || gen != 2 {
		t.Fatalf("upgrade: %d, %v", gen, err)
	}
	_, err := h.upgrade(app{Version: "v3", Extra: hooks(`["/bin/sh", "-c", "echo cannot migrate; exit 3"]`)})
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "pre_start") || !strings.Contains(err.Error(), "cannot migrate") {
		t.Fatalf("upgrade with a failing pre_start: %v; want a failure quoting the hook", err)
	}
	if st := h.settled(); st.Serving != 2 || len(st.Generations) != 1 || st.Candidate != 0 {
		t.Errorf("after a failing pre_start: %+v; want generation 2 alone, nothing started", st)
	}
	_, err = h.upgrade(app{Version: "v3", Upgrade: "probation = \"10s\"", Extra: hooks(record("pre_start")),
		Env: map[string]string{"APP_CRASH_AFTER": "200ms"}})
	if !errors.Is(err, supervisor.ErrUpgradeFailed) {
		t.Fatalf("upgrade to a crashing version: %v", err)
	}
	h.settled()
	want := "pre_start 2 1 \npost_promote 2 2 \npre_start 3 2 \npost_revert 2 2 instance 0 crashed during probation"
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "hooks.log"))
		got := strings.TrimSpace(string(data))
		if strings.HasPrefix(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hooks ran:\n%s\nwant:\n%s...", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
