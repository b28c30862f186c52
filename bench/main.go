//go:build linux

// Command bench is what `make bench` runs: it measures, side by side in one
// run on loopback, what clients see while a service is upgraded N times
// under sustained load, for
//
//   - baton with kernel steering (the real bin/baton running examples/hello),
//   - baton in shared mode (every generation accepts on one socket, as
//     tableflip, einhorn and socketmaster do),
//   - tableflip: examples/flipper, the same service upgrading itself with
//     github.com/cloudflare/tableflip, no supervisor,
//   - a plain stop-then-start of the same hello binary (`systemctl restart`
//     of a service that binds its own port).
//
// Then baton at scale (one generation of 64 instances × 16 listeners:
// time to ready, a blue-green and a rolling upgrade, baton's fds and RSS)
// and over 1,000 upgrades back to back (baton's fds, goroutines and RSS at
// the start and the end must match).
//
// For each it counts requests sent and failed and the latency of the
// successful ones, compares the latency of requests that overlap an upgrade
// with that of the others, and for baton takes each upgrade's timeline from
// its JSON log. It prints tables and writes BENCHMARKS.md, with a picture
// of latency over a few upgrades next to it (bench-latency.svg).
//
// Every wait is bounded, and every process it starts runs in a process
// group of its own that is gone when it returns.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the parameters of a run; the report prints them.
type options struct {
	baton, hello, out string
	flipper, svg      string
	upgrades, clients int
	slowEvery, slowMS int
	interval, settle  time.Duration
	modes             []string
	svgUpgrades       int // upgrades in the latency picture

	ohRounds, ohClients int           // data-path overhead: rounds (0: skip), clients
	ohTime              time.Duration // per side per round
	ohFresh             bool          // also with a fresh connection per request
	footprint           bool
	idle                time.Duration // footprint: idle period for baton's CPU time

	app                            string // a service that serves every socket passed to it (tests/faults/faultapp)
	scaleInstances, scaleListeners int    // scale: instances × listeners (0 instances: skip)
	soakUpgrades                   int    // soak: upgrades back to back (0: skip)
}

// target is one way of running and upgrading hello.
type target interface {
	start() (addr string, err error) // generation 1 serving
	upgrade() error                  // the next generation serving
	stop() error                     // nothing left running
	log() string                     // for errors: what the target said, if anything
	windows() []window               // after stop: one per completed upgrade, in order
}

// window is one upgrade as the harness saw it: the signal (or the stop of
// the old process), the new generation serving, the old process gone (zero
// if unknown). Requests overlapping [signal, end()] are "during an upgrade".
type window struct {
	signal, ready, gone time.Time
	from, to            int // generations
}

// end is when the upgrade was over for clients: the old process gone and
// the new one serving, whichever came last (stop-then-start: the new one
// serving).
func (w window) end() time.Time {
	if w.gone.After(w.ready) {
		return w.gone
	}
	return w.ready
}

// modeResult is one row of the table.
type modeResult struct {
	mode, title string
	clients     int
	upgrades    int             // completed
	upgradeTime []time.Duration // per upgrade: signal (or stop) until the next generation serves, sorted
	wall        time.Duration   // the load's duration
	load        loadResult
	windows     []window       // per completed upgrade
	timeline    []upgradeSteps // baton only: each upgrade's steps from its log
	timelineErr error          // baton only: why there is no timeline, if there is none
	err         error          // why the mode ended early, if it did
}

var modeTitles = map[string]string{
	"steered":   "baton, kernel-steered",
	"shared":    "baton, shared socket",
	"tableflip": "tableflip",
	"restart":   "stop-then-start",
}

func main() {
	var o options
	flag.StringVar(&o.baton, "baton", "./bin/baton", "baton binary")
	flag.StringVar(&o.hello, "hello", "./bin/hello", "the example service (examples/hello)")
	flag.StringVar(&o.flipper, "flipper", "./bin/flipper", "the example service upgrading itself with tableflip (examples/flipper)")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write (\"\" for none)")
	flag.StringVar(&o.svg, "svg", "", "latency picture to write (default: bench-latency.svg next to -out; none if -out is \"\")")
	flag.IntVar(&o.upgrades, "upgrades", 20, "upgrades per mode")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients; half open a connection per request, half keep one alive")
	flag.IntVar(&o.slowEvery, "slow-every", 10, "every Nth request of a client is a slow one")
	flag.IntVar(&o.slowMS, "slow-ms", 100, "how long a slow request takes, in milliseconds")
	flag.DurationVar(&o.interval, "interval", time.Second, "load between one upgrade done and the next begun")
	flag.DurationVar(&o.settle, "settle", time.Second, "load before the first upgrade and after the last")
	flag.IntVar(&o.ohRounds, "overhead-rounds", 10, "data-path overhead: rounds of baton then hello alone (0 to skip)")
	flag.IntVar(&o.ohClients, "overhead-clients", 16, "data-path overhead: closed-loop clients, each sending GET / as fast as answers come")
	flag.DurationVar(&o.ohTime, "overhead-time", 3*time.Second, "data-path overhead: load per side per round")
	flag.BoolVar(&o.ohFresh, "overhead-fresh", true, "data-path overhead: also measure with a fresh connection per request")
	flag.IntVar(&o.svgUpgrades, "svg-upgrades", 2, "upgrades shown in the latency picture, from the middle of each mode's run")
	flag.BoolVar(&o.footprint, "footprint", true, "measure baton's footprint (RSS, idle CPU, binary size)")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "footprint: how long baton idles while its CPU time is measured")
	flag.StringVar(&o.app, "app", "./bin/faultapp", "scale: a service that serves every socket passed to it (tests/faults/faultapp)")
	flag.IntVar(&o.scaleInstances, "scale-instances", 64, "scale: instances of the generation (0 to skip)")
	flag.IntVar(&o.scaleListeners, "scale-listeners", 16, "scale: TCP listeners each instance is handed")
	flag.IntVar(&o.soakUpgrades, "soak-upgrades", 1000, "soak: upgrades back to back, after a warm-up (0 to skip)")
	modes := flag.String("modes", "steered,shared,tableflip,restart", "modes to run, comma-separated: steered, shared, tableflip, restart")
	flag.Parse()
	for _, m := range splitComma(*modes) {
		if modeTitles[m] == "" {
			fmt.Fprintf(os.Stderr, "bench: unknown mode %q (want steered, shared, tableflip or restart)\n", m)
			os.Exit(2)
		}
		o.modes = append(o.modes, m)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	var err error
	if o.baton, err = filepath.Abs(o.baton); err != nil {
		return err
	}
	if o.hello, err = filepath.Abs(o.hello); err != nil {
		return err
	}
	if o.flipper, err = filepath.Abs(o.flipper); err != nil {
		return err
	}
	if o.app, err = filepath.Abs(o.app); err != nil {
		return err
	}
	if o.svg == "" && o.out != "" {
		o.svg = filepath.Join(filepath.Dir(o.out), svgName)
	}
	bins := []string{o.baton, o.hello}
	if slices.Contains(o.modes, "tableflip") {
		bins = append(bins, o.flipper)
	}
	if o.scaleInstances > 0 {
		bins = append(bins, o.app)
	}
	for _, bin := range bins {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (run `make build bin/flipper bin/faultapp` first)", err)
		}
	}
	started := time.Now()
	fmt.Printf("%d upgrades per mode under load: %d clients (half fresh connections, half keep-alive), every %dth request /slow?ms=%d\n",
		o.upgrades, o.clients, o.slowEvery, o.slowMS)
	var results []modeResult
	for _, mode := range o.modes {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		r := runMode(ctx, o, mode)
		results = append(results, r)
		printRow(r)
	}
	var ov *overheadResult
	if o.ohRounds > 0 && ctx.Err() == nil {
		fmt.Printf("data-path overhead: %d rounds × %v per side, %d closed-loop clients on GET /\n", o.ohRounds, o.ohTime, o.ohClients)
		r := runOverhead(ctx, o)
		ov = &r
	}
	var fp *footprintResult
	if o.footprint && ctx.Err() == nil {
		fmt.Printf("footprint: baton idle for %v\n", o.idle)
		r := runFootprint(ctx, o)
		fp = &r
	}
	var sc *scaleResult
	if o.scaleInstances > 0 && ctx.Err() == nil {
		fmt.Printf("scale: %d instances × %d listeners, blue-green and rolling upgrades\n", o.scaleInstances, o.scaleListeners)
		r := runScale(ctx, o)
		sc = &r
	}
	var sk *soakResult
	if o.soakUpgrades > 0 && ctx.Err() == nil {
		fmt.Printf("soak: %d upgrades back to back (after %d to warm up)\n", o.soakUpgrades, soakWarmup)
		r := runSoak(ctx, o)
		sk = &r
	}
	fmt.Println()
	printTable(os.Stdout, results)
	fmt.Println()
	printUpgradeLatency(os.Stdout, results)
	fmt.Println()
	printTimeline(os.Stdout, results)
	// The picture is drawn even when it is not written, so that a quick run
	// checks it too.
	picture, err := latencySVG(results, o.svgUpgrades)
	if err != nil {
		return fmt.Errorf("latency picture: %w", err)
	}
	if ov != nil {
		fmt.Println()
		printOverhead(os.Stdout, ov)
	}
	if fp != nil {
		fmt.Println()
		printFootprint(os.Stdout, fp)
	}
	if sc != nil {
		fmt.Println()
		printScale(os.Stdout, sc)
	}
	if sk != nil {
		fmt.Println()
		printSoak(os.Stdout, sk)
	}
	for _, bin := range []string{o.hello, o.baton, o.flipper, o.app} {
		if leftover := processesOf(bin); len(leftover) > 0 {
			return fmt.Errorf("processes of %s still running: %v", bin, leftover)
		}
	}
	if o.out != "" {
		if err := os.WriteFile(o.svg, picture, 0o644); err != nil {
			return err
		}
		if err := writeReport(o, results, ov, fp, sc, sk, started); err != nil {
			return err
		}
		fmt.Printf("\nwrote %s (%v in all)\n", o.out, time.Since(started).Round(time.Second))
	}
	for _, r := range results {
		if r.err != nil {
			return fmt.Errorf("%s: %w", r.mode, r.err)
		}
	}
	if ov != nil && ov.err != nil {
		return fmt.Errorf("overhead: %w", ov.err)
	}
	if fp != nil && fp.err != nil {
		return fmt.Errorf("footprint: %w", fp.err)
	}
	if sc != nil && sc.err != nil {
		return fmt.Errorf("scale: %w", sc.err)
	}
	if sk != nil && sk.err != nil {
		return fmt.Errorf("soak: %w", sk.err)
	}
	return nil
}

// runMode starts one target, puts it under load, upgrades it o.upgrades
// times, stops the load and the target.
func runMode(ctx context.Context, o options, mode string) (r modeResult) {
	r = modeResult{mode: mode, title: modeTitles[mode], clients: o.clients}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	var t target
	switch mode {
	case "steered":
		t = &batonTarget{batonBin: o.baton, helloBin: o.hello, dir: dir, steering: "bpf"}
	case "shared":
		t = &batonTarget{batonBin: o.baton, helloBin: o.hello, dir: dir, steering: "shared"}
	case "tableflip":
		t = &flipperTarget{flipperBin: o.flipper, dir: dir}
	case "restart":
		t = &plainTarget{batonBin: o.baton, helloBin: o.hello}
	}
	defer func() {
		if err := t.stop(); err != nil && r.err == nil {
			r.err = err
		}
		r.windows = t.windows()
		if b, ok := t.(*batonTarget); ok {
			r.timeline, r.timelineErr = b.timeline()
		}
		if r.err != nil {
			if l := t.log(); l != "" {
				fmt.Fprintf(os.Stderr, "%s: log:\n%s", mode, l)
			}
		}
	}()
	addr, err := t.start()
	if err != nil {
		r.err = fmt.Errorf("start: %w", err)
		return r
	}
	begin := time.Now()
	l := startLoad(ctx, loadOptions{URL: "http://" + addr + "/", Clients: o.clients, SlowEvery: o.slowEvery, SlowMS: o.slowMS, Record: true})
	pause(ctx, o.settle)
	for i := 0; i < o.upgrades && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if err := t.upgrade(); err != nil {
			r.err = fmt.Errorf("upgrade %d: %w", i+1, err)
			break
		}
		r.upgradeTime = append(r.upgradeTime, time.Since(t0))
		r.upgrades++
		if i+1 < o.upgrades {
			pause(ctx, o.interval)
		}
	}
	pause(ctx, o.settle)
	r.load = l.stop()
	r.wall = time.Since(begin)
	if ctx.Err() != nil && r.err == nil {
		r.err = errors.New("interrupted")
	}
	slices.Sort(r.upgradeTime)
	return r
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// processesOf lists the pids whose executable is path.
func processesOf(path string) []int {
	entries, _ := os.ReadDir("/proc") // an unreadable /proc lists nothing: the check is best effort
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
