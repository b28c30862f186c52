//go:build linux

package probe

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["tree"] = helperTree
	helpers["leaf"] = helperLeaf
}

// Sizes of the helper tree: each leaf holds leafMiB of touched memory and
// has used at least leafCPU of CPU time before it says it is ready.
const (
	treeLeaves = 2
	leafMiB    = 32
	leafCPU    = 200 * time.Millisecond
)

// helperTree starts treeLeaves leaves sharing its stdin, waits for each to
// say it is ready, then prints "ready" and the leaves' pids as its own
// handshake. It and the leaves exit once stdin is closed.
func helperTree() int {
	var pids []string
	var leaves []*exec.Cmd
	for range treeLeaves {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "PROBE_HELPER=leaf")
		cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "tree:", err)
			return 1
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			fmt.Fprintf(os.Stderr, "tree: leaf said %q, %v\n", line, err)
			return 1
		}
		leaves = append(leaves, cmd)
		pids = append(pids, strconv.Itoa(cmd.Process.Pid))
	}
	fmt.Println("ready", strings.Join(pids, " "))
	_, _ = io.Copy(io.Discard, os.Stdin) // only EOF matters
	for _, l := range leaves {
		_ = l.Wait() // the leaves see the same EOF
	}
	return 0
}

// helperLeaf touches leafMiB of memory and burns leafCPU of CPU time (its
// own, so a busy machine makes it slower, not less), says "ready", and
// holds both until stdin is closed.
func helperLeaf() int {
	mem := make([]byte, leafMiB<<20)
	for i := 0; i < len(mem); i += os.Getpagesize() {
		mem[i] = 1
	}
	for {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 1
		}
		if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= leafCPU {
			break
		}
		for i := 0; i < 1e6; i++ { // spin
			mem[i%len(mem)]++
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(mem)
	return 0
}

// startTree starts the helper tree and returns its root, its leaves, and
// a function that ends it and waits for it.
func startTree(t *testing.T) (root int, leaves []int, stop func()) {
	t.Helper()
	cmd := helperCommand(t, "tree")
	usedHelpers.Store("leaf", true) // the tree starts the leaves
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() {
		_ = in.Close() // EOF ends the tree
		if err := cmd.Wait(); err != nil {
			t.Errorf("tree: %v", err)
		}
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		f := strings.Fields(s)
		if len(f) != 1+treeLeaves || f[0] != "ready" {
			stop()
			t.Fatalf("tree said %q", s)
		}
		for _, p := range f[1:] {
			pid, _ := strconv.Atoi(p)
			leaves = append(leaves, pid)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		stop()
		t.Fatal("tree not ready in 30s")
	}
	return cmd.Process.Pid, leaves, stop
}

func TestTreeUsageOfRealProcesses(t *testing.T) {
	root, leaves, stop := startTree(t)
	u, err := TreeUsage(root)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	if u.Processes != 1+treeLeaves {
		t.Errorf("Processes = %d; want %d", u.Processes, 1+treeLeaves)
	}
	if min := uint64(treeLeaves * leafMiB << 20); u.RSSBytes < min {
		t.Errorf("RSSBytes = %d; want at least %d", u.RSSBytes, min)
	}
	// Ticks are 10ms; allow one short per leaf.
	if min := float64(treeLeaves) * (leafCPU.Seconds() - 0.01); u.CPUSeconds < min {
		t.Errorf("CPUSeconds = %.2f; want at least %.2f", u.CPUSeconds, min)
	}
	leaf, err := TreeUsage(leaves[0])
	if err != nil || leaf.Processes != 1 || leaf.RSSBytes < leafMiB<<20 || leaf.RSSBytes >= u.RSSBytes {
		t.Errorf("one leaf: %+v, %v; want one process with its own memory", leaf, err)
	}
	stop()
	if _, err := TreeUsage(root); !errors.Is(err, ErrNoProcess) {
		t.Errorf("after exit: err = %v; want ErrNoProcess", err)
	}
}

// fakeProc writes a /proc of the given processes: pid -> stat and statm.
func fakeProc(t *testing.T, procs map[int][2]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, files := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"stat", "statm"} {
			if files[i] == "" {
				continue // gone between the two reads
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(files[i]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// stat is a /proc/PID/stat line with the given name, parent and times.
func stat(name string, ppid int, utime, stime, cutime, cstime int) string {
	return fmt.Sprintf("1 (%s) S %d 1 1 0 -1 4194560 100 0 0 0 %d %d %d %d 20 0 1 0 100 1000 10\n",
		name, ppid, utime, stime, cutime, cstime)
}

func TestTreeUsageSums(t *testing.T) {
	page := uint64(os.Getpagesize())
	root := fakeProc(t, map[int][2]string{
		1:  {stat("init", 0, 1, 1, 0, 0), "10 5 0 0 0 0 0\n"},
		10: {stat("svc", 1, 100, 50, 20, 10), "100 40 0 0 0 0 0\n"},
		11: {stat("odd ) (name", 10, 5, 5, 0, 0), "100 7 0 0 0 0 0\n"},
		12: {stat("worker", 11, 30, 0, 0, 0), "100 3 0 0 0 0 0\n"},
		13: {stat("gone", 10, 1000, 0, 0, 0), ""}, // exited between stat and statm
		20: {stat("other", 1, 500, 0, 0, 0), "100 99 0 0 0 0 0\n"},
		// 30 and 31 are each other's parent, as a reused pid can make it
		// look; the walk must end.
		30: {stat("loop", 31, 1, 0, 0, 0), "1 1 0 0 0 0 0\n"},
		31: {stat("loop", 30, 1, 0, 0, 0), "1 1 0 0 0 0 0\n"},
		40: {"garbage", "1 1\n"}, // unreadable stat: left out
	})
	for _, tc := range []struct {
		name string
		pid  int
		want Usage
	}{
		{"tree with a gone child", 10, Usage{RSSBytes: 50 * page, CPUSeconds: 2.2, Processes: 3}},
		{"subtree", 11, Usage{RSSBytes: 10 * page, CPUSeconds: 0.4, Processes: 2}},
		{"leaf", 12, Usage{RSSBytes: 3 * page, CPUSeconds: 0.3, Processes: 1}},
		{"loop", 30, Usage{RSSBytes: 2 * page, CPUSeconds: 0.02, Processes: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := treeUsage(root, tc.pid)
			if err != nil {
				t.Fatal(err)
			}
			if got.RSSBytes != tc.want.RSSBytes || got.Processes != tc.want.Processes ||
				fmt.Sprintf("%.2f", got.CPUSeconds) != fmt.Sprintf("%.2f", tc.want.CPUSeconds) {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
	for _, pid := range []int{13, 40, 99} {
		if _, err := treeUsage(root, pid); !errors.Is(err, ErrNoProcess) {
			t.Errorf("pid %d: err = %v; want ErrNoProcess", pid, err)
		}
	}
	if _, err := treeUsage(filepath.Join(root, "nonexistent"), 10); err == nil || errors.Is(err, ErrNoProcess) {
		t.Errorf("no /proc: err = %v; want a read error", err)
	}
}

func TestParseStatRefusesMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"1 no parens S 1",
		"1 (x) S 1 1 1",           // too few fields
		stat("x", 1, 1, 1, -1, 0), // negative cutime
		"1 (x) S notapid " + strings.Repeat("0 ", 20),
	} {
		if _, err := parseStat([]byte(s)); err == nil {
			t.Errorf("parseStat(%q) succeeded", s)
		}
	}
}

func TestUsageSub(t *testing.T) {
	prev := Usage{RSSBytes: 10, CPUSeconds: 5, Processes: 2}
	if got := (Usage{RSSBytes: 20, CPUSeconds: 7.5, Processes: 3}).Sub(prev); got != (Usage{20, 2.5, 3}) {
		t.Errorf("Sub = %+v", got)
	}
	if got := (Usage{RSSBytes: 20, CPUSeconds: 4, Processes: 1}).Sub(prev); got.CPUSeconds != 0 {
		t.Errorf("a tree that lost time used %v s; want 0", got.CPUSeconds)
	}
}

// TestParseStat: the parent and CPU times of a stat line, whatever its
// command name holds.
func TestParseStat(t *testing.T) {
	line := func(comm string, rest ...string) []byte {
		return []byte("42 (" + comm + ") " + strings.Join(rest, " ") + "\n")
	}
	full := []string{"S", "7", "42", "42", "0", "-1", "0", "1", "0", "0", "0", "11", "22", "33", "44", "20", "0", "1"}

	t.Run("success", func(t *testing.T) {
		for _, comm := range []string{"app", "a b", "a) S 1 (b", ")"} {
			got, err := parseStat(line(comm, full...))
			if err != nil {
				t.Errorf("comm %q: %v", comm, err)
				continue
			}
			if want := (procStat{ppid: 7, ticks: 11 + 22 + 33 + 44}); got != want {
				t.Errorf("comm %q: got %+v, want %+v", comm, got, want)
			}
		}
	})
	t.Run("failure", func(t *testing.T) {
		negative := slices.Clone(full)
		negative[13] = "-3" // cutime
		badPPID := slices.Clone(full)
		badPPID[1] = "x"
		for name, b := range map[string][]byte{
			"no command name":  []byte("42 app S 7"),
			"too few fields":   line("app", full[:14]...),
			"ppid not numeric": line("app", badPPID...),
			"negative time":    line("app", negative...),
			"empty":            nil,
		} {
			if got, err := parseStat(b); err == nil {
				t.Errorf("%s: parsed as %+v, want an error", name, got)
			}
		}
	})
}
