//go:build linux

package supervisor

import (
	"context"
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

type genState int

const (
	genStarting genState = iota // the candidate: started, not yet promoted
	genServing                  // routed: new connections reach it
	genDraining                 // unrouted, waiting for its accept queues to empty
	genStopping                 // stop signal sent, waiting for its process to exit
)

func (st genState) String() string {
	return [...]string{"starting", "serving", "draining", "stopping"}[st]
}

// generation is one version of the service. Owned by the event loop.
type generation struct {
	id      int
	cfg     *Config           // pinned: restarts use this, not a newer file
	sockets []*handoff.Socket // one per listener, in listener order
	owned   []bool            // sockets[i] belongs to this generation (steered)
	state   genState
	proc    *process // nil while a restart is pending, or after the last exit
	started time.Time

	gaveUp       bool // crashed more than [restart] max_tries allows: no more restarts
	crashes      int  // consecutive crashes, reset after a long enough run
	restarts     int  // processes started after the first
	restartTimer *time.Timer
	drainTimer   *time.Timer
	drainUntil   time.Time
	replacedAt   time.Time // when a successor was promoted
	rollback     bool      // started by a rollback, from the previous generation's config
	exe          string    // resolved executable of the last process started
	exeSHA256    string    // its SHA-256 (hex) at that time
}

// process is one running process of a generation. Owned by the event loop.
type process struct {
	gen        *generation
	p          *os.Process
	pid        int
	started    time.Time
	ready      bool
	readyAt    time.Time
	exited     bool
	stopSent   bool
	notReady   bool   // stopped because it missed its readiness deadline
	status     string // last STATUS= it sent
	cancel     context.CancelFunc
	readyTimer *time.Timer
	killTimer  *time.Timer
}

func (p *process) stopTimers() {
	if p.cancel != nil {
		p.cancel()
	}
	if p.readyTimer != nil {
		p.readyTimer.Stop()
	}
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
}

// startGeneration makes a generation from cfg with its sockets and starts
// its process. On error nothing is left behind.
func (s *Supervisor) startGeneration(cfg *Config, rollback bool) (*generation, error) {
	g := &generation{id: s.nextID, cfg: cfg, started: time.Now(), rollback: rollback}
	s.nextID++
	for _, l := range s.listeners {
		sock, owned, err := l.socketFor()
		if err != nil {
			g.closeSockets()
			return nil, fmt.Errorf("generation %d: %w", g.id, err)
		}
		g.sockets = append(g.sockets, sock)
		g.owned = append(g.owned, owned)
	}
	if err := s.spawn(g); err != nil {
		g.closeSockets()
		return nil, err
	}
	s.gens = append(s.gens, g)
	return g, nil
}

// closeSockets closes the generation's own sockets. Where steering is on,
// connections still queued in them move to the serving socket.
func (g *generation) closeSockets() {
	for i, sock := range g.sockets {
		if g.owned[i] {
			_ = sock.Close() // nothing to do about a failed close of a socket we give up
		}
	}
	g.sockets, g.owned = nil, nil
}

// spawn starts a process for g and its readiness check.
func (s *Supervisor) spawn(g *generation) error {
	cfg := g.cfg
	exe, err := resolveCommand(cfg)
	if err != nil {
		return fmt.Errorf("generation %d: %w", g.id, err)
	}
	g.exe, g.exeSHA256 = exe, fileSHA256(exe)
	names := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		names[i] = l.spec.Name
	}
	env := s.childEnv(g)
	p, err := s.spawner.Start(handoff.Child{
		Shim:    s.opts.Shim,
		Path:    cfg.Service.Command[0],
		Args:    cfg.Service.Command,
		Dir:     cfg.Service.Directory,
		Env:     env,
		Sockets: g.sockets,
		Names:   names,
		Stdout:  s.opts.Stdout,
		Stderr:  s.opts.Stderr,

		Credential: credential(cfg.Service.Credentials),
		NoNewPrivs: cfg.Service.NoNewPrivs,
	})
	if err != nil {
		return fmt.Errorf("generation %d: %w", g.id, err)
	}
	proc := &process{gen: g, p: p, pid: p.Pid, started: time.Now()}
	g.proc = proc
	go func() {
		// Wait without reaping: until the loop reaps it, the pid (and the
		// process group id) stays ours, so signals to them cannot hit a
		// stranger that got the pid anew.
		if err := waitExited(proc.pid); err != nil {
			s.log.Error("cannot wait for process", "gen", g.id, "pid", proc.pid, "err", err)
		}
		s.send(procExited{proc: proc})
	}()
	s.log.Info("process started", "gen", g.id, "pid", proc.pid, "command", cfg.Service.Command[0])
	s.emit(Event{Kind: EventSpawned, Gen: g.id, PID: proc.pid})
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

// waitExited blocks until the child pid has exited, leaving it unreaped.
func waitExited(pid int) error {
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
func (s *Supervisor) childEnv(g *generation) []string {
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
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
