//go:build linux

package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/baton-sh/baton/supervisor"
)

// Backend is what the server drives; *supervisor.Supervisor satisfies it.
// Upgrade, ForceUpgrade, Rollback, Promote and Abort must return once ctx
// is done, even if the upgrade goes on. Upgrade refuses in the failed state
// with an error wrapping supervisor.ErrFailedState; ForceUpgrade does not.
// An error of Promote or Abort that is not ctx's says why there was nothing
// to do (wrapping supervisor.ErrNoCanary when no upgrade is in progress);
// so does one of SetFlag or ResetFlag why the flag was not changed
// (wrapping supervisor.ErrUnknownFlag for a flag the config does not
// declare, naming those it does). The client gets those as a result, not
// an error. Flags answers the flags by name, the flags file's version and
// its path.
type Backend interface {
	Status(ctx context.Context) (supervisor.Status, error)
	Upgrade(ctx context.Context) (int, error)
	ForceUpgrade(ctx context.Context) (int, error)
	Rollback(ctx context.Context) (int, error)
	Promote(ctx context.Context, all bool) error
	Abort(ctx context.Context) error
	Flags(ctx context.Context) ([]supervisor.FlagStatus, int64, string, error)
	SetFlag(ctx context.Context, name string, percent int) error
	ResetFlag(ctx context.Context, name string) error
	Subscribe(buffer int) (<-chan supervisor.Event, func())
	Stop()
}

// ServerOptions configure Listen.
type ServerOptions struct {
	// Path is the socket's path. Its directory is created (0755) if
	// missing.
	Path string
	// GID is the group that may use the socket besides root and baton's own
	// user (mode 0660 instead of 0600); -1 for none. Note that 0 is a
	// group (root's).
	GID int
	// Logger receives refused connections and bad requests; nil means
	// slog.Default().
	Logger *slog.Logger
	// RequestTimeout replaces the RequestTimeout constant when not 0.
	RequestTimeout time.Duration
}

// maxSocketPath is the longest path a unix socket can bind: sun_path is
// 108 bytes, with room for the terminating NUL.
const maxSocketPath = 107

// closeWait bounds Close's wait for the connections' goroutines once their
// waits were cancelled and their reads interrupted.
const closeWait = 5 * time.Second

// Server is the control socket of a running baton. Create it with Listen,
// run Serve once, and Close it when baton stops.
type Server struct {
	opts ServerOptions
	log  *slog.Logger
	ln   *net.UnixListener
	file fileID // the socket file Listen made, removed by Close if still there
	uid  int    // baton's own uid: its peers may use the socket

	// ctx ends with Close: it cancels waits and the goroutines that follow
	// upgrades started without wait.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards conns and closed. wg counts the goroutines of connections
	// and of started upgrades; Add is only called under mu with closed
	// false, or from such a goroutine, so it never races with Close's Wait.
	mu        sync.Mutex
	conns     map[*net.UnixConn]struct{}
	closed    bool
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// fileID identifies a file, so that Close removes the socket file only if
// nobody replaced it since.
type fileID struct{ dev, ino uint64 }

// Listen creates the control socket: it replaces a stale socket file
// (nobody listening), refuses a live one or any other kind of file, and sets
// the socket's mode and group.
func Listen(o ServerOptions) (*Server, error) {
	if o.Path == "" {
		return nil, errors.New("control socket: no path")
	}
	if len(o.Path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is %d bytes long; the limit is %d", o.Path, len(o.Path), maxSocketPath)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = RequestTimeout
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStale(o.Path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Close removes the file itself, and only if it is still ours.
	ln.SetUnlinkOnClose(false)
	id, err := setMode(o.Path, o.GID)
	if err != nil {
		_ = ln.Close() // the error that matters is err
		_ = os.Remove(o.Path)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts: o, log: o.Logger, ln: ln, file: id, uid: os.Getuid(),
		ctx: ctx, cancel: cancel, conns: make(map[*net.UnixConn]struct{}),
	}, nil
}

// removeStale removes a socket file nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("control socket %s: the file exists and is not a socket; not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		_ = c.Close() // only a probe
		return fmt.Errorf("control socket %s: another baton is running (it accepts connections on this socket)", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("control socket: remove stale socket: %w", err)
		}
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil // removed since the Lstat
	default:
		return fmt.Errorf("control socket %s: cannot tell whether it is in use: %w", path, err)
	}
}

// setMode makes the socket 0600, or 0660 and owned by gid, and returns the
// file's identity.
func setMode(path string, gid int) (fileID, error) {
	// SO_PEERCRED is the real gate; the mode keeps everyone else from even
	// connecting. Until the chmod the mode is what the umask left.
	if err := os.Chmod(path, 0o600); err != nil {
		return fileID{}, fmt.Errorf("control socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			return fileID{}, fmt.Errorf("control socket: set group %d: %w", gid, err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			return fileID{}, fmt.Errorf("control socket: %w", err)
		}
	}
	return statID(path)
}

func statID(path string) (fileID, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}, fmt.Errorf("control socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("control socket %s: no file identity", path)
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.opts.Path }

// Serve accepts connections and serves each in its own goroutine until
// Close; it returns nil after Close. Call it once.
func (s *Server) Serve(b Backend) error {
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var errno syscall.Errno
			if errors.As(err, &errno) && (errno == syscall.EMFILE || errno == syscall.ENFILE ||
				errno == syscall.ENOBUFS || errno == syscall.ENOMEM || errno == syscall.ECONNABORTED) {
				// Out of fds or memory for a moment: wait as net/http does
				// rather than spin or give up the socket.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("control socket: accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("control socket %s: %w", s.opts.Path, err)
		}
		backoff = 0
		if !s.track(c) {
			_ = c.Close() // Close began: nobody serves it
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c, b)
		}()
	}
}

// track registers a connection and counts its goroutine; false once Close
// began.
func (s *Server) track(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *net.UnixConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	_ = c.Close() // may already be closed
}

// goTracked runs f in a goroutine that Close waits for. Call it only from
// a tracked goroutine, so that the count is above 0.
func (s *Server) goTracked(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops accepting, ends the waits of open connections (they get a
// result saying so) and interrupts requests being read, waits (bounded)
// for the connections' goroutines, and removes the socket file if it is
// still the one Listen made. Upgrades already started go on: only the
// waiting for them ends.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		s.closed = true
		err := s.ln.Close()
		for c := range s.conns {
			// Interrupts a request read; a wait notices s.ctx.
			_ = c.SetReadDeadline(time.Now()) // fails only if c is closed
		}
		s.mu.Unlock()

		done := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeWait):
			err = errors.Join(err, fmt.Errorf("control socket: connections still busy after %s", closeWait))
		}
		if id, statErr := statID(s.opts.Path); statErr == nil && id == s.file {
			err = errors.Join(err, os.Remove(s.opts.Path))
		}
		s.closeErr = err
	})
	return s.closeErr
}
