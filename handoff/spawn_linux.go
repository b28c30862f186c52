package handoff

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

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
	// Exe, if not nil, is the executable to run, open (see
	// OpenExecutable): the program runs from this file even if Path has
	// since been renamed over or deleted, as a deploy does to the binary
	// of the generation it replaces. Path then only names the program in
	// errors; Args[0] is still the name the program sees. Start does not
	// take Exe over: the caller closes it when no more children need it.
	// A binary does not inherit the fd; a script's interpreter does (see
	// RunShim).
	Exe *os.File
}

// shimNoNewPrivs is how the spawner tells the shim to set
// PR_SET_NO_NEW_PRIVS; the shim removes it from the environment.
const shimNoNewPrivs = "BATON_EXEC_NO_NEW_PRIVS"

// shimExeFD is how the spawner tells the shim the fd of Child.Exe: the one
// after the sockets, 3+len(Sockets), so that it is no socket to a program
// that takes LISTEN_FDS from fd 3. The shim removes it from the environment.
const shimExeFD = "BATON_EXEC_FD"

// OpenExecutable opens the executable at path (following symlinks, as exec
// does; relative to baton's working directory, not Child.Dir) for
// Child.Exe. The fd is O_PATH: it pins the file (the inode) without the
// right to read it, which exec does not need; the child's credentials are
// checked when it executes it. Only a rename over path or its deletion
// leaves the opened file as it was; a write into the file itself (cp onto
// it, in place) changes what runs, so deploy by rename.
func OpenExecutable(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open executable %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd) // refused: nothing else refers to it
		return nil, fmt.Errorf("open executable %s: stat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		_ = unix.Close(fd) // refused: nothing else refers to it
		return nil, fmt.Errorf("open executable %s: not a regular file: %w", path, unix.EACCES)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Spawner starts children from one OS thread that lives as long as the
// process: PR_SET_PDEATHSIG fires when the *thread* that forked a child
// exits, so forking from a thread the Go runtime might retire would kill
// children at random. Children get SIGKILL when baton dies, run in a
// process group of their own (pgid == pid), and are started through the
// exec shim so that LISTEN_PID is their own pid.
type Spawner struct {
	reqs    chan spawnReq
	devnull int // read end for children's stdin

	guardOnce sync.Once
	guard     *guard // nil until StartGuard, or if it failed
	guardErr  error
}

// StartGuard starts the guard (see guard_linux.go) from binary, once: from
// then on, the process groups of the children Start starts are killed if
// baton dies without killing them itself. Call Reaped for each child before
// reaping it. Without a guard, a child still dies with baton, but what it
// started in its group may not.
func (s *Spawner) StartGuard(binary string) error {
	s.guardOnce.Do(func() { s.guard, s.guardErr = startGuard(binary) })
	return s.guardErr
}

// Reaped tells the guard that the child pid (and its process group) is
// gone: call it after the group was killed, before reaping the child.
func (s *Spawner) Reaped(pid int) { s.guard.remove(pid) }

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
	s.guard.add(res.pid) // the group id is the child's pid (Setpgid)
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
	if c.Exe != nil {
		exe, err := fileFD(c.Exe)
		if err != nil {
			return 0, fmt.Errorf("spawn %s: executable: %w", c.Path, err)
		}
		env = append(env, shimExeFD+"="+strconv.Itoa(len(files)))
		files = append(files, uintptr(exe))
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
	runtime.KeepAlive(c.Exe) // its fd must stay open until the fork has copied it
	if err != nil {
		if errors.Is(err, syscall.EBADF) && atFDLimit(files) {
			// The forked child moves the fds it is handed to numbers from
			// len(files) up; past RLIMIT_NOFILE, dup3 says EBADF.
			err = fmt.Errorf("%w (the fds handed to the child reach RLIMIT_NOFILE)", syscall.EMFILE)
		}
		return 0, fmt.Errorf("spawn %s: %w", c.Path, err)
	}
	return pid, nil
}

// atFDLimit reports whether arranging files in a child (fds moved above
// the highest one given, then into place) may need fd numbers at or beyond
// the soft RLIMIT_NOFILE.
func atFDLimit(files []uintptr) bool {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return false
	}
	high := uint64(len(files))
	for _, fd := range files {
		high = max(high, uint64(fd)+1)
	}
	return high+uint64(len(files)) >= lim.Cur
}

// fileFD returns f's fd without File.Fd, which would put a non-blocking file
// into blocking mode. The caller keeps f alive while it uses the fd.
func fileFD(f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := raw.Control(func(u uintptr) { fd = int(u) }); err != nil {
		// Control fails only once f is closed, with an error of
		// internal/poll's that is not os.ErrClosed.
		return -1, fmt.Errorf("%w: %w", os.ErrClosed, err)
	}
	return fd, nil
}

// withoutActivation drops variables that would make the child think it
// holds other sockets or talks to another manager than the one we say, and
// the shim's own, which only the spawner may set: a stray BATON_EXEC_FD
// would make the shim run whatever that fd is.
func withoutActivation(env []string) []string {
	out := make([]string, 0, len(env)+4)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID", "WATCHDOG_PID", shimNoNewPrivs, shimExeFD:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// RunShim is the exec shim, and the guard when os.Args[1] is GuardArg (see
// guard_linux.go). As the shim, when os.Args[1] is ShimArg, it sets LISTEN_PID
// (and WATCHDOG_PID, when WATCHDOG_USEC is set) to its own pid (which the
// exec'd program keeps), clears the ambient
// capabilities baton may hold, and execs the program named
// in os.Args[2] with argv os.Args[3:]. It returns only when os.Args do not
// ask for the shim; on failure it reports on stderr and exits 127, as a
// shell does for a command it cannot run. Call it first thing in main.
//
// With Child.Exe the program is executed from its fd (execFD), not looked
// up by name. A binary then does not inherit the fd. A script's interpreter
// does, as one extra open fd at 3+LISTEN_FDS: the kernel names the script
// to it as /dev/fd/N, so the fd must outlive the exec.
func RunShim() {
	if len(os.Args) == 2 && os.Args[1] == GuardArg {
		runGuard() // does not return
	}
	if len(os.Args) < 4 || os.Args[1] != ShimArg {
		return
	}
	path, argv := os.Args[2], os.Args[3:]
	exe := -1
	if v, ok := os.LookupEnv(shimExeFD); ok {
		os.Unsetenv(shimExeFD)
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			fmt.Fprintf(os.Stderr, "baton-exec: cannot run %s: bad %s=%q\n", path, shimExeFD, v)
			os.Exit(127)
		}
		exe = n
	}
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	if os.Getenv("WATCHDOG_USEC") != "" {
		// sd_watchdog_enabled(3): the keep-alives are asked of this pid.
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
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
	var err error
	if exe >= 0 {
		err = execFD(exe, argv, os.Environ())
	} else {
		var resolved string
		resolved, err = LookPath(path, os.Getenv("PATH"))
		if err == nil {
			err = syscall.Exec(resolved, argv, os.Environ())
		}
	}
	fmt.Fprintf(os.Stderr, "baton-exec: cannot run %s: %v\n", path, err)
	os.Exit(127)
}

// execFD executes the file open at fd, as execveat(fd, "", argv, env,
// AT_EMPTY_PATH), and returns only on failure. It tries first with fd
// close-on-exec, so that the program does not inherit it. The kernel refuses
// that for a script (ENOENT: its interpreter would be told to open
// /dev/fd/N, which the exec closes), and only then is the exec tried again
// with fd left open. (ENOENT also means a missing interpreter or ELF
// loader; the second try fails the same way.)
//
// Unlike syscall.Exec (which cannot execute an fd), this cannot restore
// the soft RLIMIT_NOFILE that the Go runtime raises at start, because Go
// keeps the original to itself: where the limit was raised, the program
// gets the hard limit less one instead of the soft limit baton started
// with. The kernel names the process (comm, as ps and top show it) after
// the file on recent kernels (verified on 6.18), after the fd number on
// older ones.
func execFD(fd int, argv, env []string) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("executable fd %d: %w", fd, err)
	}
	err := execveat(fd, argv, env)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("executable fd %d: %w", fd, err)
	}
	return execveat(fd, argv, env)
}

// execveat is execveat(fd, "", argv, env, AT_EMPTY_PATH); golang.org/x/sys
// has no wrapper. It is a raw system call, as syscall.Exec's execve is, so
// that the scheduler does not hand this thread's P to a new thread: a
// thread being created during the exec makes the kernel ignore a set-user-ID
// bit (golang/go#19546). syscall.Exec also holds a runtime lock against
// that, which cannot be had from here.
func execveat(fd int, argv, env []string) error {
	empty, err := syscall.BytePtrFromString("")
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	_, _, errno := syscall.RawSyscall6(unix.SYS_EXECVEAT, uintptr(fd),
		uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])),
		uintptr(unsafe.Pointer(&envp[0])),
		unix.AT_EMPTY_PATH, 0)
	return errno
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
