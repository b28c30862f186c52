//go:build linux

package probe

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// userHZ is the unit of the times in /proc/PID/stat (sysconf(_SC_CLK_TCK)).
// Linux fixes it at 100 for user space on every architecture Go supports,
// whatever the kernel's own HZ, and golang.org/x/sys/unix has no Sysconf to
// ask; so it is a constant.
const userHZ = 100

// TreeUsage sums the resident memory and CPU time of pid and all its
// descendants. Descendants are found by each process's parent in
// /proc/PID/stat, one pass over /proc; processes come and go while it is
// read, and one that vanishes is left out. An error wraps ErrNoProcess if
// pid itself is not there.
func TreeUsage(pid int) (Usage, error) {
	return treeUsage("/proc", pid)
}

func treeUsage(root string, pid int) (Usage, error) {
	t, err := ReadProcTable(root)
	if err != nil {
		return Usage{}, err
	}
	u, ok := t.Usage(pid)
	if !ok {
		return Usage{}, fmt.Errorf("process tree of %d: %w", pid, ErrNoProcess)
	}
	return u, nil
}

// ProcTable is one pass over a /proc: every process's parent and CPU
// time, read once so that the trees of many roots are found without
// reading /proc again for each. Processes come and go while it is read;
// one that vanishes is simply not in it.
type ProcTable struct {
	root     string
	procs    map[int]procStat
	children map[int][]int
}

// procStat is what a ProcTable keeps of /proc/PID/stat.
type procStat struct {
	ppid  int
	ticks uint64 // utime + stime + cutime + cstime, in 1/userHZ s
}

// ReadProcTable reads the process table under root ("/proc"; tests give
// a directory of their own).
func ReadProcTable(root string) (*ProcTable, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read process table: %w", err)
	}
	t := &ProcTable{root: root, procs: make(map[int]procStat, len(entries)), children: make(map[int][]int)}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue // not a process: self, sys, meminfo...
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "stat"))
		if err != nil {
			continue // exited since the directory was read
		}
		if st, err := parseStat(b); err == nil {
			t.procs[pid] = st
			t.children[st.ppid] = append(t.children[st.ppid], pid)
		}
	}
	return t, nil
}

// Tree returns pid and all its descendants, pid first; nil if pid is not
// in the table.
func (t *ProcTable) Tree(pid int) []int {
	if _, ok := t.procs[pid]; !ok {
		return nil
	}
	// The table is not one atomic snapshot, so a reused pid could make the
	// parent links loop; seen keeps the walk finite.
	seen := map[int]bool{pid: true}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for _, c := range t.children[out[i]] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// Usage sums the resident memory and CPU time of the processes roots (a
// generation's instances, say) and their descendants, each process once
// even if it is in several trees. CPU includes the cutime and cstime of
// each process: the time of children it has already waited for, so that a
// worker exiting does not make the tree's figure go backwards. ok is false
// if every root is gone; descendants and roots that are gone are left out.
func (t *ProcTable) Usage(roots ...int) (u Usage, ok bool) {
	page := uint64(os.Getpagesize())
	var ticks uint64
	seen, isRoot := make(map[int]bool), make(map[int]bool, len(roots))
	for _, root := range roots {
		isRoot[root] = true
	}
	for _, root := range roots {
		for _, p := range t.Tree(root) {
			if seen[p] {
				continue
			}
			seen[p] = true
			pages, err := residentPages(t.root, p)
			if err != nil {
				continue // exited since the table was read
			}
			u.RSSBytes += pages * page
			ticks += t.procs[p].ticks
			u.Processes++
			ok = ok || isRoot[p]
		}
	}
	u.CPUSeconds = float64(ticks) / userHZ
	return u, ok
}

// residentPages reads the second field of /proc/PID/statm.
func residentPages(root string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "statm"))
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("statm of %d: %w: %d fields", pid, errProcFormat, len(f))
	}
	return strconv.ParseUint(string(f[1]), 10, 64)
}

var errProcFormat = errors.New("unexpected format")

// parseStat reads the parent and CPU times from the contents of
// /proc/PID/stat. The second field, the command name in parentheses, may
// itself hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: %w: no command name", errProcFormat)
	}
	// Fields after the name, numbered as in proc(5) from 3 (state).
	f := bytes.Fields(b[i+1:])
	if len(f) < 17-2 { // up to cstime, field 17
		return procStat{}, fmt.Errorf("stat: %w: %d fields", errProcFormat, len(f)+2)
	}
	field := func(n int) string { return string(f[n-3]) }
	ppid, err := strconv.Atoi(field(4))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	var ticks uint64
	for n := 14; n <= 17; n++ { // utime, stime, cutime, cstime
		// cutime and cstime are signed in the format but never negative;
		// a negative one is malformed.
		v, err := strconv.ParseUint(field(n), 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat: field %d: %w", n, err)
		}
		ticks += v
	}
	return procStat{ppid: ppid, ticks: ticks}, nil
}
