//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/supervisor"
)

// selfUpgrader replaces this baton with a new one (a new binary at the
// same path) without closing a socket, through tableflip: the new baton
// inherits the listeners and the steering program and map, starts its own
// first generation and routes to it once it is ready; then this baton
// drains its generations and exits. If the new baton fails, this one goes
// on as before.
type selfUpgrader struct {
	upg       *tableflip.Upgrader
	sup       *supervisor.Supervisor
	endpoints *endpoints
	pidFile   string
	log       *slog.Logger

	mu sync.Mutex // held for a whole self-upgrade: one at a time
}

// pidFilePath is where tableflip's new baton writes its pid once ready,
// next to the control socket.
func pidFilePath(cfg *supervisor.Config) string {
	return strings.TrimSuffix(cfg.Control.Socket, ".sock") + ".pid"
}

// upgradeTimeout bounds a self-upgrade. The new baton reads the config
// anew and bounds its first generation by its own readiness timeout, which
// may be longer than this one's: the bound is generous. A new baton that is
// killed for being late leaves this one serving (FinishHandover(false)
// routes back).
func upgradeTimeout(cfg *supervisor.Config) time.Duration {
	return 2*cfg.Readiness.Timeout + 5*time.Minute
}

// inherited takes what a predecessor baton handed over, by the names the
// supervisor gave them, as sockets to adopt.
func inherited(upg *tableflip.Upgrader, cfg *supervisor.Config) ([]handoff.Inherited, error) {
	var out []handoff.Inherited
	for _, name := range supervisor.HandoverNames(cfg) {
		f, err := upg.Fds.File(name)
		if err != nil {
			return nil, fmt.Errorf("self-upgrade: take %q from the previous baton: %w", name, err)
		}
		if f == nil {
			continue // not handed over (a shared listener has no program)
		}
		fd, err := rawDup(f)
		_ = f.Close() // fd is our own duplicate
		if err != nil {
			return nil, fmt.Errorf("self-upgrade: take %q from the previous baton: %w", name, err)
		}
		out = append(out, handoff.Inherited{FD: fd, Name: name})
	}
	return out, nil
}

// rawDup duplicates f's fd close-on-exec without Fd(), which would switch
// the socket to blocking mode for every holder.
func rawDup(f *os.File) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := sc.Control(func(raw uintptr) { fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// run performs one self-upgrade; a second one asked for meanwhile waits.
func (u *selfUpgrader) run(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	fds, err := u.sup.PrepareHandover(ctx)
	if err != nil {
		return fmt.Errorf("self-upgrade not started: %w", err)
	}
	for _, fd := range fds {
		dup, err := unix.FcntlInt(uintptr(fd.FD), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			u.sup.FinishHandover(false)
			return fmt.Errorf("self-upgrade not started: %s: %w", fd.Name, err)
		}
		f := os.NewFile(uintptr(dup), fd.Name)
		err = u.upg.Fds.AddFile(fd.Name, f) // tableflip keeps its own duplicate
		_ = f.Close()
		if err != nil {
			u.sup.FinishHandover(false)
			return fmt.Errorf("self-upgrade not started: %s: %w", fd.Name, err)
		}
	}
	// The new baton makes its own control socket and metrics listener.
	u.endpoints.stop()
	// systemd's watchdog is for the main process, which the new baton is
	// about to become: it must not see this baton's pid as WATCHDOG_PID.
	_ = os.Unsetenv("WATCHDOG_PID") // cannot fail for a valid name
	u.log.Info("self-upgrade: starting the new baton", "executable", selfPath())
	if err := u.upg.Upgrade(); err != nil {
		u.sup.FinishHandover(false)
		u.restartEndpoints()
		return fmt.Errorf("self-upgrade failed, this baton goes on: %w", err)
	}
	pid := u.newPID()
	u.log.Info("self-upgrade: the new baton serves; this one drains and exits", "new_pid", pid)
	if pid > 0 {
		// systemd accepts MAINPID from the main process: tell it before
		// this baton says anything about stopping.
		_, _ = daemon.SdNotify(false, "MAINPID="+strconv.Itoa(pid)) // not under systemd: nothing to tell
	}
	u.sup.FinishHandover(true)
	return nil
}

// restartEndpoints makes the control socket and metrics listener again
// after a failed self-upgrade. A new baton that was killed may not have
// let them go yet: a few tries, a moment apart.
func (u *selfUpgrader) restartEndpoints() {
	var err error
	for try := 0; try < 20; try++ {
		if err = u.endpoints.start(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	u.log.Error("control socket could not be made again; baton serves on without it", "err", err)
}

// removeOwnPIDFile removes the pid file when it still names this baton (a
// successor writes its own).
func removeOwnPIDFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		_ = os.Remove(path) // best effort: a stale pid file misleads no one who checks the pid
	}
}

// newPID is the new baton's pid, from the pid file it wrote when ready.
func (u *selfUpgrader) newPID() int {
	b, err := os.ReadFile(u.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func selfPath() string {
	p, _ := os.Executable()
	return p
}
