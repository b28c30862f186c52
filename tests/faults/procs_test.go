//go:build linux

package faults_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// started lists the faultapp processes that ever ran for the service (and
// the grandchildren they started), by pid and start time.
func (s *service) started(t *testing.T) []procID {
	t.Helper()
	entries, err := os.ReadDir(s.pidDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []procID
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(s.pidDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var p procID
			if _, err := fmt.Sscan(line, &p.pid, &p.start); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// waitStarted waits (bounded) until n processes have recorded themselves.
func (s *service) waitStarted(t *testing.T, n int) []procID {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		procs := s.started(t)
		if len(procs) >= n {
			return procs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes recorded themselves, want %d: %v", len(procs), n, procs)
		}
	}
}

// procID names a process across pid reuse: its pid and its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot).
type procID struct {
	pid   int
	start uint64
}

// alive reports whether the process still runs (a zombie does not).
func (p procID) alive() bool {
	state, start, ok := procStat(p.pid)
	return ok && start == p.start && state != "Z"
}

func procStat(pid int) (state string, start uint64, ok bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return "", 0, false
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return fields[0], start, err == nil
}

// waitGone waits (bounded) until none of the processes runs.
func waitGone(t *testing.T, procs ...procID) {
	t.Helper()
	deadline := time.Now().Add(goneWait)
	for _, p := range procs {
		for p.alive() {
			if time.Now().After(deadline) {
				t.Errorf("process %d still runs %v after it should have gone", p.pid, goneWait)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// pidGone waits (bounded) until the process with this pid, started before
// now, is gone.
func pidGone(t *testing.T, pid int) {
	t.Helper()
	_, start, ok := procStat(pid)
	if !ok {
		return
	}
	waitGone(t, procID{pid, start})
}

// nothingLeft checks, once baton has exited, that no process of the
// service (nor baton's guard) runs any more and that nothing listens on
// the addresses.
func (s *service) nothingLeft(t *testing.T, addrs ...string) {
	t.Helper()
	procs := s.started(t)
	if len(procs) == 0 {
		t.Log("no process of the service ever ran")
	}
	waitGone(t, append(procs, s.guards...)...)
	for _, addr := range addrs {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			t.Errorf("%s still listening after baton exited", addr)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s after baton exited: %v; want connection refused", addr, err)
		}
	}
	if _, err := os.Stat(s.sock); err == nil {
		t.Errorf("control socket %s left behind", s.sock)
	}
}

// fds lists the fds baton holds, with what each refers to.
func fds(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		n, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		// Sockets and pipes differ by inode; what matters is the kind. A
		// file deleted (or renamed over) since it was opened is still the
		// same fd.
		if k, _, ok := strings.Cut(target, ":["); ok && target != "anon_inode:[pidfd]" {
			target = k
		}
		target = strings.TrimSuffix(target, " (deleted)")
		out[n] = target
	}
	return out
}

// fdKinds counts fds by what they refer to, for a readable comparison.
func fdKinds(m map[int]string) map[string]int {
	out := map[string]int{}
	for _, v := range m {
		if v == "anon_inode:[pidfd]" {
			// One or two per live child (baton watches each exit through
			// a pidfd of its own where it can open one: at an fd limit it
			// falls back to waitid), so their number is not baton's to
			// keep equal; a pidfd leak shows in the supervisor's fd counts
			// across 50 upgrades and the bench's 1,000.
			continue
		}
		out[v]++
	}
	return out
}

// settledFDs waits (bounded) until baton holds exactly as many fds of each
// kind as want, reports the difference if it never does, and returns what
// it holds.
func settledFDs(t *testing.T, pid int, want map[string]int, what string) map[string]int {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = fdKinds(fds(t, pid)); mapsEqual(got, want) {
			return got
		}
	}
	var diff []string
	for _, k := range sortedKeys(got, want) {
		if got[k] != want[k] {
			diff = append(diff, fmt.Sprintf("%s: %d, was %d", k, got[k], want[k]))
		}
	}
	t.Errorf("%s: baton's fds differ from before: %s", what, strings.Join(diff, "; "))
	return got
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys(ms ...map[string]int) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// guard returns baton's guard process (its child "baton-guard", which
// kills the service's process groups if baton dies without doing so).
func (b *baton) guard() procID {
	b.t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("baton-guard\x00")) {
			continue
		}
		if ppid(pid) == b.pid() {
			_, start, _ := procStat(pid)
			return procID{pid, start}
		}
	}
	b.t.Fatal("baton runs no guard")
	return procID{}
}

// ppid is the parent of process pid, 0 if unknown.
func ppid(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(fields[1])
	return n
}
