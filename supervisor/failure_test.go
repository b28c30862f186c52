//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// TestFailedCandidateCostsNothing: a new version that exits at once, never
// gets ready, or fails its exec check is stopped; the serving generation
// keeps serving and no request fails. With kernel steering the candidate
// gets no traffic at all.
func TestFailedCandidateCostsNothing(t *testing.T) {
	cases := []struct {
		name     string
		steering string
		bad      app
	}{
		{"exits at once", "bpf", app{Env: map[string]string{"APP_EXIT": "3"}}},
		{"exits at once", "shared", app{Env: map[string]string{"APP_EXIT": "3"}}},
		{"never ready", "bpf", app{Env: map[string]string{"APP_NEVER_READY": "1"},
			Readiness: "check = \"notify\"\ntimeout = \"1s\""}},
		// Its own socket only: the serving generation's is another socket.
		{"shuts down its socket", "bpf", app{Env: map[string]string{"APP_SHUTDOWN_LISTENER": "1"}}},
		{"exec check fails", "bpf", app{Readiness: "check = \"exec\"\ncommand = [\"/bin/false\"]\ninterval = \"100ms\"\ntimeout = \"1s\""}},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/"+tc.steering, func(t *testing.T) {
			h := start(t, app{Version: "v1", Steering: tc.steering})
			before := h.status()
			load := loadgen.Run(context.Background(), loadOptions(h.url))
			defer load.Stop()
			waitSent(t, load, 200)

			bad := tc.bad
			bad.Version, bad.Steering = "bad", tc.steering
			_, err := h.upgrade(bad)
			if !errors.Is(err, supervisor.ErrUpgradeFailed) {
				t.Fatalf("upgrade: err = %v, want ErrUpgradeFailed", err)
			}
			t.Logf("upgrade failed as expected: %v", err)
			waitSent(t, load, load.Snapshot().Sent+200)
			after := h.settled()
			res := load.Stop()
			if res.Failed != 0 {
				t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
			}
			if after.Serving != before.Serving || h.gen(after, after.Serving).PID != h.gen(before, before.Serving).PID {
				t.Errorf("serving generation changed: before %+v after %+v", before, after)
			}
			if tc.steering == "bpf" {
				for g, n := range res.Generations {
					if g != strconv.Itoa(before.Serving) {
						t.Errorf("generation %s answered %d requests; only %d may", g, n, before.Serving)
					}
				}
			}
		})
	}
}

// TestReadinessChecks: exec and delay checks promote a healthy version.
func TestReadinessChecks(t *testing.T) {
	h := start(t, app{Version: "v1"})
	for _, r := range []string{
		"check = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"kill -0 $BATON_PID\"]\ninterval = \"50ms\"\ntimeout = \"5s\"",
		"check = \"delay\"\ndelay = \"200ms\"\ntimeout = \"5s\"",
	} {
		if _, err := h.upgrade(app{Version: "v2", Readiness: r}); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
}

// TestServingCrashRefusesNoClient: while a crashed serving process is
// restarted, new clients wait in the backlog; only requests in flight on
// the crashed process may fail.
func TestServingCrashRefusesNoClient(t *testing.T) {
	for _, steering := range []string{"bpf", "shared"} {
		t.Run(steering, func(t *testing.T) {
			h := start(t, app{Version: "v1", Steering: steering, Restart: "backoff = \"300ms\""})
			load := loadgen.Run(context.Background(), loadOptions(h.url))
			defer load.Stop()
			waitSent(t, load, 200)
			resp, err := http.Get(h.url + "/crash")
			if err == nil {
				resp.Body.Close()
				t.Fatal("/crash answered")
			}
			h.waitFor("restarted process ready", func(st supervisor.Status) bool {
				g := h.gen(st, st.Serving)
				return g.Restarts == 1 && g.Ready
			})
			waitSent(t, load, load.Snapshot().Sent+300)
			res := load.Stop()
			t.Logf("sent %d failed %d: %v", res.Sent, res.Failed, res.Errors)
			for reason := range res.Errors {
				if strings.Contains(reason, "refused") || strings.Contains(reason, "timeout") {
					t.Errorf("a client was refused or timed out: %v", res.Errors)
				}
			}
			if res.Failed > 16 {
				t.Errorf("%d requests failed; at most the 16 in flight may", res.Failed)
			}
		})
	}
}

// TestCrashLoopGivesUp: a service that keeps crashing is restarted
// [restart] max_tries times, then Run returns ErrGaveUp.
func TestCrashLoopGivesUp(t *testing.T) {
	h := &harness{t: t, cfgPath: t.TempDir() + "/baton.toml", logs: &syncBuffer{}}
	h.write(app{Version: "v1", Env: map[string]string{"APP_EXIT": "3"}, Restart: "max_tries = 2\nbackoff = \"10ms\""})
	cfg, err := supervisor.LoadConfig(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sup, err := supervisor.New(supervisor.Options{ConfigPath: h.cfgPath, Config: cfg, Logger: testLogger(h.logs)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sup.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, supervisor.ErrGaveUp) {
			t.Errorf("Run: %v, want ErrGaveUp", err)
		}
	case <-time.After(30 * time.Second):
		sup.Stop()
		t.Fatal("Run did not give up")
	}
	if n := strings.Count(h.logs.String(), "process crashed; restarting"); n != 2 {
		t.Errorf("%d restarts logged, want 2:\n%s", n, h.logs.String())
	}
}

// TestStopSignalIgnoredMeansSIGKILL: a process that ignores its stop signal
// is killed with its process group after [drain] timeout.
func TestStopSignalIgnoredMeansSIGKILL(t *testing.T) {
	stubborn := app{Version: "v1", Env: map[string]string{"APP_IGNORE_TERM": "1"}, Drain: "timeout = \"500ms\""}
	h := start(t, stubborn)
	old := h.status().Generations[0].PID
	if _, err := h.upgrade(app{Version: "v2"}); err != nil {
		t.Fatal(err)
	}
	h.settled()
	if !strings.Contains(h.logs.String(), "did not exit in time") {
		t.Errorf("no SIGKILL logged:\n%s", h.logs.String())
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(old)); err == nil {
		t.Errorf("old process %d still exists", old)
	}
}

// TestBadUpgradeRequestsChangeNothing: a broken config file or a changed
// listener is reported and the serving generation is untouched.
func TestBadUpgradeRequestsChangeNothing(t *testing.T) {
	h := start(t, app{Version: "v1"})
	before := h.status()
	for name, content := range map[string]string{
		"syntax":   "[service\ncommand = [",
		"listener": strings.Replace(app{Version: "v2"}.toml(), "127.0.0.1:0", "127.0.0.1:1", 1),
		"steering": strings.Replace(app{Version: "v2"}.toml(), `steering = "bpf"`, `steering = "shared"`, 1),
	} {
		if err := os.WriteFile(h.cfgPath, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := h.sup.Upgrade(ctx)
		cancel()
		if !errors.Is(err, supervisor.ErrUpgradeFailed) {
			t.Errorf("%s: err = %v, want ErrUpgradeFailed", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	after := h.status()
	if len(after.Generations) != 1 || after.Generations[0].PID != before.Generations[0].PID {
		t.Errorf("generations changed: %+v -> %+v", before.Generations, after.Generations)
	}
	// A good file works again.
	if _, err := h.upgrade(app{Version: "v2"}); err != nil {
		t.Error(err)
	}
}

// TestUpgradesDuringAnUpgradeAreQueued: an upgrade asked for while one is
// in progress is neither lost nor run concurrently: it follows the current
// one, and requests arriving meanwhile merge into it.
func TestUpgradesDuringAnUpgradeAreQueued(t *testing.T) {
	h := start(t, app{Version: "v1"})
	h.write(app{Version: "v2", Env: map[string]string{"APP_READY_DELAY": "300ms"}})
	type result struct {
		gen int
		err error
	}
	results := make([]result, 3)
	var wg sync.WaitGroup
	upgrade := func(i int) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		results[i].gen, results[i].err = h.sup.Upgrade(ctx)
	}
	wg.Add(1)
	go upgrade(0)
	h.waitFor("first upgrade in progress", func(st supervisor.Status) bool { return st.Candidate == 2 })
	wg.Add(2)
	go upgrade(1)
	go upgrade(2)
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("upgrade %d: %v", i, r.err)
		}
	}
	if results[0].gen != 2 || results[1].gen != 3 || results[2].gen != 3 {
		t.Errorf("generations %+v, want 2, then 3 for both queued requests", results)
	}
	if st := h.settled(); st.Serving != 3 {
		t.Errorf("serving %d, want 3", st.Serving)
	}
}

// TestGiveUpDuringUpgrade: when the serving generation gives up while an
// upgrade is in progress, its sockets stay open (clients wait in the
// backlog, none is refused) until the upgrade is decided. A candidate that
// becomes ready takes over; one that fails leaves baton nothing to run, and
// Run returns ErrGaveUp.
func TestGiveUpDuringUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name      string
		candidate app
		takesOver bool
	}{
		{"candidate takes over", app{Version: "v2", Restart: "max_tries = 0", Env: map[string]string{"APP_READY_DELAY": "1s"}}, true},
		{"candidate fails", app{Version: "v2", Restart: "max_tries = 0", Env: map[string]string{"APP_NEVER_READY": "1"},
			Readiness: "check = \"notify\"\ntimeout = \"1s\""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, app{Version: "v1", Restart: "max_tries = 0"})
			h.write(tc.candidate)
			result := make(chan error, 1)
			go func() {
				_, err := h.sup.Upgrade(h.ctx)
				result <- err
			}()
			h.waitFor("candidate started", func(st supervisor.Status) bool { return st.Candidate != 0 })
			if resp, err := http.Get(h.url + "/crash"); err == nil {
				resp.Body.Close()
			}
			h.waitFor("serving generation gave up", func(st supervisor.Status) bool {
				return h.gen(st, 1).GaveUp
			})
			// The address still listens: a client is queued, not refused.
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(h.url, "http://"), 2*time.Second)
			if err != nil {
				t.Fatalf("client refused while the upgrade is pending: %v", err)
			}
			c.Close()
			if !tc.takesOver {
				// Nor does the unready candidate get that client's request.
				client := &http.Client{Timeout: 300 * time.Millisecond}
				if resp, err := client.Get(h.url); err == nil {
					resp.Body.Close()
					t.Errorf("a request was answered (%s) while only an unready candidate runs", resp.Status)
				}
			}
			err = <-result
			if tc.takesOver {
				if err != nil {
					t.Fatalf("upgrade: %v", err)
				}
				if _, err := loadgen.WaitFor(h.ctx, h.url, func(b string) bool { return strings.Contains(b, "generation 2 ") }, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, supervisor.ErrUpgradeFailed) {
				t.Fatalf("upgrade: %v, want ErrUpgradeFailed", err)
			}
			select {
			case err := <-h.done:
				h.done <- err
				if !errors.Is(err, supervisor.ErrGaveUp) {
					t.Errorf("Run: %v, want ErrGaveUp", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return after giving up")
			}
		})
	}
}
