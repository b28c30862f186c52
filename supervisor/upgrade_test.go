//go:build linux

package supervisor_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
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
