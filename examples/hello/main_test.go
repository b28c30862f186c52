package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/handoff/child"
	"github.com/baton-sh/baton/handoff/flagfile"
)

// TestMain lets the test binary be hello itself (HELLO_TEST=main), and the
// exec shim in front of it (HELLO_TEST=shim) that sets LISTEN_PID to the
// pid hello will run with, as baton's shim does.
func TestMain(m *testing.M) {
	switch os.Getenv("HELLO_TEST") {
	case "shim":
		exe, err := os.Executable()
		if err == nil {
			env := []string{"HELLO_TEST=main", "LISTEN_PID=" + strconv.Itoa(os.Getpid())}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "HELLO_TEST=") && !strings.HasPrefix(kv, "LISTEN_PID=") {
					env = append(env, kv)
				}
			}
			err = syscall.Exec(exe, append([]string{"hello"}, os.Args[1:]...), env)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	case "main":
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHello runs hello as systemd or baton would: its socket from fd 3,
// NOTIFY_SOCKET, a watchdog and a flags file. It serves, says READY=1,
// pings the watchdog, follows the shout flag as the file changes, and on
// SIGTERM says STOPPING=1 and exits 0.
func TestHello(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	flagsPath := filepath.Join(dir, "flags.json")
	writeShout(t, flagsPath, 1, 100)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-version", "7")
	cmd.Env = append(os.Environ(), "HELLO_TEST=shim", "GORACE=atexit_sleep_ms=0",
		"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "BATON_GENERATION=3",
		"NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=200000", // WATCHDOG_PID unset: any pid, as sd_watchdog_enabled(3) has it
		child.FlagsFileEnv+"="+flagsPath)
	cmd.ExtraFiles = []*os.File{lnFile}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logLines := make(chan string, 100)
	go func() {
		defer close(logLines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			logLines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range logLines {
		}
		_ = cmd.Wait()
	})

	// READY=1, and watchdog pings around it.
	waitMessage(t, notify, "READY=1")
	waitMessage(t, notify, "WATCHDOG=1")
	waitLog(t, logLines, "flags: version 1")

	url := "http://" + ln.Addr().String() + "/"
	want := fmt.Sprintf("hello from generation 3 pid %d (version 7)", cmd.Process.Pid)
	if got := get(t, url+"?user=alice"); got != want+" (shouting)\n" {
		t.Fatalf("at 100%%: %q", got)
	}
	writeShout(t, flagsPath, 2, 0)
	waitLog(t, logLines, "flags: version 2")
	if got := get(t, url+"?user=alice"); got != want+"\n" {
		t.Fatalf("at 0%%: %q", got)
	}
	if got := get(t, url+"slow?ms=1&user=alice"); got != want+"\n" {
		t.Fatalf("/slow at 0%%: %q", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, notify, "STOPPING=1")
	for range logLines { // to EOF: Wait must not run before
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("hello exited with %v", err)
	}
}

// TestShoutFlag: the greeting shouts for exactly the keys the flag is on
// for, keyed by ?user= or else the client's address; the greeting itself
// is intact either way.
func TestShoutFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	t.Setenv(child.FlagsFileEnv, path)
	writeShout(t, path, 1, 10)
	flags, err := child.NewFlags(map[string]int{flagShout: 0})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler("hello from generation 1 pid 2 (version 3)", flags))
	defer srv.Close()

	for i := range 50 {
		user := fmt.Sprintf("user-%d", i)
		want := "hello from generation 1 pid 2 (version 3)\n"
		if flagfile.On(flagShout, user, 10) {
			want = "hello from generation 1 pid 2 (version 3) (shouting)\n"
		}
		if got := get(t, srv.URL+"/?user="+user); got != want {
			t.Errorf("%s: %q, want %q", user, got, want)
		}
	}
	// Without ?user=, the client's IP address is the key.
	want := "hello from generation 1 pid 2 (version 3)\n"
	if flagfile.On(flagShout, "127.0.0.1", 10) {
		want = "hello from generation 1 pid 2 (version 3) (shouting)\n"
	}
	if got := get(t, srv.URL+"/"); got != want {
		t.Errorf("keyed by address: %q, want %q", got, want)
	}
}

func writeShout(t *testing.T, path string, version, percent int) {
	t.Helper()
	f := flagfile.File{Format: flagfile.Format, Version: int64(version), Flags: map[string]flagfile.Flag{flagShout: {Percent: percent}}}
	if err := flagfile.Write(path, f); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(body)
}

// waitMessage reads notify messages until want, for at most 5 s.
func waitMessage(t *testing.T, conn *net.UnixConn, want string) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if string(buf[:n]) == want {
			return
		}
	}
}

// waitLog reads hello's log until a line that ends in want, for at most 5 s.
func waitLog(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("hello's log ended before %q", want)
			}
			if strings.HasSuffix(line, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q in hello's log in 5 s", want)
		}
	}
}
