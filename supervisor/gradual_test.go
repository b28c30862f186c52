//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// freshBodies sends n requests, each on a connection of its own, from conc
// clients, and returns the bodies of the answers. Every request must
// succeed (status 200, a body that starts with "hello"): the test fails
// otherwise. It may be called from a goroutine other than the test's.
func freshBodies(t testing.TB, url string, n, conc int) []string {
	t.Helper()
	var (
		mu     sync.Mutex
		bodies []string
		errs   []string
		wg     sync.WaitGroup
	)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
			for range next {
				body, err := get(hc, url)
				if err == nil && !strings.HasPrefix(body, "hello") {
					err = fmt.Errorf("body %.40q", body)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err.Error())
				} else {
					bodies = append(bodies, body)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d of %d fresh requests failed, e.g. %s", len(errs), n, errs[0])
	}
	return bodies
}

// fresh is freshBodies' answers counted by the generation that gave them.
func fresh(t testing.TB, url string, n, conc int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, body := range freshBodies(t, url, n, conc) {
		counts[loadgen.Generation(body)]++
	}
	return counts
}

// upgradeAsync writes a and starts an upgrade whose outcome arrives later.
func (h *harness) upgradeAsync(a app) <-chan error {
	h.write(a)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(h.ctx, 2*time.Minute)
		defer cancel()
		_, err := h.sup.Upgrade(ctx)
		done <- err
	}()
	return done
}

// waitWeight waits until the candidate has the given target weight.
func (h *harness) waitWeight(weight int) supervisor.GenerationStatus {
	h.t.Helper()
	st := h.waitFor("candidate at "+strconv.Itoa(weight)+"%", func(st supervisor.Status) bool {
		return st.Candidate != 0 && h.gen(st, st.Candidate).Weight == weight && h.gen(st, st.Candidate).State == "canary"
	})
	return h.gen(st, st.Candidate)
}

func waitUpgrade(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("upgrade not decided within 2 minutes")
		return nil
	}
}

// TestCanaryWeightsAreExact: at each canary step the steering program
// gives the new generation its weight of new connections, within 2 points,
// over 10,000 connections per step (the kernel's 4-tuple hash makes this
// a sample: 2 points is 4 standard deviations at 50%); and the share baton
// reports (counted in the program) agrees with what the clients saw.
func TestCanaryWeightsAreExact(t *testing.T) {
	if testing.Short() {
		t.Skip("30,000 connections")
	}
	canary := `strategy = "canary"` + "\n" + `steps = [{ weight = 10 }, { weight = 50 }, { weight = 90 }]`
	h := start(t, app{Version: "v1", Instances: 2})
	done := h.upgradeAsync(app{Version: "v2", Instances: 2, Upgrade: canary})
	for i, weight := range []int{10, 50, 90} {
		c := h.waitWeight(weight)
		if !c.Holding || c.Step != i+1 || c.Steps != 3 {
			t.Errorf("step %d: status %+v, want holding at step %d of 3", i+1, c, i+1)
		}
		const n = 10000
		counts := fresh(t, h.url, n, 16)
		got := 100 * float64(counts[strconv.Itoa(c.ID)]) / n
		t.Logf("weight %d%%: %.2f%% of %d new connections (%v)", weight, got, n, counts)
		if math.Abs(got-float64(weight)) > 2 {
			t.Errorf("weight %d%%: the new generation got %.2f%% of new connections", weight, got)
		}
		st := h.status()
		reported := h.gen(st, c.ID)
		if math.Abs(reported.Share-got) > 0.5 || reported.ShareEstimated {
			t.Errorf("weight %d%%: status says %.2f%% (estimated %v), clients saw %.2f%%", weight, reported.Share, reported.ShareEstimated, got)
		}
		if serving := h.gen(st, st.Serving); serving.Weight != 100-weight {
			t.Errorf("serving generation's target weight %d, want %d", serving.Weight, 100-weight)
		}
		if err := h.sup.Promote(h.ctx, false); err != nil {
			t.Fatalf("promote at step %d: %v", i+1, err)
		}
	}
	if err := waitUpgrade(t, done); err != nil {
		t.Fatal(err)
	}
	st := h.settled()
	if g := h.gen(st, st.Serving); len(g.PIDs) != 2 || g.Weight != 100 {
		t.Errorf("after the canary: %+v, want 2 processes at 100%%", g)
	}
	if err := h.sup.Promote(h.ctx, false); !errors.Is(err, supervisor.ErrNoCanary) {
		t.Errorf("promote with nothing in progress: %v, want ErrNoCanary", err)
	}
}

// canaryUnderLoad runs a canary 10% -> 50% -> 100% (pauses of 400 ms) of
// a 2-instance service under load and returns the load's totals; the new
// version must be the only one answering afterwards.
func canaryUnderLoad(t *testing.T, steering string) loadgen.Result {
	canary := `strategy = "canary"` + "\n" + `steps = [{ weight = 10, pause = "400ms" }, { weight = 50, pause = "400ms" }]`
	h := start(t, app{Version: "v1", Instances: 2, Steering: steering})
	events, cancel := h.sup.Subscribe(256)
	defer cancel()
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	for round := 2; round <= 3; round++ {
		v := "v" + strconv.Itoa(round)
		if err := waitUpgrade(t, h.upgradeAsync(app{Version: v, Instances: 2, Steering: steering, Upgrade: canary})); err != nil {
			t.Fatal(err)
		}
		waitSent(t, load, load.Snapshot().Sent+100)
	}
	st := h.settled()
	res := load.Stop()
	counts := fresh(t, h.url, 200, 4)
	if counts[strconv.Itoa(st.Serving)] != 200 {
		t.Errorf("after the canaries, answers by generation %v; want all from %d", counts, st.Serving)
	}
	var weights []string
	for len(events) > 0 {
		if ev := <-events; ev.Kind == supervisor.EventStep {
			weights = append(weights, strconv.Itoa(ev.Weight))
		}
	}
	if got := strings.Join(weights, " "); got != "10 50 10 50" {
		t.Errorf("step events' weights %q, want \"10 50 10 50\"", got)
	}
	return res
}

// TestCanaryUnderLoad: two canaries, 10% -> 50% -> 100%, lose no request.
func TestCanaryUnderLoad(t *testing.T) {
	res := canaryUnderLoad(t, "bpf")
	noFailures(t, res)
}

// TestCanaryUnderLoadShared: the same in shared mode, where the weights are
// approximated by instance counts. One socket shared by every process
// loses a request now and then (an old process told to stop while it still
// accepts, see the notes); none may be refused.
func TestCanaryUnderLoadShared(t *testing.T) {
	res := canaryUnderLoad(t, "shared")
	sharedLoss(t, res)
}

// TestCanarySharedApproximatesByInstances: in shared mode a canary step
// runs as many new instances as approximate its weight beside the old ones,
// and status says the share is an estimate.
func TestCanarySharedApproximatesByInstances(t *testing.T) {
	canary := `strategy = "canary"` + "\n" + `steps = [{ weight = 10 }, { weight = 50 }]`
	h := start(t, app{Version: "v1", Instances: 2, Steering: "shared"})
	done := h.upgradeAsync(app{Version: "v2", Instances: 2, Steering: "shared", Upgrade: canary})
	// 10% of 2 old instances rounds to no new one: at least one runs, a third of the processes.
	c := h.waitWeight(10)
	if len(c.PIDs) != 1 || !c.ShareEstimated || math.Abs(c.Share-100.0/3) > 0.01 {
		t.Errorf("at 10%%: %d new processes, share %.1f%% (estimated %v); want 1, 33.3%%, estimated", len(c.PIDs), c.Share, c.ShareEstimated)
	}
	if err := h.sup.Promote(h.ctx, false); err != nil {
		t.Fatal(err)
	}
	c = h.waitWeight(50)
	if len(c.PIDs) != 2 || math.Abs(c.Share-50) > 0.01 {
		t.Errorf("at 50%%: %d new processes, share %.1f%%; want 2, 50%%", len(c.PIDs), c.Share)
	}
	counts := fresh(t, h.url, 400, 8)
	if len(counts) != 2 {
		t.Errorf("at 50%% in shared mode, answers by generation %v: want both", counts)
	}
	if err := h.sup.Promote(h.ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := waitUpgrade(t, done); err != nil {
		t.Fatal(err)
	}
	if st := h.settled(); len(h.gen(st, st.Serving).PIDs) != 2 {
		t.Errorf("after promotion: %+v, want 2 processes", h.gen(st, st.Serving))
	}
}

// abortUnderLoad aborts a canary holding at 50% under load: the upgrade
// fails with the reason, the old generation is the only one left, and it
// alone answers.
func abortUnderLoad(t *testing.T, steering string) loadgen.Result {
	canary := `strategy = "canary"` + "\n" + `steps = [{ weight = 50 }]`
	h := start(t, app{Version: "v1", Instances: 2, Steering: steering})
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	done := h.upgradeAsync(app{Version: "v2", Instances: 2, Steering: steering, Upgrade: canary})
	c := h.waitWeight(50)
	waitSent(t, load, load.Snapshot().Sent+300)
	if counts := fresh(t, h.url, 200, 4); counts[strconv.Itoa(c.ID)] == 0 {
		t.Errorf("at 50%% the new generation answered none of 200 fresh requests: %v", counts)
	}
	if err := h.sup.Abort(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitUpgrade(t, done); !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "abort") {
		t.Errorf("upgrade after abort: %v, want ErrUpgradeFailed saying it was aborted", err)
	}
	st := h.settled()
	if st.Serving != 1 {
		t.Errorf("serving generation %d after abort, want 1", st.Serving)
	}
	waitSent(t, load, load.Snapshot().Sent+100)
	res := load.Stop()
	if counts := fresh(t, h.url, 300, 4); counts["1"] != 300 {
		t.Errorf("after abort, answers by generation %v; want all from 1", counts)
	}
	if err := h.sup.Abort(h.ctx); !errors.Is(err, supervisor.ErrNoCanary) {
		t.Errorf("abort with nothing in progress: %v, want ErrNoCanary", err)
	}
	return res
}

// TestAbortUnderLoad: abort in the middle of a canary loses no request.
func TestAbortUnderLoad(t *testing.T) {
	res := abortUnderLoad(t, "bpf")
	noFailures(t, res)
}

// TestAbortUnderLoadShared: the same in shared mode; nothing refused.
func TestAbortUnderLoadShared(t *testing.T) {
	res := abortUnderLoad(t, "shared")
	sharedLoss(t, res)
}

// rollingUnderLoad runs two rolling updates of 4 instances under load,
// checking all along that there is never more than one process beyond the
// 4 and that each update ends with 4 new instances.
func rollingUnderLoad(t *testing.T, steering string) loadgen.Result {
	h := start(t, app{Version: "v1", Instances: 4, Steering: steering})
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)

	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() { // samples the process count while the updates run
		n := 0
		for {
			select {
			case <-stop:
				most <- n
				return
			case <-time.After(2 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
			st, err := h.sup.Status(ctx)
			cancel()
			if err != nil {
				continue
			}
			procs := 0
			for _, g := range st.Generations {
				procs += len(g.PIDs)
			}
			n = max(n, procs)
		}
	}()
	for round := 2; round <= 3; round++ {
		a := app{Version: "v" + strconv.Itoa(round), Instances: 4, Steering: steering, Upgrade: `strategy = "rolling"`}
		gen, err := h.upgrade(a)
		if err != nil {
			t.Fatal(err)
		}
		st := h.settled()
		if g := h.gen(st, gen); len(g.PIDs) != 4 || st.Serving != gen {
			t.Errorf("after rolling update %d: %+v, want generation %d with 4 processes", round-1, g, gen)
		}
		waitSent(t, load, load.Snapshot().Sent+100)
	}
	close(stop)
	if n := <-most; n > 5 {
		t.Errorf("%d processes at once during a rolling update of 4 instances, want at most 5", n)
	}
	return load.Stop()
}

// TestRollingUnderLoad: instances are replaced one at a time with no
// request lost.
func TestRollingUnderLoad(t *testing.T) {
	res := rollingUnderLoad(t, "bpf")
	noFailures(t, res)
}

// TestRollingUnderLoadShared: the same in shared mode; nothing refused.
func TestRollingUnderLoadShared(t *testing.T) {
	res := rollingUnderLoad(t, "shared")
	sharedLoss(t, res)
}

// TestRollingFailureRestoresOld: a rolling update whose second new instance
// never gets ready is undone: the old generation gets its replaced
// instance back before the new one drains, and serves alone with all 3.
func TestRollingFailureRestoresOld(t *testing.T) {
	h := start(t, app{Version: "v1", Instances: 3})
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	// Instance 0 of the new generation is ready at once; instance 1 never.
	broken := app{Version: "v2", Instances: 3, Upgrade: `strategy = "rolling"`,
		Readiness: `check = "exec"` + "\ntimeout = \"2s\"\n" + `command = ["/bin/sh", "-c", "test \"$BATON_INSTANCE\" = 0"]` + "\ninterval = \"50ms\""}
	_, err := h.upgrade(broken)
	if !errors.Is(err, supervisor.ErrUpgradeFailed) || !strings.Contains(err.Error(), "instance 1") {
		t.Fatalf("upgrade: %v, want a failure naming instance 1", err)
	}
	st := h.settled()
	if g := h.gen(st, 1); st.Serving != 1 || len(g.PIDs) != 3 || !g.Ready {
		t.Errorf("after the failed rolling update: serving %d, %+v; want generation 1 with 3 ready processes", st.Serving, g)
	}
	waitSent(t, load, load.Snapshot().Sent+100)
	res := load.Stop()
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
	if counts := fresh(t, h.url, 300, 4); counts["1"] != 300 {
		t.Errorf("answers by generation %v; want all from 1", counts)
	}
}

// TestAbortMigratesQueuedConnections: a canary that holds its sockets but
// never accepts is aborted while connections wait in its queues. Its
// sockets close after the drain timeout, and the kernel moves every waiting
// connection to the old generation: none is lost.
func TestAbortMigratesQueuedConnections(t *testing.T) {
	h := start(t, app{Version: "v1"})
	stuck := app{Version: "v2", Env: map[string]string{"APP_NO_ACCEPT": "1"}, Drain: `timeout = "1s"`,
		Upgrade: `strategy = "canary"` + "\n" + `steps = [{ weight = 50 }]`}
	done := h.upgradeAsync(stuck)
	h.waitWeight(50)
	results := make(chan map[string]int, 1)
	go func() { results <- fresh(t, h.url, 200, 200) }() // half of them wait in the canary's queue
	// Wait until connections sit in the canary's queue (it never accepts).
	h.waitFor("connections queued in the canary", func(st supervisor.Status) bool {
		return h.gen(st, st.Candidate).Connections >= 50
	})
	if err := h.sup.Abort(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitUpgrade(t, done); !errors.Is(err, supervisor.ErrUpgradeFailed) {
		t.Errorf("upgrade after abort: %v", err)
	}
	select {
	case counts := <-results:
		if counts["1"] != 200 {
			t.Errorf("answers by generation %v; want all 200 from 1", counts)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("queued requests not answered within 30 s")
	}
	h.settled()
	// The canary's sockets were closed with connections still queued.
	if !strings.Contains(h.logs.String(), "accept queue did not empty in time") {
		t.Errorf("the canary's queues were empty when its sockets closed: the test proved nothing")
	}
}

// TestCrashedInstanceKeepsItsSlot: an instance killed outright is restarted
// into its own sockets: connections that arrive for it meanwhile wait in
// its queue instead of being refused, the other instances keep their
// processes, and afterwards all three share new connections evenly.
func TestCrashedInstanceKeepsItsSlot(t *testing.T) {
	h := start(t, app{Version: "v1", Instances: 3})
	before := h.gen(h.status(), 1)
	victim := before.Instances[1]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	counts := fresh(t, h.url, 300, 8) // every one must succeed, crash or not
	st := h.waitFor("instance 1 restarted", func(st supervisor.Status) bool {
		g := h.gen(st, 1)
		return len(g.Instances) == 3 && g.Instances[1].PID != victim.PID && g.Instances[1].Ready
	})
	after := h.gen(st, 1)
	for _, i := range []int{0, 2} {
		if after.Instances[i].PID != before.Instances[i].PID {
			t.Errorf("instance %d changed process (%d -> %d) though only instance 1 crashed", i, before.Instances[i].PID, after.Instances[i].PID)
		}
	}
	if after.Instances[1].Restarts != 1 || !after.Instances[1].Routed {
		t.Errorf("restarted instance: %+v, want 1 restart, routed", after.Instances[1])
	}
	t.Logf("during the crash: %v", counts)
	byPID := map[int]int{}
	for range 3000 / 100 {
		for _, body := range freshBodies(t, h.url, 100, 8) {
			f := strings.Fields(body) // hello from generation G pid P (version V)
			pid, _ := strconv.Atoi(f[5])
			byPID[pid]++
		}
	}
	for _, in := range after.Instances {
		if share := float64(byPID[in.PID]) / 3000; share < 0.25 || share > 0.42 {
			t.Errorf("instance %d (pid %d) got %.1f%% of new connections, want about a third: %v", in.Index, in.PID, 100*share, byPID)
		}
	}
}

func get(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// TestGivenUpInstanceLeavesTheRouting: with no restarts allowed, an
// instance that crashes is taken out of the steering and the others take
// its share; the service gives up only with its last instance.
func TestGivenUpInstanceLeavesTheRouting(t *testing.T) {
	h := start(t, app{Version: "v1", Instances: 2, Restart: "max_tries = 0"})
	first := h.gen(h.status(), 1)
	if err := syscall.Kill(first.Instances[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitFor("instance 1 gone", func(st supervisor.Status) bool { return len(h.gen(st, 1).Instances) == 1 })
	byPID := map[int]int{}
	for _, body := range freshBodies(t, h.url, 300, 8) {
		pid, _ := strconv.Atoi(strings.Fields(body)[5])
		byPID[pid]++
	}
	if byPID[first.Instances[0].PID] != 300 {
		t.Errorf("after instance 1 gave up, answers by pid %v; want all 300 from instance 0 (pid %d)", byPID, first.Instances[0].PID)
	}
	if err := syscall.Kill(first.Instances[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.done:
		h.done <- err
		if !errors.Is(err, supervisor.ErrGaveUp) {
			t.Errorf("Run: %v, want ErrGaveUp", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("baton did not give up after its last instance did")
	}
}
