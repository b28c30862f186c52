// Command faultapp is the service of baton's fault tests and of its scale
// benchmark. It answers like examples/hello, but on every socket passed to
// it (LISTEN_FDS, any number), and it misbehaves when FAULT asks it to, so
// that a test can make one generation fail in one precise way while the
// others behave.
//
//	/            hello from generation G pid P (version V)
//	/slow?ms=N   the same, after N milliseconds (at most 10000)
//
// FAULT is a comma-separated list of:
//
//	exit               exit 3 at once, before serving or saying anything
//	never-ready        serve, but never send READY=1
//	crash-after=D      exit 2, D after sending READY=1
//	ignore-term        ignore SIGTERM: only SIGKILL stops it
//	no-keepalive       close every connection after its answer
//	shutdown-listener  shutdown(2) every passed listener, then send READY=1
//	                   (unless never-ready) and wait for SIGTERM without
//	                   serving
//	close-listener     close every passed listener, then the same
//	flood=RATE         write RATE bytes per second to stdout (RATE as
//	                   1048576, 4MiB or "max": as fast as stdout takes it)
//	grandchild         start `sleep 3600` (in the same process group) before
//	                   serving, as a worker pool or a shell pipeline would
//
// With FAULT_INSTANCE set, only the instance of that index (BATON_INSTANCE)
// misbehaves; the others serve normally.
//
// With FAULT_PIDDIR set it writes "PID STARTTIME" (STARTTIME: field 22 of
// /proc/PID/stat) to a file named after its pid there before anything
// else, and a line for its grandchild, so that a test knows every process
// that ever ran and can check that none is left. GREETING_VERSION is V.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

const maxSlow = 10 * time.Second // longest /slow delay

// faults is what FAULT asks for.
type faults struct {
	exit, neverReady, ignoreTerm, noKeepAlive   bool
	shutdownListener, closeListener, grandchild bool
	crashAfter                                  time.Duration // 0: never
	flood                                       int64         // bytes/s; -1: as fast as possible; 0: none
}

func main() {
	log.SetFlags(0)
	log.SetPrefix(fmt.Sprintf("faultapp[%d]: ", os.Getpid()))
	if err := record(os.Getpid()); err != nil {
		log.Fatal(err)
	}
	f, err := parseFaults(os.Getenv("FAULT"))
	if err != nil {
		log.Fatal(err)
	}
	if only := os.Getenv("FAULT_INSTANCE"); only != "" && only != os.Getenv("BATON_INSTANCE") {
		f = faults{}
	}
	if f.grandchild {
		cmd := exec.Command("sleep", "3600")
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		if err := record(cmd.Process.Pid); err != nil {
			log.Fatal(err)
		}
		go func() { _ = cmd.Wait() }() // reaped if it ends first; its exit says nothing
	}
	if f.exit {
		log.Print("FAULT=exit: exiting at once")
		os.Exit(3)
	}
	if err := run(f); err != nil {
		log.Fatal(err)
	}
}

func parseFaults(s string) (faults, error) {
	var f faults
	for _, item := range strings.Split(s, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(item), "=")
		switch key {
		case "":
		case "exit":
			f.exit = true
		case "never-ready":
			f.neverReady = true
		case "ignore-term":
			f.ignoreTerm = true
		case "no-keepalive":
			f.noKeepAlive = true
		case "shutdown-listener":
			f.shutdownListener = true
		case "close-listener":
			f.closeListener = true
		case "grandchild":
			f.grandchild = true
		case "crash-after":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return f, fmt.Errorf("FAULT: crash-after=%q: want a positive duration", val)
			}
			f.crashAfter = d
		case "flood":
			n, err := parseRate(val)
			if err != nil {
				return f, fmt.Errorf("FAULT: flood=%q: %w", val, err)
			}
			f.flood = n
		default:
			return f, fmt.Errorf("FAULT: unknown fault %q", key)
		}
	}
	return f, nil
}

// record appends "PID STARTTIME" to FAULT_PIDDIR/<own pid>, if it is set.
func record(pid int) error {
	dir := os.Getenv("FAULT_PIDDIR")
	if dir == "" {
		return nil
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d %s\n", pid, fields[19]); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func parseRate(s string) (int64, error) {
	if s == "max" {
		return -1, nil
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = n, m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want bytes per second (1048576, 4MiB) or max")
	}
	return n * mult, nil
}

func run(f faults) error {
	files := activation.Files(true) // checks LISTEN_PID, sets close-on-exec
	if len(files) == 0 {
		return errors.New("no socket passed (LISTEN_FDS); run me under baton")
	}
	var lns []net.Listener
	for _, file := range files {
		ln, err := net.FileListener(file) // a dup; the file's own fd goes below
		if err != nil {
			return fmt.Errorf("fd %s: %w", file.Name(), err)
		}
		_ = file.Close() // ln holds the socket through its own fd
		lns = append(lns, ln)
	}

	// SIGTERM is caught (or ignored) before anything that takes time, so
	// that a stop asked for meanwhile is a clean exit.
	term := make(chan os.Signal, 1)
	if f.ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	}
	if f.flood != 0 {
		go flood(f.flood)
	}

	if f.shutdownListener || f.closeListener {
		for _, ln := range lns {
			if f.closeListener {
				_ = ln.Close() // closing our fd: the socket lives on in baton
				continue
			}
			if err := shutdownListener(ln); err != nil {
				return err
			}
		}
		log.Printf("FAULT: listeners %s; never-ready=%v", map[bool]string{true: "closed", false: "shut down"}[f.closeListener], f.neverReady)
		if !f.neverReady {
			if err := notify(daemon.SdNotifyReady); err != nil {
				return err
			}
		}
		<-term
		return nil
	}

	greeting := fmt.Sprintf("hello from generation %s pid %d (version %s)\n",
		envOr("BATON_GENERATION", "-"), os.Getpid(), envOr("GREETING_VERSION", "1"))
	srv := &http.Server{Handler: handler(greeting), ReadHeaderTimeout: 10 * time.Second}
	srv.SetKeepAlivesEnabled(!f.noKeepAlive)
	var wg sync.WaitGroup
	served := make(chan error, len(lns))
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				served <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		}()
	}

	if f.neverReady {
		log.Printf("FAULT=never-ready: serving %d listeners without READY=1", len(lns))
	} else if err := notify(daemon.SdNotifyReady); err != nil {
		return err
	}
	var crash <-chan time.Time
	if f.crashAfter > 0 {
		crash = time.After(f.crashAfter)
	}
	select {
	case err := <-served:
		return err
	case <-crash:
		log.Printf("FAULT=crash-after=%v: crashing", f.crashAfter)
		os.Exit(2)
	case <-term:
	}
	signal.Stop(term)                   // a second signal kills the process the default way
	_ = notify(daemon.SdNotifyStopping) // informational: the stop goes ahead whatever happens
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	wg.Wait()
	return nil
}

// shutdownListener calls shutdown(2) on the socket behind ln, without
// touching its blocking mode (os.File.Fd would).
func shutdownListener(ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%s: not a socket", ln.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RDWR) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("shutdown(2) %s: %w", ln.Addr(), serr)
	}
	return nil
}

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	return nil
}

// flood writes to stdout at rate bytes per second (-1: as fast as it can)
// until the process ends. A write error (stdout closed) ends it.
func flood(rate int64) {
	line := []byte(strings.Repeat("flood ", 10) + "\n")
	chunk := make([]byte, 0, 64<<10)
	for len(chunk)+len(line) <= cap(chunk) {
		chunk = append(chunk, line...)
	}
	const tick = 10 * time.Millisecond
	var budget int64
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if rate > 0 {
			<-t.C
			budget += rate * int64(tick) / int64(time.Second)
		}
		for rate < 0 || budget > 0 {
			n := int64(len(chunk))
			if rate > 0 {
				n = min(n, budget)
				budget -= n
			}
			if _, err := os.Stdout.Write(chunk[:n]); err != nil {
				return
			}
		}
	}
}

func handler(greeting string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, greeting) // the client has gone: nobody to tell
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "ms must be a number of milliseconds", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(min(time.Duration(ms)*time.Millisecond, maxSlow)):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, greeting)
	})
	return mux
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
