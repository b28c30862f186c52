//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// Data-path overhead: the same closed-loop load (every client sends GET /
// as soon as the previous answer is in) against examples/hello under baton
// with kernel steering and against hello alone, bound by the harness and
// started by socket activation through baton's exec shim (which only sets
// LISTEN_PID and execs: no supervisor). Both run at once, each on its own
// port; the load alternates between them, A B A B, for a number of rounds,
// so that a noisy neighbour hurts both alike; the figures are the ratios of
// the medians over the rounds.

const overheadGoal = 0.98 // throughput under baton / alone, at least

// overheadSide is one side's figures, one entry per round.
type overheadSide struct {
	rps          []float64       // successful requests per second
	p50, p99     []time.Duration // of successful requests
	sent, failed int64           // over all rounds
	errors       map[string]int64
}

type overheadVariant struct {
	name  string // "keep-alive" or "fresh connections"
	conns string // loadOptions.Conns
	sides [2]overheadSide
}

type overheadResult struct {
	rounds, clients int
	dur             time.Duration
	variants        []*overheadVariant
	batonCPU        time.Duration // baton's own CPU time while the load ran against it
	batonLoad       time.Duration // how long the load ran against it, all rounds and variants
	err             error
}

var overheadSides = [2]string{"baton", "alone"}

func runOverhead(ctx context.Context, o options) (r overheadResult) {
	r = overheadResult{rounds: o.ohRounds, clients: o.ohClients, dur: o.ohTime}
	r.variants = []*overheadVariant{{name: "keep-alive", conns: "keepalive"}}
	if o.ohFresh {
		r.variants = append(r.variants, &overheadVariant{name: "fresh connections", conns: "fresh"})
	}
	for _, v := range r.variants {
		for i := range v.sides {
			v.sides[i].errors = map[string]int64{}
		}
	}
	dir, err := os.MkdirTemp("", "batonbench-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	b := &batonTarget{batonBin: o.baton, helloBin: o.hello, dir: dir, steering: "bpf"}
	p := &plainTarget{batonBin: o.baton, helloBin: o.hello}
	defer func() {
		for _, t := range []target{b, p} {
			if err := t.stop(); err != nil && r.err == nil {
				r.err = err
			}
		}
		if r.err != nil {
			if l := b.log(); l != "" {
				fmt.Fprintf(os.Stderr, "overhead: baton's log:\n%s", l)
			}
		}
	}()
	var addrs [2]string
	if addrs[0], err = b.start(); err != nil {
		r.err = fmt.Errorf("start baton: %w", err)
		return r
	}
	if addrs[1], err = p.start(); err != nil {
		r.err = fmt.Errorf("start hello alone: %w", err)
		return r
	}
	batonPid := b.cmd.Process.Pid

	measure := func(addr, conns string, d time.Duration) loadResult {
		l := startLoad(ctx, loadOptions{URL: "http://" + addr + "/", Clients: o.ohClients, Conns: conns})
		pause(ctx, d)
		res := l.stop()
		return res
	}
	// Warm-up, not counted: both processes grow their heaps and thread pools.
	for _, v := range r.variants {
		for _, a := range addrs {
			measure(a, v.conns, min(time.Second, o.ohTime))
		}
	}
	for round := range o.ohRounds {
		for _, v := range r.variants {
			for side, addr := range addrs {
				if ctx.Err() != nil {
					r.err = errors.New("interrupted")
					return r
				}
				cpu0, _ := cpuTime(batonPid)
				t0 := time.Now()
				res := measure(addr, v.conns, o.ohTime)
				wall := time.Since(t0)
				if side == 0 {
					cpu1, _ := cpuTime(batonPid)
					r.batonCPU += cpu1 - cpu0
					r.batonLoad += wall
				}
				s := &v.sides[side]
				s.rps = append(s.rps, float64(res.Sent-res.Failed)/wall.Seconds())
				s.p50 = append(s.p50, quantile(res.Fast, 0.5))
				s.p99 = append(s.p99, quantile(res.Fast, 0.99))
				s.sent += res.Sent
				s.failed += res.Failed
				for k, n := range res.Errors {
					s.errors[k] += n
				}
			}
			fmt.Printf("  overhead round %2d/%d, %-17s baton %6.0f req/s p99 %s ms | alone %6.0f req/s p99 %s ms\n",
				round+1, o.ohRounds, v.name, v.sides[0].rps[round], ms(v.sides[0].p99[round]), v.sides[1].rps[round], ms(v.sides[1].p99[round]))
		}
	}
	return r
}

func medianF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianD(xs []time.Duration) time.Duration {
	fs := make([]float64, len(xs))
	for i, x := range xs {
		fs[i] = float64(x)
	}
	return time.Duration(medianF(fs))
}

// ratios are baton / alone of the medians: throughput and p99.
func (v *overheadVariant) ratios() (rps, p99 float64) {
	a, b := v.sides[0], v.sides[1]
	if m := medianF(b.rps); m > 0 {
		rps = medianF(a.rps) / m
	}
	if m := medianD(b.p99); m > 0 {
		p99 = float64(medianD(a.p99)) / float64(m)
	}
	return rps, p99
}

func verdict(rps float64) string {
	if rps >= overheadGoal {
		return "met"
	}
	return "NOT met"
}

func (v *overheadVariant) failures() string {
	var parts []string
	for i, s := range v.sides {
		if s.failed > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d of %d failed (%s)", overheadSides[i], s.failed, s.sent, errorString(s.errors)))
		}
	}
	return strings.Join(parts, "; ")
}

func errorString(m map[string]int64) string {
	return errorList(modeResult{load: loadResult{Result: loadgen.Result{Errors: m}}})
}

// cpuTime is utime+stime of pid from /proc/PID/stat (every thread, exited
// ones included), in clock ticks of 1/100 s (USER_HZ on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state): utime is field 14, stime 15
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// schedTime is the CPU time of pid's live threads in nanoseconds, from
// /proc/PID/task/*/schedstat: finer than cpuTime's ticks.
func schedTime(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}
