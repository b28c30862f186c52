package handoff

// The guard: PR_SET_PDEATHSIG kills each child baton started when baton
// dies, but not what the child started in its process group. When baton
// exits on its own it kills every group itself; when it is SIGKILLed (or
// the OOM killer takes it) nobody would. The guard is a small process,
// baton's own binary in a hidden mode, that holds the read end of a pipe
// from baton and the list of baton's live process groups; when the pipe
// reports EOF, baton is gone, and the guard kills every group on its list
// and exits. It sits in a process group of its own (a Ctrl-C to baton's
// does not reach it) and has no death signal (it must outlive baton).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// GuardArg is the hidden first argument that makes baton's binary act as
// the guard (RunShim dispatches to it).
const GuardArg = "__baton-guard"

// guard is baton's end of the pipe. Its mutex orders the lines written.
type guard struct {
	mu  sync.Mutex
	w   *os.File
	pid int
}

// startGuard starts the guard from binary (normally /proc/self/exe).
func startGuard(binary string) (*guard, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	defer r.Close() // the guard has its own copy
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guard: %w", err)
	}
	defer devnull.Close()
	pid, err := syscall.ForkExec(binary, []string{"baton-guard", GuardArg}, &syscall.ProcAttr{
		Env:   []string{},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), os.Stderr.Fd(), r.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("guard: start %s: %w", binary, err)
	}
	go func() {
		// Reap the guard if it ever exits before baton (it should not).
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
	}()
	return &guard{w: w, pid: pid}, nil
}

// add puts a process group on the guard's list; remove takes it off (call
// it before reaping the group's leader, whose pid may then be reused).
func (g *guard) add(pgid int)    { g.send('+', pgid) }
func (g *guard) remove(pgid int) { g.send('-', pgid) }

func (g *guard) send(op byte, pgid int) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// A failed write means the guard is gone: nothing better to do than
	// go on without it (the children still have their death signal).
	_, _ = g.w.Write([]byte(string(op) + strconv.Itoa(pgid) + "\n"))
}

// runGuard is the guard's main: it keeps the list from fd 3 until EOF,
// then kills each group on it.
func runGuard() {
	signalIgnore()
	in := bufio.NewScanner(os.NewFile(3, "baton"))
	groups := map[int]bool{}
	for in.Scan() {
		line := in.Text()
		if len(line) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			groups[pgid] = true
		case '-':
			delete(groups, pgid)
		}
	}
	for pgid := range groups {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			fmt.Fprintf(os.Stderr, "baton-guard: kill process group %d: %v\n", pgid, err)
		}
	}
	os.Exit(0)
}

// signalIgnore keeps the guard alive through the signals meant for baton
// and its service (SIGKILL aside): it ends only when baton does.
func signalIgnore() {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
}
