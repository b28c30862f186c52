//go:build linux

package supervisor

// Starting a process for an instance: the pinned executable, the exec
// shim, the child's environment, and the wait for its exit. Called by the
// event loop only, except the goroutines that wait and hash.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-sh/baton/handoff"
	"golang.org/x/sys/unix"
)

// pinned is a generation's config and executable kept after it retired,
// for a rollback or revert to start it again exactly.
type pinned struct {
	id   int
	cfg  *Config
	path string
	file *os.File // O_PATH; owned by the pinned
}

func (p *pinned) close() {
	if p != nil && p.file != nil {
		_ = p.file.Close() // O_PATH: nothing to flush
	}
}

// setPrevious pins g as what a rollback or revert starts from.
func (s *Supervisor) setPrevious(g *generation) {
	if g.exeFile == nil {
		return // it never started a process
	}
	f, err := dupFile(g.exeFile)
	if err != nil {
		s.log.Warn("cannot keep the replaced generation's executable open; a rollback will look its command up again", "gen", g.id, "err", err)
	}
	s.previous.close()
	s.previous = &pinned{id: g.id, cfg: g.cfg, path: g.exe, file: f}
}

// pin makes g run p's executable.
func (g *generation) pin(p *pinned) error {
	if p == nil || p.file == nil {
		return nil // looked up again at the first spawn
	}
	f, err := dupFile(p.file)
	if err != nil {
		return fmt.Errorf("generation %d: the pinned executable of generation %d: %w", g.id, p.id, err)
	}
	g.exeFile, g.exe = f, p.path
	return nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// procFD is the path through which an open file can be opened again (an
// O_PATH file too).
func procFD(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// spawn starts a process for the instance and its readiness check.
func (s *Supervisor) spawn(in *instance) error {
	g := in.gen
	cfg := g.cfg
	if g.exeFile == nil {
		exe, err := resolveCommand(cfg)
		if err != nil {
			return fmt.Errorf("generation %d: %w", g.id, err)
		}
		f, err := handoff.OpenExecutable(exe)
		if err != nil {
			return fmt.Errorf("generation %d: command %s: %w", g.id, cfg.Service.Command[0], err)
		}
		g.exeFile, g.exe = f, exe
	}
	if g.exeSHA256 == "" && !g.hashing {
		s.hashExecutable(g)
	}
	if dir := cfg.Service.Directory; dir != "" {
		// chdir fails in the child with ENOENT, which would read as if
		// the program were missing.
		if st, err := os.Stat(dir); err != nil {
			return fmt.Errorf("generation %d instance %d: working directory: %w", g.id, in.index, err)
		} else if !st.IsDir() {
			return fmt.Errorf("generation %d instance %d: working directory %s is not a directory", g.id, in.index, dir)
		}
	}
	names := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		names[i] = l.spec.Name
	}
	env := s.childEnv(in)
	p, err := s.spawner.Start(handoff.Child{
		Shim:    s.opts.Shim,
		Path:    cfg.Service.Command[0],
		Args:    cfg.Service.Command,
		Dir:     cfg.Service.Directory,
		Env:     env,
		Sockets: in.sockets,
		Names:   names,
		Stdout:  s.opts.Stdout,
		Stderr:  s.opts.Stderr,

		Credential: credential(cfg.Service.Credentials),
		NoNewPrivs: cfg.Service.NoNewPrivs,
		Exe:        g.exeFile,
	})
	if err != nil {
		return fmt.Errorf("generation %d instance %d: %w", g.id, in.index, err)
	}
	proc := &process{inst: in, gen: g, p: p, pid: p.Pid, started: time.Now()}
	in.proc = proc
	exited := watchExit(proc.pid) // opened here, so baton's fds do not depend on when the goroutine runs
	go func() {
		// Wait without reaping: until the loop reaps it, the pid (and the
		// process group id) stays ours, so signals to them cannot hit a
		// stranger that got the pid anew.
		if err := exited(); err != nil {
			s.log.Error("cannot wait for process", "gen", g.id, "pid", proc.pid, "err", err)
		}
		s.send(procExited{proc: proc})
	}()
	s.log.Info("process started", "gen", g.id, "instance", in.index, "pid", proc.pid, "command", cfg.Service.Command[0])
	s.emit(Event{Kind: EventSpawned, Gen: g.id, Instance: in.index, PID: proc.pid})
	s.startReadiness(proc, env)
	return nil
}

// credential is who the service runs as; nil for baton's own user.
func credential(c *Credentials) *syscall.Credential {
	if c == nil {
		return nil
	}
	return &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.Groups}
}

// watchExit returns a function that blocks until the child pid has exited,
// leaving it unreaped. The function waits on a pidfd through Go's network
// poller, which holds no OS thread while it waits (a blocking waitid would
// hold one per child: 64 instances, 64 threads); where pidfds are not
// available (Linux before 5.10) it falls back to a blocking waitid. The
// pidfd is opened now and closed when the function returns.
func watchExit(pid int) func() error {
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK) // always close-on-exec
	if err != nil {
		return func() error { return waitExitedBlocking(pid) }
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	return func() error {
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return waitExitedBlocking(pid)
		}
		var werr error
		// A pidfd polls readable once its process has exited; Read calls
		// the function again each time it does, until it reports done.
		if err := rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
			return werr != nil || info.Signo != 0 // an error, or it has exited
		}); err != nil || werr == unix.EINTR {
			return waitExitedBlocking(pid)
		}
		return werr
	}
}

func waitExitedBlocking(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// resolveCommand finds the executable the shim will run, so that a command
// that cannot be run is reported before anything starts.
func resolveCommand(cfg *Config) (string, error) {
	path := cfg.Service.Command[0]
	if strings.Contains(path, "/") && !filepath.IsAbs(path) && cfg.Service.Directory != "" {
		path = filepath.Join(cfg.Service.Directory, path)
	}
	exe, err := handoff.LookPath(path, childPath())
	if err != nil {
		return "", fmt.Errorf("command %s: %w", cfg.Service.Command[0], err)
	}
	if c := cfg.Service.Credentials; c != nil && !executableBy(exe, c) {
		return "", fmt.Errorf("command %s: %s is not executable by user %s", cfg.Service.Command[0], exe, c.User)
	}
	if abs, err := filepath.Abs(exe); err == nil {
		exe = abs
	}
	return exe, nil
}

// executableBy reports whether the service's user may execute the file, by
// its permission bits (baton checks as root, which may execute anything
// with an x bit).
func executableBy(path string, c *Credentials) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	mode := st.Mode
	switch {
	case c.UID == 0:
		return mode&0o111 != 0
	case st.Uid == c.UID:
		return mode&0o100 != 0
	case st.Gid == c.GID || slices.Contains(c.Groups, st.Gid):
		return mode&0o010 != 0
	}
	return mode&0o001 != 0
}

// hashExecutable computes the SHA-256 of g's pinned executable on a
// goroutine of its own (it takes milliseconds per 10 MB: not on the
// loop), which sends it back for status.
func (s *Supervisor) hashExecutable(g *generation) {
	f, err := dupFile(g.exeFile)
	if err != nil {
		return
	}
	g.hashing = true
	go func() {
		defer f.Close()
		s.send(exeHashed{gen: g, sum: fileSHA256(procFD(f))})
	}()
}

type exeHashed struct {
	gen *generation
	sum string
}

// fileSHA256 is the hex SHA-256 of a file, or "" if it cannot be read.
func fileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// inheritedEnv names the variables of baton's own environment a child keeps;
// everything else it gets is set explicitly.
var inheritedEnv = []string{"HOME", "LANG", "LANGUAGE", "LOGNAME", "USER", "SHELL",
	"TERM", "TZ", "TMPDIR", "JOURNAL_STREAM"}

func childPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return handoff.DefaultPath
}

// childEnv is a minimal environment: PATH and a few variables of baton's,
// the config's environment, and what baton itself tells the child. None of
// baton's own LISTEN_*, NOTIFY_SOCKET or WATCHDOG_* reach the child.
func (s *Supervisor) childEnv(in *instance) []string {
	g := in.gen
	env := map[string]string{"PATH": childPath()}
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LC_") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	if c := g.cfg.Service.Credentials; c != nil {
		env["USER"], env["LOGNAME"], env["HOME"] = c.User, c.User, c.Home
	}
	for k, v := range g.cfg.Service.Environment {
		env[k] = v
	}
	env["NOTIFY_SOCKET"] = s.notify.Addr()
	env["BATON_GENERATION"] = strconv.Itoa(g.id)
	env["BATON_INSTANCE"] = strconv.Itoa(in.index)
	if len(s.flags) > 0 {
		env["BATON_FLAGS_FILE"] = s.flagsPath
	}
	if usec, ok := watchdogEnv(g.cfg); ok {
		env["WATCHDOG_USEC"] = usec // the shim adds WATCHDOG_PID
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
