//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// flipperTarget runs examples/flipper: hello's service upgrading itself
// with tableflip, no supervisor. An upgrade is SIGHUP to the pid in its PID
// file (what systemd's ExecReload with PIDFile= does); tableflip starts a
// new copy with the listening socket, and the upgrade is done when the new
// copy has called Ready (it logs "serving on" right after). The old copy
// then shuts its server down and exits; until it does, both accept on the
// same socket.
//
// Every copy is a child of the one before, so the harness makes itself a
// child subreaper: when a copy exits, its successor becomes the harness's
// child, and the harness reaps it in turn (nobody else would: pid 1 of a
// container often does not). A copy's exit is seen through a pidfd, so that
// it is timed whoever its parent is.
type flipperTarget struct {
	flipperBin, dir string

	pidFile    string
	pgid       int // the first copy's pid: every copy is in its process group
	lines      chan string
	readerDone chan struct{}    // closed once every copy has closed its stderr and lines is closed
	logBuf     *strings.Builder // everything the copies wrote; the reader goroutine writes it until readerDone

	exits   chan copyExit // from the watchers, one per copy
	gone    map[int]copyExit
	watched int // copies watched; only the caller of start, upgrade and stop touches gone, watched, gen, pid, ups
	gen     int // the serving copy's generation and pid
	pid     int
	ups     []window
}

// copyExit is a copy of flipper gone: when, and what went wrong if it did.
type copyExit struct {
	gen int
	at  time.Time
	err error
}

// serving matches the line a copy writes once it has called Ready.
var serving = regexp.MustCompile(`^flipper: serving on (\S+): hello from generation (\d+) pid (\d+)`)

func (f *flipperTarget) start() (string, error) {
	// Orphaned copies become the harness's children, to be timed and reaped.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return "", fmt.Errorf("become a child subreaper: %w", err)
	}
	f.pidFile = filepath.Join(f.dir, "flipper.pid")
	f.exits, f.gone = make(chan copyExit, 1000), map[int]copyExit{}
	// One pipe for every copy's stdout and stderr: tableflip hands a new
	// copy its parent's. The harness reads it until the last copy is gone.
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(f.flipperBin, "-listen", "127.0.0.1:0", "-pid-file", f.pidFile)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GREETING_VERSION=1", "FLIPPER_GENERATION=1"}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = w.Close() // the copies hold the write end now
	if err != nil {
		_ = r.Close()
		return "", fmt.Errorf("start %s (run `make bin/flipper` first?): %w", f.flipperBin, err)
	}
	f.pgid = cmd.Process.Pid
	_ = cmd.Process.Release() // its exit is waited for by watch, as every later copy's
	f.lines, f.readerDone, f.logBuf = make(chan string, 1000), make(chan struct{}), &strings.Builder{}
	go func() {
		defer close(f.readerDone)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f.logBuf.WriteString(sc.Text() + "\n")
			select {
			case f.lines <- sc.Text():
			default: // nobody is waiting for that many lines
			}
		}
		close(f.lines)
	}()
	f.watch(1, f.pgid)
	addr, pid, err := f.waitServing(1, 15*time.Second)
	if err != nil {
		return "", err
	}
	f.gen, f.pid = 1, pid
	return addr, nil
}

// waitServing waits (bounded) for copy gen's "serving on" line; a line
// saying that the upgrade failed ends the wait early.
func (f *flipperTarget) waitServing(gen int, timeout time.Duration) (addr string, pid int, err error) {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-f.lines:
			if !ok {
				return "", 0, fmt.Errorf("every flipper copy exited before generation %d served", gen)
			}
			if strings.HasPrefix(line, "flipper: upgrade failed") {
				return "", 0, errors.New(line)
			}
			m := serving.FindStringSubmatch(line)
			if m == nil || m[2] != strconv.Itoa(gen) {
				continue
			}
			pid, err := strconv.Atoi(m[3])
			return m[1], pid, err
		case <-deadline:
			return "", 0, fmt.Errorf("flipper generation %d not serving after %v", gen, timeout)
		}
	}
}

// watch times copy gen's exit and reaps it if it is the harness's child
// by then.
func (f *flipperTarget) watch(gen, pid int) {
	f.watched++
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		f.exits <- copyExit{gen: gen, at: time.Now(), err: fmt.Errorf("pidfd of flipper generation %d (pid %d): %w", gen, pid, err)}
		return
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for { // a pidfd becomes readable when its process has exited
			if _, err := unix.Poll(fds, -1); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		e := copyExit{gen: gen, at: time.Now()}
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			// Its parent copy still lives and reaps it: the status is
			// that copy's to know.
		case err != nil:
			e.err = fmt.Errorf("wait for flipper generation %d (pid %d): %w", gen, pid, err)
		case !ws.Exited() || ws.ExitStatus() != 0:
			e.err = fmt.Errorf("flipper generation %d (pid %d) ended badly: %s", gen, pid, waitString(ws))
		}
		f.exits <- e
	}()
}

func waitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// waitGone waits (bounded) until copy gen has exited.
func (f *flipperTarget) waitGone(gen int, deadline <-chan time.Time) error {
	for {
		if _, ok := f.gone[gen]; ok {
			return nil
		}
		select {
		case e := <-f.exits:
			f.gone[e.gen] = e
		case <-deadline:
			return fmt.Errorf("flipper generation %d still running", gen)
		}
	}
}

func (f *flipperTarget) readPID() (int, error) {
	b, err := os.ReadFile(f.pidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (f *flipperTarget) upgrade() error {
	// tableflip refuses to upgrade a copy whose parent has not exited yet.
	if f.gen > 1 {
		if err := f.waitGone(f.gen-1, time.After(30*time.Second)); err != nil {
			return fmt.Errorf("before upgrading: %w", err)
		}
	}
	pid, err := f.readPID()
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if pid != f.pid {
		return fmt.Errorf("pid file names %d, generation %d is %d", pid, f.gen, f.pid)
	}
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal flipper: %w", err)
	}
	_, next, err := f.waitServing(f.gen+1, 30*time.Second)
	if err != nil {
		return err
	}
	f.ups = append(f.ups, window{signal: t0, ready: time.Now(), from: f.gen, to: f.gen + 1})
	f.gen, f.pid = f.gen+1, next
	f.watch(f.gen, f.pid)
	return nil
}

// stop sends the serving copy SIGTERM (it drains and exits) and waits for
// every copy to be gone; after 40 s it kills their process group.
func (f *flipperTarget) stop() error {
	if f.pgid == 0 {
		return nil
	}
	if f.pid != 0 {
		_ = syscall.Kill(f.pid, syscall.SIGTERM) // if it has exited already, the waits below say so
	} else { // start failed: whatever started goes
		_ = syscall.Kill(-f.pgid, syscall.SIGKILL)
	}
	var errs []error
	deadline := time.After(40 * time.Second)
	for gen := 1; gen <= f.watched; gen++ {
		if err := f.waitGone(gen, deadline); err != nil {
			_ = syscall.Kill(-f.pgid, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("%w 40s after SIGTERM; killed", err))
			deadline = time.After(5 * time.Second)
		}
	}
	select {
	case <-f.readerDone:
	case <-deadline:
		_ = syscall.Kill(-f.pgid, syscall.SIGKILL)
		errs = append(errs, errors.New("flipper's output still open after every copy exited"))
	}
	if f.pid == 0 {
		return errors.Join(errs...)
	}
	for gen := 1; gen <= f.watched; gen++ {
		if e, ok := f.gone[gen]; ok && e.err != nil {
			errs = append(errs, e.err)
		}
	}
	return errors.Join(errs...)
}

// windows are the upgrades: SIGHUP until the old copy has exited.
func (f *flipperTarget) windows() []window {
	ws := make([]window, 0, len(f.ups))
	for _, w := range f.ups {
		w.gone = f.gone[w.from].at
		ws = append(ws, w)
	}
	return ws
}

func (f *flipperTarget) log() string {
	if f.readerDone == nil {
		return ""
	}
	select {
	case <-f.readerDone:
		return f.logBuf.String()
	default:
		return "" // still being written
	}
}
