//go:build linux

package faults_test

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// floodRate is what a flooding generation writes to stdout, per process.
const floodRate = 8 << 20

// faultStdoutFlood: generations that write MBs/s to stdout. Their stdout
// is baton's own (the same pipe, not a copy through baton), so baton is not
// in the path of their output and cannot be slowed by it: upgrades work
// and no request fails while two generations flood at once, baton's CPU
// time stays near zero, and when nobody reads the pipe any more (a stuck
// log collector: the writers block) baton still upgrades, answers on its
// control socket, and stops the blocked generation.
func faultStdoutFlood(t *testing.T) {
	s := newService(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := newGatedReader(pr)
	t.Cleanup(out.close) // after baton's cleanup: the pipe ends once baton is gone

	rate := strconv.Itoa(floodRate)
	s.write(t, serviceConfig{fault: "flood=" + rate})
	b := s.start(t, pw)
	pw.Close() // baton has its own copy
	addr, pid1 := b.ready()
	childOut, batonOut := fdTarget(t, pid1, 1), fdTarget(t, b.pid(), 1)
	if !strings.HasPrefix(childOut, "pipe:") || childOut != batonOut {
		t.Errorf("the service's stdout is %q, baton's %q; want the same pipe", childOut, batonOut)
	}
	load := startLoad(t, addr)

	// Both generations flood during the upgrade.
	cpu0 := cpuTime(t, b.pid())
	read0, t0 := out.n.Load(), time.Now()
	s.write(t, serviceConfig{version: "2", fault: "flood=" + rate})
	s.mustUpgrade(t)
	upgraded := time.Since(t0)
	answeredBy(t, addr, 2)
	time.Sleep(time.Second) // a second of flood from generation 2 alone
	mb := float64(out.n.Load()-read0) / (1 << 20)
	secs := time.Since(t0).Seconds()
	cpu := cpuTime(t, b.pid()) - cpu0
	t.Logf("flood: %.1f MiB in %.1fs (%.1f MiB/s) read from baton's stdout; upgrade %v; baton's CPU time meanwhile %v",
		mb, secs, mb/secs, upgraded.Round(time.Millisecond), cpu)
	if mb/secs < 0.5*floodRate/(1<<20) {
		t.Errorf("%.1f MiB/s of flood; want about %d MiB/s", mb/secs, floodRate>>20)
	}
	if cpu > 200*time.Millisecond {
		t.Errorf("baton used %v of CPU while the service flooded: is its output going through baton?", cpu)
	}

	// Nobody reads stdout any more: generation 2 blocks in write(2).
	out.pause()
	waitStalled(t, out)
	s.write(t, serviceConfig{version: "3"})
	t0 = time.Now()
	s.mustUpgrade(t) // generation 2, blocked in its flood, stops all the same
	t.Logf("upgrade with stdout stalled: %v", time.Since(t0).Round(time.Millisecond))
	answeredBy(t, addr, 3)
	if o, code := s.ctl(t, "status"); code != 0 {
		t.Errorf("status with stdout stalled: exit %d\n%s", code, o)
	}
	out.resume()
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}

// gatedReader reads a pipe to the end, counting bytes, unless paused.
type gatedReader struct {
	r    *os.File
	n    atomic.Int64
	mu   sync.Mutex // held while paused
	done chan struct{}
}

func newGatedReader(r *os.File) *gatedReader {
	g := &gatedReader{r: r, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		buf := make([]byte, 256<<10)
		for {
			g.mu.Lock()
			g.mu.Unlock() //nolint:staticcheck // an empty critical section: the gate
			n, err := g.r.Read(buf)
			g.n.Add(int64(n))
			if err != nil {
				if err != io.EOF {
					fmt.Fprintln(os.Stderr, "stdout reader:", err)
				}
				return
			}
		}
	}()
	return g
}

func (g *gatedReader) pause()  { g.mu.Lock() }
func (g *gatedReader) resume() { g.mu.Unlock() }

// close waits (bounded) for the end of the pipe (every writer gone), then
// closes it. Paused (a test that failed meanwhile), it does not wait.
func (g *gatedReader) close() {
	if g.mu.TryLock() {
		g.mu.Unlock()
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
		}
	}
	g.r.Close()
}

// waitStalled waits until the pipe is full: nothing more is read for a
// while.
func waitStalled(t *testing.T, g *gatedReader) {
	t.Helper()
	last := g.n.Load()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		if n := g.n.Load(); n == last {
			return
		} else {
			last = n
		}
	}
	t.Fatal("the reader never stalled")
}

// fdTarget is what fd of process pid refers to.
func fdTarget(t *testing.T, pid, fd int) string {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// cpuTime is the process's utime+stime (ticks of 10 ms).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
