//go:build linux

package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// This is loadgen's client loop (same clients, same mix, same counting:
// every request started is counted once, as a success or a failure) with
// one addition loadgen does not have: the latency of every successful
// request. Each request is loadgen.Get, and failures are named by
// loadgen.Reason, so both loads judge answers alike. The loop lives here
// rather than in loadgen so that the load the tests and the demo share
// stays as it is.

const (
	requestTimeout = 10 * time.Second      // per request, connecting and reading the body included
	failurePause   = 10 * time.Millisecond // after a failure, as loadgen: a dead server costs failures per second, not a busy loop
)

// loadOptions describes a load: see loadgen.Options.
type loadOptions struct {
	URL       string
	Clients   int // even-numbered clients open a fresh connection per request, odd ones keep one alive
	SlowEvery int // every Nth request of a client goes to /slow?ms=SlowMS
	SlowMS    int
	Conns     string // "" as above; "keepalive" or "fresh": every client alike
	Record    bool   // keep every request as a sample (loadResult.Samples)
}

// loadResult is loadgen.Result plus the latencies of successful requests,
// fast (/) and slow (/slow) apart, each sorted, and, if asked for, every
// request in the order they started.
type loadResult struct {
	loadgen.Result
	Fast, Slow []time.Duration
	Samples    []sample
}

// sample is one request as its client saw it: when it was sent, how long
// until the whole answer was in (or the failure), and who answered.
type sample struct {
	start   time.Time
	latency time.Duration
	gen     string // the generation named in the answer; "" if it failed
	slow    bool   // a /slow request
	failed  bool
}

// client is one client's own tally; only its goroutine touches it until
// the load has stopped.
type client struct {
	sent, failed int64
	errors       map[string]int64
	gens         map[string]int64
	fast, slow   []time.Duration
	samples      []sample
}

type load struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	clients    []*client
	transports []*http.Transport
}

func startLoad(ctx context.Context, o loadOptions) *load {
	base := strings.TrimSuffix(o.URL, "/")
	root, slow := base+"/", fmt.Sprintf("%s/slow?ms=%d", base, o.SlowMS)
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for i := range o.Clients {
		fresh := i%2 == 0
		switch o.Conns {
		case "keepalive":
			fresh = false
		case "fresh":
			fresh = true
		}
		tr := &http.Transport{Proxy: nil, DisableKeepAlives: fresh, MaxIdleConnsPerHost: 1}
		c := &client{errors: map[string]int64{}, gens: map[string]int64{}}
		l.transports = append(l.transports, tr)
		l.clients = append(l.clients, c)
		hc := &http.Client{Transport: tr}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 1; ctx.Err() == nil; n++ {
				url, isSlow := root, o.SlowEvery > 0 && n%o.SlowEvery == 0
				if isSlow {
					url = slow
				}
				// A request outlives the load's context: stopping must not
				// turn requests in flight into failures.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
				t0 := time.Now()
				gen, err := loadgen.Get(rctx, hc, url)
				d := time.Since(t0)
				rcancel()
				c.sent++
				if o.Record {
					c.samples = append(c.samples, sample{start: t0, latency: d, gen: gen, slow: isSlow, failed: err != nil})
				}
				if err != nil {
					c.failed++
					c.errors[loadgen.Reason(err)]++
					select {
					case <-ctx.Done():
					case <-time.After(failurePause):
					}
					continue
				}
				c.gens[gen]++
				if isSlow {
					c.slow = append(c.slow, d)
				} else {
					c.fast = append(c.fast, d)
				}
			}
		}()
	}
	return l
}

// stop stops sending, waits for the requests in flight (each bounded by
// requestTimeout) and returns the totals.
func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
	r := loadResult{Result: loadgen.Result{Errors: map[string]int64{}, Generations: map[string]int64{}}}
	for _, c := range l.clients {
		r.Sent += c.sent
		r.Failed += c.failed
		for k, v := range c.errors {
			r.Errors[k] += v
		}
		for k, v := range c.gens {
			r.Generations[k] += v
		}
		r.Fast = append(r.Fast, c.fast...)
		r.Slow = append(r.Slow, c.slow...)
		r.Samples = append(r.Samples, c.samples...)
	}
	slices.Sort(r.Fast)
	slices.Sort(r.Slow)
	slices.SortFunc(r.Samples, func(a, b sample) int { return a.start.Compare(b.start) })
	return r
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
