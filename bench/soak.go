//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Soak: many upgrades back to back (examples/hello, one instance, kernel
// steering, a light load throughout), each asked for over the control
// socket with "wait" (it returns once the replaced generation has
// retired), the next one at once. baton's fds (/proc/PID/fd), goroutines
// (go_goroutines from its own metrics endpoint), threads and RSS
// (/proc/PID/status) are sampled after a few warm-up upgrades ("start")
// and after the last one, once settled ("end"): fds and goroutines must be
// exactly the same, RSS within soakRSSMargin. Anything baton kept per
// upgrade (a socket, a pidfd, a goroutine, a subscription) would show as
// a difference of about the number of upgrades.

const (
	soakWarmup    = 10               // upgrades before the "start" sample
	soakRSSMargin = 2 << 20          // end RSS may exceed start RSS by this much (heap growth, GC timing)
	soakSettle    = 10 * time.Second // longest wait for fds and goroutines to come back after the last upgrade
	soakGrace     = "10ms"           // [drain] grace: the old generation's stop follows at once
	soakTimeout   = 30 * time.Second // per upgrade
	soakSamples   = 10               // trend samples during the run
	soakClients   = 4                // light load, half fresh connections, half keep-alive
	soakIdleCheck = 500 * time.Millisecond
	soakScrapes   = 20 // per settled sample
)

type soakSample struct {
	label      string
	upgrades   int // done when sampled
	goroutines int
	procSample
}

type soakResult struct {
	upgrades  int             // done, warm-up excluded
	durations []time.Duration // each upgrade: request sent until the answer
	samples   []soakSample    // before any upgrade, start, trend..., end
	load      loadResult
	wall      time.Duration
	err       error
}

func (r *soakResult) sample(label string) (soakSample, bool) {
	for _, s := range r.samples {
		if s.label == label {
			return s, true
		}
	}
	return soakSample{}, false
}

// verdict compares end with start: "" if they are equal (RSS within the
// margin), else what differs.
func (r *soakResult) verdict() string {
	start, ok1 := r.sample("start")
	end, ok2 := r.sample("end")
	if !ok1 || !ok2 {
		return "not measured"
	}
	var diffs []string
	if end.fds != start.fds {
		diffs = append(diffs, fmt.Sprintf("fds %d → %d", start.fds, end.fds))
	}
	if end.goroutines != start.goroutines {
		diffs = append(diffs, fmt.Sprintf("goroutines %d → %d", start.goroutines, end.goroutines))
	}
	if end.rss > start.rss+soakRSSMargin {
		diffs = append(diffs, fmt.Sprintf("RSS %s → %s", mib(start.rss), mib(end.rss)))
	}
	return strings.Join(diffs, ", ")
}

func runSoak(ctx context.Context, o options) (r soakResult) {
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	metricsAddr, err := freeAddr()
	if err != nil {
		r.err = err
		return r
	}
	b := &batonTarget{batonBin: o.baton, dir: dir, steering: "bpf"}
	b.content = fmt.Sprintf(`[service]
name = "bench-soak"
command = [%q]

[[listener]]
name = "http"
address = "127.0.0.1:0"

[readiness]
timeout = "10s"

[upgrade]
steering = "bpf"

[drain]
timeout = "30s"
grace = %q

[metrics]
address = %q

[control]
socket = %q
`, o.hello, soakGrace, metricsAddr, b.controlPath())
	defer func() {
		if err := b.stop(); err != nil && r.err == nil {
			r.err = err
		}
		if r.err != nil {
			if l := b.log(); l != "" {
				fmt.Fprintf(os.Stderr, "soak: baton's log (last 4000 bytes):\n%s", l[max(0, len(l)-4000):])
			}
		}
	}()
	addr, err := b.start()
	if err != nil {
		r.err = fmt.Errorf("start: %w", err)
		return r
	}
	pid, sock := b.cmd.Process.Pid, b.controlPath()
	// take samples baton. A scrape of the metrics endpoint is itself
	// work for baton: while it is served, baton holds its connection (an
	// fd) and runs a goroutine or three for it (the connection's, and the
	// registry gathers its collectors on goroutines of their own, some
	// still running when go_goroutines is read). So a settled sample
	// (before, start, end) counts the fds first, once the last scrape is
	// long over; then scrapes the goroutine count soakScrapes times, 50 ms
	// apart, and keeps the most frequent value (the lowest of a tie); and
	// reads RSS last, so that every settled sample sees baton just after
	// the same work of its metrics endpoint (a scrape allocates, and the
	// Go heap keeps what it grew to for a while). A leak of one goroutine
	// or fd per upgrade would show as hundreds.
	take := func(label string, upgrades int, settled bool) (soakSample, error) {
		s := soakSample{label: label, upgrades: upgrades}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return s, err
		}
		n := 1
		if settled {
			n = soakScrapes
		}
		counts := map[int]int{}
		for i := range n {
			if i > 0 {
				pause(ctx, 50*time.Millisecond)
			}
			g, err := goroutines(ctx, metricsAddr)
			if err != nil {
				return s, err
			}
			counts[g]++
			if c := counts[g]; i == 0 || c > counts[s.goroutines] || (c == counts[s.goroutines] && g < s.goroutines) {
				s.goroutines = g
			}
		}
		if s.procSample, err = sampleProc(pid); err != nil {
			return s, err
		}
		s.fds = len(fds) // as counted before the scrapes
		return s, nil
	}
	pause(ctx, soakIdleCheck)
	before, err := take("before any upgrade", 0, true)
	if err != nil {
		r.err = err
		return r
	}
	r.samples = append(r.samples, before)

	l := startLoad(ctx, loadOptions{URL: "http://" + addr + "/", Clients: soakClients})
	defer func() {
		r.load = l.stop()
		if r.load.Failed > 0 && r.err == nil {
			r.err = fmt.Errorf("%d of %d requests failed during the upgrades: %s", r.load.Failed, r.load.Sent, errorString(r.load.Errors))
		}
	}()
	upgrade := func() (time.Duration, error) {
		t0 := time.Now()
		_, err := ctlUpgrade(ctx, sock, soakTimeout)
		return time.Since(t0), err
	}
	for i := range soakWarmup {
		if _, err := upgrade(); err != nil {
			r.err = fmt.Errorf("warm-up upgrade %d: %w", i+1, err)
			return r
		}
	}
	pause(ctx, soakIdleCheck)
	start, err := take("start", 0, true)
	if err != nil {
		r.err = err
		return r
	}
	r.samples = append(r.samples, start)
	every := max(1, o.soakUpgrades/soakSamples)
	began := time.Now()
	for i := range o.soakUpgrades {
		if ctx.Err() != nil {
			r.err = ctx.Err()
			return r
		}
		d, err := upgrade()
		if err != nil {
			r.err = fmt.Errorf("upgrade %d: %w", i+1, err)
			return r
		}
		r.durations = append(r.durations, d)
		r.upgrades++
		if (i+1)%every == 0 && i+1 < o.soakUpgrades {
			s, err := take(fmt.Sprintf("after %d", i+1), i+1, false)
			if err != nil {
				r.err = err
				return r
			}
			r.samples = append(r.samples, s)
			fmt.Printf("  soak: %4d upgrades, baton %d fds, %d goroutines, %d threads, %s\n", i+1, s.fds, s.goroutines, s.threads, mib(s.rss))
		}
	}
	r.wall = time.Since(began)
	// Settle: whatever the last upgrade still holds (its control
	// connection, the old process's pidfd) goes within moments.
	var end soakSample
	for deadline := time.Now().Add(soakSettle); ; {
		pause(ctx, soakIdleCheck)
		if end, err = take("end", r.upgrades, true); err != nil {
			r.err = err
			return r
		}
		if (end.fds == start.fds && end.goroutines == start.goroutines) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
	}
	r.samples = append(r.samples, end)
	fmt.Printf("  soak: %d upgrades in %v; start → end: %d → %d fds, %d → %d goroutines, %s → %s RSS\n", r.upgrades, r.wall.Round(time.Second),
		start.fds, end.fds, start.goroutines, end.goroutines, mib(start.rss), mib(end.rss))
	if v := r.verdict(); v != "" {
		r.err = fmt.Errorf("baton after %d upgrades differs from before them: %s", r.upgrades, v)
	}
	return r
}

// freeAddr is a free TCP address on loopback, for a listener that must
// have a port of its own (baton's metrics endpoint refuses port 0).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// goroutines scrapes go_goroutines from baton's metrics endpoint.
func goroutines(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(n), err
		}
	}
	return 0, fmt.Errorf("metrics: no go_goroutines in %d bytes", len(body))
}

// soakStats are the median, p99 and max of the upgrade durations, and the
// medians of the first and last tenth (a slowdown would show there).
func soakStats(ds []time.Duration) (med, p99, mx, first, last time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	tenth := max(1, len(ds)/10)
	return quantile(s, 0.5), quantile(s, 0.99), s[len(s)-1], medianD(ds[:tenth]), medianD(ds[len(ds)-tenth:])
}
