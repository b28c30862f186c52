//go:build linux

package faults_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// startLoad puts the address under load: 8 clients, half on a fresh
// connection per request, half keep-alive, every 10th request slow.
func startLoad(t *testing.T, addr string) *loadgen.Load {
	t.Helper()
	l := loadgen.Run(context.Background(), loadgen.Options{URL: "http://" + addr, Clients: 8, SlowEvery: 10, SlowMS: 50, Timeout: 15 * time.Second})
	t.Cleanup(func() { l.Stop() })
	waitSent(t, l, 50)
	return l
}

// waitSent waits (bounded) until the load has sent n requests in all.
func waitSent(t *testing.T, l *loadgen.Load, n int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); l.Snapshot().Sent < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("load stalled before %d requests: %+v", n, l.Snapshot())
		}
	}
}

// noFailures stops the load and checks that every request it sent
// succeeded, and that it sent some.
func noFailures(t *testing.T, l *loadgen.Load) loadgen.Result {
	t.Helper()
	r := l.Stop()
	t.Logf("load: sent %d, failed %d, by generation %v", r.Sent, r.Failed, r.Generations)
	if r.Failed != 0 || r.Sent == 0 {
		t.Errorf("sent %d, failed %d: %v; want none failed", r.Sent, r.Failed, r.Errors)
	}
	return r
}

// answeredBy waits (bounded) until the address answers from generation gen.
func answeredBy(t *testing.T, addr string, gen int) string {
	t.Helper()
	body, err := loadgen.WaitFor(context.Background(), "http://"+addr, func(body string) bool {
		return loadgen.Generation(body) == strconv.Itoa(gen)
	}, 10*time.Second)
	if err != nil {
		t.Fatalf("generation %d does not answer: %v", gen, err)
	}
	return body
}

// answer is one answer of the address (bounded).
func answer(addr string) (string, error) {
	return loadgen.WaitFor(context.Background(), "http://"+addr, func(string) bool { return true }, 10*time.Second)
}
