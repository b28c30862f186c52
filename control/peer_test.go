//go:build linux

package control

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

const nobody = 65534

// runAsNobody runs the status-client helper as uid 65534 with the given
// groups against socket, and returns its exit code and output.
func runAsNobody(t *testing.T, dir, socket string, gid uint32, groups []uint32) (int, string) {
	t.Helper()
	helpersUsed.Store("status-client", true)
	// nobody must be able to run the test binary: a copy in a 0755 dir.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	if _, err := os.Stat(bin); err != nil {
		in, err := os.Open(self)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"HELPER=status-client", "SOCKET=" + socket}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: gid, Groups: groups}}
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// publicDir is a directory nobody can enter (t.TempDir's are 0700).
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "baton-control-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
}

// TestPeerCredentials: as root, a client running as nobody connects (the
// socket is made world-writable for the test, so that the file mode does
// not stop it) and is refused by its credentials, and the refusal is
// logged; in the configured group, by primary or supplementary group, it
// is served.
func TestPeerCredentials(t *testing.T) {
	needRoot(t)
	dir := publicDir(t)
	const other = 12345 // a group nobody is in

	t.Run("refused", func(t *testing.T) {
		s := startServer(t, newFake(), ServerOptions{Path: filepath.Join(dir, "refuse.sock"), GID: other})
		if err := os.Chmod(s.Path(), 0o666); err != nil {
			t.Fatal(err)
		}
		code, out := runAsNobody(t, dir, s.Path(), nobody, nil)
		if code != 3 || out != "permission denied" {
			t.Fatalf("nobody's client: exit %d %q, want 3 and \"permission denied\"", code, out)
		}
		log := s.log.String()
		if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "uid=65534 gid=65534 pid=") {
			t.Errorf("refusal not logged with uid, gid and pid:\n%s", log)
		}
		// Root still is served.
		if got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus}); len(got) != 1 || got[0].Type != TypeStatus {
			t.Errorf("root after a refusal: %s", kinds(got))
		}
	})
	t.Run("primary group", func(t *testing.T) {
		s := startServer(t, newFake(), ServerOptions{Path: filepath.Join(dir, "group.sock"), GID: nobody})
		if code, out := runAsNobody(t, dir, s.Path(), nobody, nil); code != 0 {
			t.Fatalf("client in the group: exit %d %q, want 0", code, out)
		}
	})
	t.Run("supplementary group", func(t *testing.T) {
		s := startServer(t, newFake(), ServerOptions{Path: filepath.Join(dir, "supp.sock"), GID: other})
		if code, out := runAsNobody(t, dir, s.Path(), nobody, []uint32{other}); code != 0 {
			t.Fatalf("client with the group as a supplementary one: exit %d %q, want 0", code, out)
		}
	})
	t.Run("file mode keeps others out", func(t *testing.T) {
		s := startServer(t, newFake(), ServerOptions{Path: filepath.Join(dir, "mode.sock"), GID: other})
		code, out := runAsNobody(t, dir, s.Path(), nobody, nil)
		if code != 4 || !strings.Contains(out, "permission denied") {
			t.Fatalf("client outside the group on a 0660 socket: exit %d %q, want 4 and a connect error", code, out)
		}
	})
}

func TestSocketMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		gid  int
		mode os.FileMode
	}{
		{"no group", -1, 0o600},
		{"group", os.Getgid(), 0o660}, // a group root and non-root alike may set
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t)
			o.GID = tc.gid
			s := startServer(t, newFake(), o)
			fi, err := os.Lstat(s.Path())
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tc.mode {
				t.Errorf("mode %v, want a socket with %v", fi.Mode(), tc.mode)
			}
			if tc.gid >= 0 {
				if gid := int(fi.Sys().(*syscall.Stat_t).Gid); gid != tc.gid {
					t.Errorf("group %d, want %d", gid, tc.gid)
				}
			}
		})
	}
	t.Run("group as root", func(t *testing.T) {
		needRoot(t)
		o := options(t)
		o.GID = nobody
		s := startServer(t, newFake(), o)
		fi, err := os.Lstat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != nobody || fi.Mode().Perm() != 0o660 {
			t.Errorf("group %d mode %v, want %d and 0660", gid, fi.Mode().Perm(), nobody)
		}
	})
	t.Run("parent created", func(t *testing.T) {
		o := options(t)
		o.Path = filepath.Join(filepath.Dir(o.Path), "run", "baton", "web.sock")
		s := startServer(t, newFake(), o)
		fi, err := os.Stat(filepath.Dir(s.Path()))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("parent: %v %v, want 0755", fi.Mode(), err)
		}
	})
}

// TestExistingSocketFile: a stale socket is replaced, a live one refused
// (and left working), and a file of another kind left alone.
func TestExistingSocketFile(t *testing.T) {
	t.Run("stale", func(t *testing.T) {
		o := options(t)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.Path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		s := startServer(t, newFake(), o)
		if got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus}); len(got) != 1 || got[0].Type != TypeStatus {
			t.Errorf("status on a replaced socket: %s", kinds(got))
		}
	})
	t.Run("live", func(t *testing.T) {
		o := options(t)
		s := startServer(t, newFake(), o)
		before, _ := os.Lstat(o.Path)
		second, err := Listen(o)
		if err == nil {
			second.Close()
			t.Fatal("a second server on a live socket")
		}
		if !strings.Contains(err.Error(), "another baton is running") {
			t.Errorf("error %q, want it to say another baton is running", err)
		}
		after, _ := os.Lstat(o.Path)
		if !os.SameFile(before, after) {
			t.Error("the live socket file was replaced")
		}
		if got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus}); len(got) != 1 || got[0].Type != TypeStatus {
			t.Errorf("the first server after a refused second: %s", kinds(got))
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		o := options(t)
		if err := os.WriteFile(o.Path, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
		if s, err := Listen(o); err == nil {
			s.Close()
			t.Fatal("listened over a regular file")
		}
		if b, err := os.ReadFile(o.Path); err != nil || string(b) != "precious" {
			t.Errorf("the file: %q %v", b, err)
		}
	})
	t.Run("replaced while running", func(t *testing.T) {
		// Close removes the socket file only if it is still the one
		// Listen made.
		o := options(t)
		s, err := Listen(o)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(o.Path)
		if err := os.WriteFile(o.Path, []byte("someone else's"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := os.Stat(o.Path); err != nil {
			t.Errorf("Close removed a file it did not make: %v", err)
		}
	})
}

func TestParseGroups(t *testing.T) {
	st := []byte("Name:\tsh\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n")
	if g, err := parseGroups(st); err != nil || !reflect.DeepEqual(g, []int{4, 24, 27}) {
		t.Errorf("got %v %v", g, err)
	}
	if g, err := parseGroups([]byte("Groups:\n")); err != nil || len(g) != 0 {
		t.Errorf("empty: %v %v", g, err)
	}
	if _, err := parseGroups([]byte("Name:\tsh\n")); err == nil {
		t.Error("no Groups: line accepted")
	}
}
