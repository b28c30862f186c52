//go:build linux

package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// userHZ is the unit of the times in /proc/PID/stat (sysconf(_SC_CLK_TCK)).
// The kernel fixes it at 100 on every architecture Go supports on Linux,
// whatever the kernel's own HZ, and golang.org/x/sys/unix has no Sysconf
// for Linux to ask; so it is a constant here.
const userHZ = 100

// procTable is one pass over /proc: every process's parent and CPU time,
// taken once per scrape so that the descendants of all generations are
// found without reading /proc again for each of them. Processes come and
// go while it is read; one that vanishes is simply not in it.
type procTable struct {
	root     string
	procs    map[int]procStat
	children map[int][]int
}

// procStat is what a scrape needs from /proc/PID/stat.
type procStat struct {
	ppid  int
	ticks uint64 // utime + stime + cutime + cstime, in 1/userHZ s
}

// usage is the resources of a process tree.
type usage struct {
	RSS uint64  // bytes, summed over the processes
	CPU float64 // seconds, user and system
}

func readProcTable(root string) (*procTable, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read process table: %w", err)
	}
	t := &procTable{root: root, procs: make(map[int]procStat, len(entries)), children: make(map[int][]int)}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue // not a process: self, sys, meminfo...
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "stat"))
		if err != nil {
			continue // exited since the directory was read
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		t.procs[pid] = st
		t.children[st.ppid] = append(t.children[st.ppid], pid)
	}
	return t, nil
}

// tree returns pid and all its descendants, pid first; nil if pid is not in
// the table.
func (t *procTable) tree(pid int) []int {
	if _, ok := t.procs[pid]; !ok {
		return nil
	}
	// The table is not one atomic snapshot, so a reused pid could make
	// the parent links loop; seen keeps the walk finite.
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

// treeUsage sums the resident memory and CPU time of the processes roots
// (a generation's instances) and their descendants, each process once even
// if it is in several trees. CPU includes the cutime and cstime of each
// process: the time of children it has already waited for, so that a
// worker exiting does not make the tree's counter go backwards. ok is false
// if every root is gone; descendants and roots that are gone are left out.
func (t *procTable) treeUsage(roots ...int) (u usage, ok bool) {
	pageSize := uint64(os.Getpagesize())
	var ticks uint64
	seen, isRoot := make(map[int]bool), make(map[int]bool, len(roots))
	for _, root := range roots {
		isRoot[root] = true
	}
	for _, root := range roots {
		for _, p := range t.tree(root) {
			if seen[p] {
				continue
			}
			seen[p] = true
			rss, err := t.residentPages(p)
			if err != nil {
				continue // exited since the table was read
			}
			u.RSS += rss * pageSize
			ticks += t.procs[p].ticks
			ok = ok || isRoot[p]
		}
	}
	u.CPU = float64(ticks) / userHZ
	return u, ok
}

// residentPages reads the second field of /proc/PID/statm.
func (t *procTable) residentPages(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(t.root, strconv.Itoa(pid), "statm"))
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("statm of %d: %d fields", pid, len(f))
	}
	return strconv.ParseUint(string(f[1]), 10, 64)
}

var errStatFormat = errors.New("unexpected format")

// parseStat reads the parent and CPU times from the contents of
// /proc/PID/stat. The second field, the command name in parentheses, may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: %w: no command name", errStatFormat)
	}
	// Fields after the name, numbered as in proc(5) from 3 (state).
	f := bytes.Fields(b[i+1:])
	field := func(n int) []byte { return f[n-3] }
	if len(f) < 17-2 { // up to cstime, field 17
		return procStat{}, fmt.Errorf("stat: %w: %d fields", errStatFormat, len(f)+2)
	}
	ppid, err := strconv.Atoi(string(field(4)))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	var ticks uint64
	for n := 14; n <= 17; n++ { // utime, stime, cutime, cstime
		// cutime and cstime are signed in the format, never negative in
		// practice; a negative one is treated as malformed.
		v, err := strconv.ParseUint(string(field(n)), 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat: field %d: %w", n, err)
		}
		ticks += v
	}
	return procStat{ppid: ppid, ticks: ticks}, nil
}
