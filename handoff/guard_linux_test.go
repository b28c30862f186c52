package handoff

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["fake-baton"] = fakeBatonHelper
}

// fakeBatonHelper is baton as far as the guard cares: it starts the guard
// (unless GUARD=0) and a child whose shell starts a grandchild in the
// child's process group, writes the grandchild's pid to $REPORT, and waits
// to be killed.
func fakeBatonHelper() {
	sp, err := NewSpawner()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if os.Getenv("GUARD") != "0" {
		if err := sp.StartGuard("/proc/self/exe"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	report := os.Getenv("REPORT")
	_, err = sp.Start(Child{
		Shim: "/proc/self/exe", Path: "/bin/sh",
		Args:   []string{"sh", "-c", "sleep 300 & echo $! > " + report + ".tmp && mv " + report + ".tmp " + report + "; wait"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: 1, Stderr: 2,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	select {} // until SIGKILLed
}

// TestGuardKillsGroupsWhenBatonDies: baton SIGKILLed leaves no orphan in its
// children's process groups; without the guard, the grandchild survives
// (which shows the test can tell).
func TestGuardKillsGroupsWhenBatonDies(t *testing.T) {
	for _, tc := range []struct {
		guard    string
		survives bool
	}{{"1", false}, {"0", true}} {
		t.Run("guard="+tc.guard, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "grandchild")
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "HANDOFF_TEST_HELPER=fake-baton", "REPORT="+report, "GUARD="+tc.guard)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pid int
			deadline := time.Now().Add(10 * time.Second)
			for pid == 0 {
				if data, err := os.ReadFile(report); err == nil {
					pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatal("no grandchild reported within 10s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			defer syscall.Kill(pid, syscall.SIGKILL)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			wait := 10 * time.Second // bounds the wait for a kill that comes
			if tc.survives {
				wait = 500 * time.Millisecond // how long the control case gets to show it would not
			}
			gone := waitGone(pid, wait)
			if gone == tc.survives {
				t.Errorf("grandchild %d gone=%v after baton was SIGKILLed with guard=%s", pid, gone, tc.guard)
			}
		})
	}
}

// waitGone reports whether pid is gone (or a zombie) within timeout.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// state is the field after the ")" of the command
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && strings.HasPrefix(string(data[i+1:]), " Z") {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
