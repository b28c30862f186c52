//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// Scale: one generation of many instances (`[service] instances`), each
// handed many TCP listeners, all kernel-steered: baton holds a socket per
// instance per listener (instances × listeners of them per generation,
// twice that during a blue-green upgrade). The service is
// tests/faults/faultapp, which serves every socket passed to it (hello
// serves one). Measured: the time until every instance of the first
// generation is ready, one blue-green and one rolling upgrade (each under a
// light load on two of the listeners, every listener checked to answer from
// the new generation afterwards), and baton's RSS and fd count when it
// idles and at their peak during each upgrade.

type scaleResult struct {
	instances, listeners int
	startReady           time.Duration // baton started (harness) until the last instance's "process ready" line arrived
	slowestReady         time.Duration // status time_to_ready_ms: the slowest instance, from its own start
	steady               procSample    // generation 1 serving, settled
	upgrades             []scaleUpgrade
	load                 loadResult
	err                  error
}

type scaleUpgrade struct {
	strategy        string
	promoted, total time.Duration // request sent until "promoted"; until the answer (the replaced generation retired)
	lastReady       time.Duration // request sent until the last instance's "ready"
	peak, after     procSample    // peak during the upgrade; settled after it
}

// procSample is a process's fd count, resident memory and threads.
type procSample struct {
	fds     int
	rss     int64
	threads int
}

func sampleProc(pid int) (procSample, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return procSample{}, err
	}
	st, err := procStatus(pid)
	if err != nil {
		return procSample{}, err
	}
	return procSample{fds: len(fds), rss: st["VmRSS"], threads: int(st["Threads"])}, nil
}

// peakSampler samples a process every 10 ms until stopped, keeping the
// highest fd count and RSS.
type peakSampler struct {
	stop func() procSample
}

func samplePeak(pid int) *peakSampler {
	var mu sync.Mutex
	var peak procSample
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if s, err := sampleProc(pid); err == nil {
				mu.Lock()
				peak.fds, peak.rss, peak.threads = max(peak.fds, s.fds), max(peak.rss, s.rss), max(peak.threads, s.threads)
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return &peakSampler{stop: func() procSample {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return peak
	}}
}

func scaleConfig(o options, dir, version, strategy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[service]
name = "bench-scale"
command = [%q]
environment = { GREETING_VERSION = %q }
instances = %d

[readiness]
timeout = "120s"

[upgrade]
steering = "bpf"
strategy = %q

[drain]
timeout = "30s"

[control]
socket = %q
`, o.app, version, o.scaleInstances, strategy, (&batonTarget{dir: dir}).controlPath())
	for i := range o.scaleListeners {
		fmt.Fprintf(&b, "\n[[listener]]\nname = \"l%d\"\naddress = \"127.0.0.1:0\"\n", i)
	}
	return b.String()
}

func runScale(ctx context.Context, o options) (r scaleResult) {
	r = scaleResult{instances: o.scaleInstances, listeners: o.scaleListeners}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	b := &batonTarget{batonBin: o.baton, dir: dir, steering: "bpf", content: scaleConfig(o, dir, "1", "blue-green")}
	defer func() {
		if err := b.stop(); err != nil && r.err == nil {
			r.err = err
		}
		if r.err != nil {
			if l := b.log(); l != "" {
				fmt.Fprintf(os.Stderr, "scale: baton's log:\n%s", l)
			}
		}
	}()
	t0 := time.Now()
	if _, err := b.start(); err != nil { // the first instance's "process ready"
		r.err = fmt.Errorf("start: %w", err)
		return r
	}
	for range o.scaleInstances - 1 {
		if _, err := b.waitLog("process ready", 1, 120*time.Second); err != nil {
			r.err = err
			return r
		}
	}
	r.startReady = time.Since(t0)
	sock, pid := b.controlPath(), b.cmd.Process.Pid
	st, err := getStatus(ctx, sock)
	if err != nil {
		r.err = err
		return r
	}
	if len(st.Generations) != 1 || !st.Generations[0].Ready || len(st.Generations[0].PIDs) != o.scaleInstances {
		r.err = fmt.Errorf("generation 1 after every instance was ready: %+v", st.Generations)
		return r
	}
	r.slowestReady = time.Duration(st.Generations[0].TimeToReadyMS) * time.Millisecond
	var addrs []string
	for _, l := range st.Listeners {
		if l.Mode != "steered" {
			r.err = fmt.Errorf("listener %s is %s, want steered", l.Name, l.Mode)
			return r
		}
		addrs = append(addrs, l.Address)
	}
	if err := answeredBy(ctx, addrs, 1); err != nil {
		r.err = err
		return r
	}
	pause(ctx, 500*time.Millisecond)
	if r.steady, err = sampleProc(pid); err != nil {
		r.err = err
		return r
	}
	fmt.Printf("  scale: %d instances × %d listeners ready %v after baton started; baton %d fds, %s\n",
		o.scaleInstances, o.scaleListeners, r.startReady.Round(time.Millisecond), r.steady.fds, mib(r.steady.rss))

	// A light load on the first and the last listener: every request must
	// succeed across both upgrades.
	loads := []*load{
		startLoad(ctx, loadOptions{URL: "http://" + addrs[0] + "/", Clients: 4}),
		startLoad(ctx, loadOptions{URL: "http://" + addrs[len(addrs)-1] + "/", Clients: 4}),
	}
	defer func() {
		for _, l := range loads {
			res := l.stop()
			r.load.Sent += res.Sent
			r.load.Failed += res.Failed
			if r.load.Errors == nil {
				r.load.Errors = map[string]int64{}
			}
			for k, v := range res.Errors {
				r.load.Errors[k] += v
			}
		}
		if r.load.Failed > 0 && r.err == nil {
			r.err = fmt.Errorf("%d of %d requests failed during the upgrades: %s", r.load.Failed, r.load.Sent, errorString(r.load.Errors))
		}
	}()
	pause(ctx, 500*time.Millisecond)
	for i, strategy := range []string{"blue-green", "rolling"} {
		gen := i + 2
		if err := os.WriteFile(b.configPath(), []byte(scaleConfig(o, dir, fmt.Sprint(gen), strategy)), 0o644); err != nil {
			r.err = err
			return r
		}
		u := scaleUpgrade{strategy: strategy}
		peak := samplePeak(pid)
		t0 := time.Now()
		events, err := ctlUpgrade(ctx, sock, 10*time.Minute)
		u.total = time.Since(t0)
		u.peak = peak.stop()
		if err != nil {
			r.err = fmt.Errorf("%s upgrade: %w", strategy, err)
			return r
		}
		if e, ok := firstEvent(events, "promoted", gen); ok {
			u.promoted = e.arrived.Sub(t0)
		}
		if e, ok := lastEvent(events, "ready", gen); ok {
			u.lastReady = e.arrived.Sub(t0)
		}
		if err := answeredBy(ctx, addrs, gen); err != nil {
			r.err = fmt.Errorf("after the %s upgrade: %w", strategy, err)
			return r
		}
		pause(ctx, 500*time.Millisecond)
		if u.after, err = sampleProc(pid); err != nil {
			r.err = err
			return r
		}
		r.upgrades = append(r.upgrades, u)
		fmt.Printf("  scale: %s upgrade of %d instances: promoted after %v, done (old generation retired) after %v; baton peak %d fds, %s\n",
			strategy, o.scaleInstances, u.promoted.Round(time.Millisecond), u.total.Round(time.Millisecond), u.peak.fds, mib(u.peak.rss))
	}
	return r
}

// answeredBy checks that every address answers from generation gen.
func answeredBy(ctx context.Context, addrs []string, gen int) error {
	want := fmt.Sprint(gen)
	var errs []error
	for _, a := range addrs {
		if _, err := loadgen.WaitFor(ctx, "http://"+a+"/", func(body string) bool { return loadgen.Generation(body) == want }, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
