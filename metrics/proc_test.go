//go:build linux

package metrics

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree is a helper parent process (a child of the test) and its own child.
type tree struct{ parent, child int }

// startTree starts the helper tree and returns once both processes exist.
// Cleanup closes their stdin, which ends both, and reaps the parent, which
// has reaped the child.
func startTree(t *testing.T) tree {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "METRICS_HELPER=parent", helperGORACE())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = stdin.Close() // the pipe's only writer; closing ends the tree
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("helper tree: %v", err)
			}
		case <-time.After(testWait):
			_ = cmd.Process.Kill() // Wait then returns
			t.Errorf("helper tree did not exit when its stdin closed; killed")
			<-exited
		}
	})

	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		s.Scan()
		line <- s.Text() // "" if the helper died first
	}()
	select {
	case l := <-line:
		child, err := strconv.Atoi(l)
		if err != nil {
			t.Fatalf("helper tree: handshake %q: %v", l, err)
		}
		return tree{parent: cmd.Process.Pid, child: child}
	case <-time.After(testWait):
		t.Fatal("helper tree: no handshake")
		return tree{}
	}
}

// helperGORACE keeps the caller's race detector options but drops the
// second that a race-enabled binary sleeps at exit, for every helper.
func helperGORACE() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

func TestTreeUsageOfRealProcesses(t *testing.T) {
	tr := startTree(t)
	burnCPU(t, 100*time.Millisecond)

	table, err := readProcTable("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	got := table.Tree(self)
	if len(got) == 0 || got[0] != self {
		t.Fatalf("tree(%d) = %v, want this process first", self, got)
	}
	for _, pid := range []int{tr.parent, tr.child} {
		if !slices.Contains(got, pid) {
			t.Errorf("tree(%d) = %v, lacks descendant %d", self, got, pid)
		}
	}
	if got := table.Tree(tr.parent); !slices.Equal(got, []int{tr.parent, tr.child}) {
		t.Errorf("tree(%d) = %v, want [%d %d]", tr.parent, got, tr.parent, tr.child)
	}

	all, ok := table.treeUsage(self)
	if !ok {
		t.Fatal("no usage for this process")
	}
	child, ok := table.treeUsage(tr.child)
	if !ok {
		t.Fatal("no usage for the helper's child")
	}
	if child.RSS == 0 || all.RSS <= child.RSS {
		t.Errorf("resident memory: whole tree %d, helper child %d; want 0 < child < tree", all.RSS, child.RSS)
	}
	// At least half the CPU time burnt: the rest is tick rounding and
	// slack for a slow machine.
	if all.CPU < 0.05 {
		t.Errorf("CPU of the tree: %vs, want at least 0.05s", all.CPU)
	}
}

// burnCPU spins until this process has used at least d of CPU time, as the
// kernel accounts it (bounded by testWait).
func burnCPU(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for x := 0; time.Now().Before(deadline); {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= d {
			return
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	t.Fatalf("could not use %v of CPU in %v", d, testWait)
}

func TestTreeUsageOfGoneProcess(t *testing.T) {
	table, err := readProcTable("/proc")
	if err != nil {
		t.Fatal(err)
	}
	gone := pidMax(t)
	if got := table.Tree(gone); got != nil {
		t.Errorf("tree(%d) = %v, want nil", gone, got)
	}
	if u, ok := table.treeUsage(gone); ok {
		t.Errorf("treeUsage(%d) = %+v, want none", gone, u)
	}
}

// TestTreeUsageSums checks the arithmetic on a fake /proc: pid 1 with a
// child 2 and grandchild 3, 3 gone between the two reads, 4 unrelated.
func TestTreeUsageSums(t *testing.T) {
	root := t.TempDir()
	write := func(pid, name, content string) {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := func(pid, comm, ppid, utime, stime, cutime, cstime string) string {
		return pid + " (" + comm + ") S " + ppid + " 1 1 0 -1 4194560 100 0 0 0 " +
			utime + " " + stime + " " + cutime + " " + cstime + " 20 0 1 0 100 1000 10\n"
	}
	write("1", "stat", stat("1", "app", "0", "100", "50", "10", "5"))
	write("1", "statm", "1000 10 5 1 0 100 0\n")
	write("2", "stat", stat("2", "worker (x) y", "1", "200", "0", "0", "0"))
	write("2", "statm", "1000 20 5 1 0 100 0\n")
	write("3", "stat", stat("3", "gone", "2", "1000", "1000", "0", "0")) // no statm: it exited
	write("4", "stat", stat("4", "other", "0", "7", "7", "0", "0"))
	write("4", "statm", "1000 40 5 1 0 100 0\n")
	write("self", "stat", "not a process")

	table, err := readProcTable(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := table.Tree(1); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("tree(1) = %v, want [1 2 3]", got)
	}
	u, ok := table.treeUsage(1)
	if !ok {
		t.Fatal("no usage for 1")
	}
	want := usage{RSS: 30 * uint64(os.Getpagesize()), CPU: (165 + 200) / 100.0}
	if u != want {
		t.Errorf("treeUsage(1) = %+v, want %+v", u, want)
	}
	if u, ok := table.treeUsage(3); ok {
		t.Errorf("treeUsage(3) of a process gone since = %+v, want none", u)
	}

	// Several roots, as the instances of a generation: each process
	// counts once, and roots that are gone are left out.
	pages := uint64(os.Getpagesize())
	for _, tt := range []struct {
		roots []int
		want  usage
		ok    bool
	}{
		{[]int{1, 4}, usage{RSS: 70 * pages, CPU: (165 + 200 + 14) / 100.0}, true},
		{[]int{1, 2}, want, true}, // 2 is in 1's tree
		{[]int{2, 1}, want, true},
		{[]int{3, 4}, usage{RSS: 40 * pages, CPU: 14 / 100.0}, true},
		{[]int{3, 2}, usage{RSS: 20 * pages, CPU: 200 / 100.0}, true},
		{[]int{3}, usage{}, false},
		{nil, usage{}, false},
	} {
		if u, ok := table.treeUsage(tt.roots...); u != tt.want || ok != tt.ok {
			t.Errorf("treeUsage(%v) = %+v, %v; want %+v, %v", tt.roots, u, ok, tt.want, tt.ok)
		}
	}
}

func TestReadProcTableWithoutProc(t *testing.T) {
	if _, err := readProcTable(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("readProcTable of a missing directory: %v, want ErrNotExist", err)
	}
}
