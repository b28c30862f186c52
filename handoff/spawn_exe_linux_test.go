package handoff

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["exe-report"] = exeReportHelper
}

// exeReportHelper is the "old" program: it writes to $REPORT that it ran,
// the fds it holds, its comm, and what reached it of the shim's variables
// and LISTEN_FDS.
func exeReportHelper() {
	fds, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &self); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The Go runtime holds fds of its own (cgroup files, epoll): what
	// counts is whether any fd is the executable itself.
	out := fmt.Sprintf("old\ncomm %s\n", strings.TrimSpace(string(comm)))
	for _, fd := range fds {
		link, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Dev == self.Dev && st.Ino == self.Ino {
			link = "the executable " + link
		}
		out += fmt.Sprintf("fd %d: %s\n", fd, link)
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BATON_EXEC_") || strings.HasPrefix(kv, "LISTEN_FDS=") {
			out += kv + "\n"
		}
	}
	if err := os.WriteFile(os.Getenv("REPORT"), []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// openFDs lists /proc/self/fd, leaving out the fd that reads it.
func openFDs() ([]int, error) {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	defer unix.Close(dir)
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil {
			return nil, fmt.Errorf("read /proc/self/fd: %w", err)
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var fds []int
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err == nil && fd != dir {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	return fds, nil
}

const (
	// exeOldScript reports that it ran and what its fd 4 (3+LISTEN_FDS,
	// where the shim puts the executable) is.
	exeOldScript = "#!/bin/sh\n" +
		`{ echo old; echo "fd4 $(readlink /proc/$$/fd/4)"; env | grep -E '^(BATON_EXEC_|LISTEN_FDS=)' || true; } >"$REPORT"` + "\n"
	// exeNewScript is what a deploy puts in the old one's place.
	exeNewScript = "#!/bin/sh\necho new >\"$REPORT\"\n"
)

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitChild waits for p within steerWait and returns its exit code.
func waitChild(t *testing.T, p *os.Process) int {
	t.Helper()
	done := make(chan *os.ProcessState, 1)
	go func() { st, _ := p.Wait(); done <- st }()
	select {
	case st := <-done:
		return st.ExitCode()
	case <-time.After(steerWait):
		_ = p.Kill() // the test failed; do not leave the child behind
		<-done
		t.Fatal("child did not exit")
		return -1
	}
}

// TestSpawnExeRunsTheOpenedFile: a program opened with OpenExecutable runs
// as it was when opened, after a deploy renamed another file over it or
// deleted it; a binary gets no extra fd, a script's interpreter gets the
// script at fd 3+LISTEN_FDS.
func TestSpawnExeRunsTheOpenedFile(t *testing.T) {
	testExe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		script  bool // else a binary: a copy of the test binary
		replace bool // rename a new script over it, else delete it
	}{
		{"binary renamed over", false, true},
		{"binary deleted", false, false},
		{"script renamed over", true, true},
		{"script deleted", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			app := filepath.Join(dir, "app")
			if tc.script {
				if err := os.WriteFile(app, []byte(exeOldScript), 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				copyExecutable(t, testExe, app)
			}
			f, err := OpenExecutable(app)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tc.replace {
				if err := os.WriteFile(app+".new", []byte(exeNewScript), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(app+".new", app); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(app); err != nil {
				t.Fatal(err)
			}

			sock := mustListen(t, ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}, false)
			report := filepath.Join(dir, "report")
			p, err := sp.Start(Child{
				Shim: testExe, Path: app, Args: []string{"app"}, Exe: f,
				// A stray BATON_EXEC_FD, as a service's configured
				// environment might carry, must not direct the shim.
				Env:     []string{"HANDOFF_TEST_HELPER=exe-report", "REPORT=" + report, "PATH=" + DefaultPath, shimExeFD + "=1"},
				Sockets: []*Socket{sock}, Names: []string{"http"},
				Stdout: 1, Stderr: 2,
			})
			if err != nil {
				t.Fatal(err)
			}
			if code := waitChild(t, p); code != 0 {
				t.Fatalf("child exited with %d", code)
			}
			out, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			got := string(out)
			t.Logf("report:\n%s", got)
			if !strings.HasPrefix(got, "old\n") {
				t.Fatalf("the program at the path ran, not the one opened:\n%s", got)
			}
			if strings.Contains(got, "BATON_EXEC_") || !strings.Contains(got, "LISTEN_FDS=1\n") {
				t.Errorf("environment: want LISTEN_FDS=1 and no BATON_EXEC_ variable:\n%s", got)
			}
			if tc.script {
				if want := "fd4 " + app + " (deleted)\n"; !strings.Contains(got, want) {
					t.Errorf("the script's interpreter should hold the script at fd 4 (%q):\n%s", want, got)
				}
			} else {
				if strings.Contains(got, "the executable") {
					t.Errorf("the binary holds an fd of itself:\n%s", got)
				}
				if !strings.Contains(got, "fd 0: /dev/null\n") || !strings.Contains(got, "fd 3: socket:") {
					t.Errorf("the binary should hold /dev/null at 0 and its socket at 3:\n%s", got)
				}
			}
		})
	}
}

// TestSpawnExeFailures: what cannot run is reported, and nothing starts
// from a closed Exe.
func TestSpawnExeFailures(t *testing.T) {
	testExe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	t.Run("closed Exe", func(t *testing.T) {
		f, err := OpenExecutable(testExe)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if p, err := sp.Start(Child{Shim: testExe, Path: "app", Args: []string{"app"}, Exe: f, Stdout: 1, Stderr: 2}); err == nil {
			waitChild(t, p)
			t.Fatal("started from a closed file")
		} else if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("err = %v, want os.ErrClosed", err)
		}
	})
	t.Run("not executable", func(t *testing.T) {
		// Mode 0644: not even root may execute a file without an execute bit.
		plain := filepath.Join(dir, "plain")
		if err := os.WriteFile(plain, []byte(exeNewScript), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := OpenExecutable(plain)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p, err := sp.Start(Child{Shim: testExe, Path: plain, Args: []string{"plain"}, Exe: f, Stdout: 1, Stderr: 2})
		if err != nil {
			t.Fatal(err) // the shim starts; it is the exec that fails
		}
		if code := waitChild(t, p); code != 127 {
			t.Fatalf("exit code %d, want 127", code)
		}
	})
	t.Run("OpenExecutable", func(t *testing.T) {
		if _, err := OpenExecutable(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("missing file: %v, want ErrNotExist", err)
		}
		if _, err := OpenExecutable(dir); !errors.Is(err, unix.EACCES) {
			t.Errorf("directory: %v, want EACCES", err)
		}
	})
}

// TestSpawnStrayExeFDWithoutExe: without Exe the shim looks the program up
// by name, whatever BATON_EXEC_FD the configured environment holds.
func TestSpawnStrayExeFDWithoutExe(t *testing.T) {
	testExe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := NewSpawner()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report")
	p, err := sp.Start(Child{
		Shim: testExe, Path: "sh", Args: []string{"sh", "-c", `env >"$REPORT"`},
		Env:    []string{"REPORT=" + report, "PATH=" + DefaultPath, shimExeFD + "=0", shimNoNewPrivs + "=1"},
		Stdout: 1, Stderr: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if code := waitChild(t, p); code != 0 {
		t.Fatalf("child exited with %d", code)
	}
	out, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "BATON_EXEC_") {
		t.Fatalf("a shim variable reached the program:\n%s", out)
	}
}
