//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Footprint: a fresh bin/baton running examples/hello (kernel-steered), no
// load. Its resident memory once generation 1 serves, its CPU time over an
// idle period (it polls nothing, so it should be about zero) and the size
// of the binary as `make build` writes it (stripped).
type footprintResult struct {
	binSize   int64
	rss, hwm  int64 // baton's VmRSS and VmHWM once generation 1 serves, in bytes
	rssAfter  int64 // VmRSS after the idle period
	helloRSS  int64 // the app's VmRSS, for scale
	idle      time.Duration
	idleCPU   time.Duration // utime+stime (ticks of 10 ms) over the idle period
	idleSched time.Duration // the same from schedstat (ns), -1 if unavailable
	threads   int
	err       error
}

func runFootprint(ctx context.Context, o options) (r footprintResult) {
	r.idle, r.idleSched = o.idle, -1
	if fi, err := os.Stat(o.baton); err == nil {
		r.binSize = fi.Size()
	}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	b := &batonTarget{batonBin: o.baton, helloBin: o.hello, dir: dir, steering: "bpf"}
	defer func() {
		if err := b.stop(); err != nil && r.err == nil {
			r.err = err
		}
		if r.err != nil {
			if l := b.log(); l != "" {
				fmt.Fprintf(os.Stderr, "footprint: baton's log:\n%s", l)
			}
		}
	}()
	if _, err := b.start(); err != nil {
		r.err = fmt.Errorf("start baton: %w", err)
		return r
	}
	pid := b.cmd.Process.Pid
	st, err := procStatus(pid)
	if err != nil {
		r.err = err
		return r
	}
	r.rss, r.hwm = st["VmRSS"], st["VmHWM"]
	r.threads = int(st["Threads"])
	if hs := processesOf(o.hello); len(hs) == 1 {
		if hst, err := procStatus(hs[0]); err == nil {
			r.helloRSS = hst["VmRSS"]
		}
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		r.err = err
		return r
	}
	sched0, serr := schedTime(pid)
	pause(ctx, o.idle)
	cpu1, err := cpuTime(pid)
	if err != nil {
		r.err = err
		return r
	}
	r.idleCPU = cpu1 - cpu0
	if sched1, serr1 := schedTime(pid); serr == nil && serr1 == nil {
		r.idleSched = sched1 - sched0
	}
	if st, err := procStatus(pid); err == nil {
		r.rssAfter = st["VmRSS"]
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("interrupted")
	}
	return r
}

// procStatus reads the numeric fields of /proc/PID/status; sizes in kB are
// returned in bytes.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) == 2 && f[1] == "kB" {
			n *= 1024
		}
		m[k] = n
	}
	return m, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
