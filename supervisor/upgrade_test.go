//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

// loadOptions: 16 clients, half on fresh connections, every 10th request of
// a client slow enough (150 ms) to be in flight while its process drains.
func loadOptions(url string) loadgen.Options {
	return loadgen.Options{URL: url, Clients: 16, SlowEvery: 10, SlowMS: 150, Timeout: 10 * time.Second}
}

// upgradesUnderLoad runs n upgrades while 16 clients keep the service busy
// and returns the load's totals. It fails the test if an upgrade fails or
// the last version does not serve at the end.
func upgradesUnderLoad(t testing.TB, h *harness, a app, n int) loadgen.Result {
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	// Let the load reach full speed before the first upgrade.
	waitSent(t, load, 200)
	var last int
	for i := 1; i <= n; i++ {
		a.Version = "v" + strconv.Itoa(i+1)
		gen, err := h.upgrade(a)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
		last = gen
		// Keep traffic flowing across the drain of the old generation.
		waitSent(t, load, load.Snapshot().Sent+100)
	}
	h.settled()
	res := load.Stop()
	body, err := loadgen.WaitFor(context.Background(), h.url, func(string) bool { return true }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if g := loadgen.Generation(body); g != strconv.Itoa(last) {
		t.Errorf("after %d upgrades generation %s answers, want %d", n, g, last)
	}
	return res
}

// waitSent waits (bounded) until the load has sent at least n requests.
func waitSent(t testing.TB, load *loadgen.Load, n int64) {
	deadline := time.Now().Add(30 * time.Second)
	for load.Snapshot().Sent < n {
		if time.Now().After(deadline) {
			t.Fatalf("load stalled: %+v", load.Snapshot())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUpgradesUnderLoadSteered is the core promise: with kernel steering,
// 20 upgrades under load lose no request.
func TestUpgradesUnderLoadSteered(t *testing.T) {
	h := start(t, app{Version: "v1"})
	if st := h.status(); st.Listeners[0].Mode != "steered" {
		t.Fatalf("listener mode %q (%s), want steered", st.Listeners[0].Mode, st.Listeners[0].Why)
	}
	res := upgradesUnderLoad(t, h, app{}, 20)
	t.Logf("sent %d, failed %d, by generation %v", res.Sent, res.Failed, res.Generations)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
	if len(res.Generations) < 15 {
		t.Errorf("only %d generations answered during 20 upgrades: %v", len(res.Generations), res.Generations)
	}
}

// TestRollbackUnderLoad: a rollback starts a generation from the previous
// generation's config, through readiness, promotion and drain, losing no
// request; a second rollback goes forward again; events tell each step.
func TestRollbackUnderLoad(t *testing.T) {
	h := start(t, app{Version: "v1"})
	if _, err := h.sup.Rollback(h.ctx); !errors.Is(err, supervisor.ErrUpgradeFailed) {
		t.Fatalf("rollback with no previous generation: %v, want ErrUpgradeFailed", err)
	}
	events, cancel := h.sup.Subscribe(256)
	defer cancel()
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	if _, err := h.upgrade(app{Version: "v2"}); err != nil {
		t.Fatal(err)
	}
	waitSent(t, load, load.Snapshot().Sent+100)
	gen, err := h.sup.Rollback(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	version := func() string {
		body, err := loadgen.WaitFor(h.ctx, h.url, func(b string) bool { return strings.Contains(b, "generation "+strconv.Itoa(gen)+" ") }, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	if b := version(); !strings.Contains(b, "(version v1)") {
		t.Errorf("after rollback: %q, want version v1", b)
	}
	waitSent(t, load, load.Snapshot().Sent+100)
	if gen, err = h.sup.Rollback(h.ctx); err != nil {
		t.Fatal(err)
	}
	if b := version(); !strings.Contains(b, "(version v2)") {
		t.Errorf("after the second rollback: %q, want version v2", b)
	}
	h.settled()
	res := load.Stop()
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
	// Each generation's steps, in order (steps of different generations
	// interleave as timing has it).
	steps := map[int][]string{}
	for len(events) > 0 {
		ev := <-events
		steps[ev.Gen] = append(steps[ev.Gen], ev.Kind)
	}
	full := "spawned ready promoted draining stopping retired"
	for g, want := range map[int]string{2: full, 3: full, 4: "spawned ready promoted"} {
		if got := strings.Join(steps[g], " "); got != want {
			t.Errorf("generation %d: events %q, want %q", g, got, want)
		}
	}
}
