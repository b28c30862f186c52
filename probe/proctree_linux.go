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

// procRoot is where the process table is read; tests point it elsewhere
// only through treeUsage.
const procRoot = "/proc"

// TreeUsage sums the resident memory and CPU time of pid and all its
// descendants. Descendants are found by each process's parent in
// /proc/PID/stat, one pass over /proc; processes come and go while it is
// read, and one that vanishes is left out. An error wraps ErrNoProcess if
// pid itself is not there.
func TreeUsage(pid int) (Usage, error) {
	return treeUsage(procRoot, pid)
}

func treeUsage(root string, pid int) (Usage, error) {
	procs, err := readProcs(root)
	if err != nil {
		return Usage{}, err
	}
	if _, ok := procs[pid]; !ok {
		return Usage{}, fmt.Errorf("process tree of %d: %w", pid, ErrNoProcess)
	}
	children := make(map[int][]int, len(procs))
	for p, st := range procs {
		children[st.ppid] = append(children[st.ppid], p)
	}
	// The table is not one atomic snapshot, so a reused pid could make the
	// parent links loop; seen keeps the walk finite.
	seen := map[int]bool{pid: true}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		for _, c := range children[tree[i]] {
			if !seen[c] {
				seen[c] = true
				tree = append(tree, c)
			}
		}
	}
	page := uint64(os.Getpagesize())
	var u Usage
	var ticks uint64
	for _, p := range tree {
		pages, err := residentPages(root, p)
		if err != nil {
			if p == pid {
				return Usage{}, fmt.Errorf("process tree of %d: %w", pid, ErrNoProcess)
			}
			continue // exited since its stat was read
		}
		u.RSSBytes += pages * page
		ticks += procs[p].ticks
		u.Processes++
	}
	u.CPUSeconds = float64(ticks) / userHZ
	return u, nil
}

// procStat is what TreeUsage needs from /proc/PID/stat.
type procStat struct {
	ppid  int
	ticks uint64 // utime + stime + cutime + cstime, in 1/userHZ s
}

func readProcs(root string) (map[int]procStat, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read process table: %w", err)
	}
	procs := make(map[int]procStat, len(entries))
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
			procs[pid] = st
		}
	}
	return procs, nil
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
