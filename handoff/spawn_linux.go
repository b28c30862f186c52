package handoff

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShimArg is the hidden first argument that makes baton's own binary act as
// the exec shim (see RunShim).
const ShimArg = "__baton-exec"

// Child describes one process to start with listeners handed over.
type Child struct {
	// Shim is the binary that runs RunShim when given ShimArg first,
	// normally "/proc/self/exe" (baton itself).
	Shim string
	// Path is the program to run, as the shim will exec it: absolute,
	// relative to Dir when it contains a slash, else looked up in Env's PATH.
	Path string
	Args []string // argv; Args[0] is what the program sees as its name
	Dir  string   // working directory; "" means baton's
	Env  []string // the complete environment, without LISTEN_PID
	// Sockets are handed over from fd 3 in this order; Names are their
	// LISTEN_FDNAMES entries.
	Sockets []*Socket
	Names   []string
	Stdout  int // fd to hand over as 1
	Stderr  int // fd to hand over as 2
	// Credential, if set, is who the child runs as (from the fork on, so
	// the shim too). NoNewPrivs makes the shim set PR_SET_NO_NEW_PRIVS
	// before it execs the program.
	Credential *syscall.Credential
	NoNewPrivs bool
}

// shimNoNewPrivs is how the spawner tells the shim to set
// PR_SET_NO_NEW_PRIVS; the shim removes it from the environment.
const shimNoNewPrivs = "BATON_EXEC_NO_NEW_PRIVS"

// Spawner starts children from one OS thread that lives as long as the
// process: PR_SET_PDEATHSIG fires when the *thread* that forked a child
// exits, so forking from a thread the Go runtime might retire would kill
// children at random. Children get SIGKILL when baton dies, run in a
// process group of their own (pgid == pid), and are started through the
// exec shim so that LISTEN_PID is their own pid.
type Spawner struct {
	reqs    chan spawnReq
	devnull int // read end for children's stdin
}

type spawnReq struct {
	child Child
	reply chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

// NewSpawner starts the spawning thread. The thread is meant to live as
// long as the process and is never stopped: make one per process.
func NewSpawner() (*Spawner, error) {
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	s := &Spawner{reqs: make(chan spawnReq), devnull: devnull}
	go s.loop()
	return s, nil
}

func (s *Spawner) loop() {
	runtime.LockOSThread() // never unlocked: this thread must outlive every child
	for r := range s.reqs {
		pid, err := s.start(r.child)
		r.reply <- spawnResult{pid, err}
	}
}

// Start starts the child and returns a handle to it. The caller must Wait
// for it. The held sockets keep their O_NONBLOCK flag.
func (s *Spawner) Start(c Child) (*os.Process, error) {
	if len(c.Names) != len(c.Sockets) {
		return nil, fmt.Errorf("spawn %s: %d sockets but %d names", c.Path, len(c.Sockets), len(c.Names))
	}
	reply := make(chan spawnResult, 1)
	s.reqs <- spawnReq{child: c, reply: reply}
	res := <-reply
	if res.err != nil {
		return nil, res.err
	}
	// The child is ours and unreaped, so its pid cannot be reused before we
	// wait: FindProcess gets a pidfd-backed handle for it.
	p, err := os.FindProcess(res.pid)
	if err != nil {
		_ = syscall.Kill(-res.pid, syscall.SIGKILL)
		return nil, fmt.Errorf("spawn %s: find pid %d: %w", c.Path, res.pid, err)
	}
	return p, nil
}

func (s *Spawner) start(c Child) (int, error) {
	files := []uintptr{uintptr(s.devnull), uintptr(c.Stdout), uintptr(c.Stderr)}
	for _, sock := range c.Sockets {
		if sock.FD() < 0 {
			return 0, fmt.Errorf("spawn %s: %s is closed", c.Path, sock.spec)
		}
		files = append(files, uintptr(sock.FD()))
	}
	env := withoutActivation(c.Env)
	if len(c.Sockets) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(c.Sockets)), "LISTEN_FDNAMES="+strings.Join(c.Names, ":"))
	}
	if c.NoNewPrivs {
		env = append(env, shimNoNewPrivs+"=1")
	}
	argv := append([]string{"baton-exec", ShimArg, c.Path}, c.Args...)
	pid, err := syscall.ForkExec(c.Shim, argv, &syscall.ProcAttr{
		Dir:   c.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			Credential: c.Credential,
		},
	})
	if err != nil {
		return 0, fmt.Errorf("spawn %s: %w", c.Path, err)
	}
	return pid, nil
}

// withoutActivation drops variables that would make the child think it
// holds other sockets or talks to another manager than the one we say.
func withoutActivation(env []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// RunShim is the exec shim: when os.Args[1] is ShimArg it sets LISTEN_PID to
// its own pid (which the exec'd program keeps), clears the ambient
// capabilities baton may hold, and execs the program named
// in os.Args[2] with argv os.Args[3:]. It returns only when os.Args do not
// ask for the shim; on failure it reports on stderr and exits 127, as a
// shell does for a command it cannot run. Call it first thing in main.
func RunShim() {
	if len(os.Args) < 4 || os.Args[1] != ShimArg {
		return
	}
	path, argv := os.Args[2], os.Args[3:]
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	// Capabilities baton was given to bind and steer (AmbientCapabilities=
	// under systemd) are baton's, not the service's.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		fmt.Fprintf(os.Stderr, "baton-exec: cannot clear ambient capabilities: %v\n", err)
		os.Exit(127)
	}
	if os.Getenv(shimNoNewPrivs) != "" {
		os.Unsetenv(shimNoNewPrivs)
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "baton-exec: cannot set no_new_privs: %v\n", err)
			os.Exit(127)
		}
	}
	resolved, err := LookPath(path, os.Getenv("PATH"))
	if err == nil {
		err = syscall.Exec(resolved, argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "baton-exec: cannot run %s: %v\n", path, err)
	os.Exit(127)
}

// LookPath resolves a command the way the shim will: a name with a slash is
// taken as it is (relative to the working directory), anything else is
// searched in path. The file must be a regular, executable file.
func LookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, checkExecutable(file)
	}
	if path == "" {
		path = DefaultPath
	}
	var firstErr error
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !os.IsNotExist(err) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH", file)
}

// DefaultPath is the PATH children get when baton has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return fmt.Errorf("%s: not executable: %w", p, err)
	}
	return nil
}
