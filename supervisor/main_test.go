//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/handoff/flagfile"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// TestMain lets the test binary act as baton's exec shim and as the service
// the tests supervise (the "app", selected by APP_HELPER=1).
func TestMain(m *testing.M) {
	handoff.RunShim()
	if os.Getenv("APP_HELPER") == "1" {
		os.Exit(runApp())
	}
	if err := handoff.CloseOnExecInherited(); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

// runApp is a realistic Go net/http service: it takes its listeners through
// go-systemd (which checks LISTEN_PID), says READY=1, and on SIGTERM shuts
// down gracefully. Its behaviour is steered by environment variables:
//
//	APP_VERSION       reported in every answer
//	APP_EXIT=N        exit with status N at once, before listening
//	APP_READY_DELAY=D wait D before READY=1
//	APP_NEVER_READY=1 serve, but never say READY=1
//	APP_IGNORE_TERM=1 ignore SIGTERM (baton must SIGKILL it)
//	APP_SHUTDOWN_LISTENER=1 shutdown(2) the inherited listeners, then exit
//	APP_NO_ACCEPT=1   say READY=1 but never accept a connection
//	APP_ERROR_PERCENT=N  answer N% of requests with status 500
//	APP_FLAG=NAME     add "flag NAME true|false" to every answer, read from BATON_FLAGS_FILE
//	APP_FLAG_ERRORS=N while that flag is on, answer N% of requests with status 500
//	APP_UNHEALTHY=1   /healthz fails; APP_UNHEALTHY_AFTER=D: from D after ready
//	APP_CRASH_AFTER=D exit with status 4 D after ready
//	APP_WATCHDOG_STOP_AFTER=D  stop the WATCHDOG=1 keep-alives (sent when
//	                  WATCHDOG_USEC is set) D after ready
//
// /healthz answers "ok"; /metrics has http_requests_total{code} of / and
// /slow.
//
// GET / answers "hello from generation G pid P (version V)"; /slow?ms=N
// waits N ms first; /crash exits at once with status 3.
func runApp() int {
	if code := os.Getenv("APP_EXIT"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Fprintln(os.Stderr, "app: exiting at once as asked")
		return n
	}
	lns, pcs, err := activated()
	if err != nil {
		fmt.Fprintf(os.Stderr, "app: %v (LISTEN_PID=%s pid=%d)\n", err, os.Getenv("LISTEN_PID"), os.Getpid())
		return 1
	}
	answer := fmt.Sprintf("hello from generation %s pid %d (version %s)\n",
		os.Getenv("BATON_GENERATION"), os.Getpid(), os.Getenv("APP_VERSION"))
	mux := http.NewServeMux()
	errorPercent, _ := strconv.ParseInt(os.Getenv("APP_ERROR_PERCENT"), 10, 64)
	var served, failed atomic.Int64
	flag := os.Getenv("APP_FLAG") // reported in every answer, read from BATON_FLAGS_FILE
	flagOn := func() bool {
		f, err := flagfile.Read(os.Getenv("BATON_FLAGS_FILE"))
		return err == nil && f.Flags[flag].Percent == 100
	}
	reply := func(w http.ResponseWriter) {
		on := flag != "" && flagOn()
		pct := errorPercent
		if on && os.Getenv("APP_FLAG_ERRORS") != "" {
			pct, _ = strconv.ParseInt(os.Getenv("APP_FLAG_ERRORS"), 10, 64)
		}
		if n := served.Add(1); n%100 < pct {
			failed.Add(1)
			http.Error(w, "failing as asked", http.StatusInternalServerError)
			return
		}
		if flag != "" {
			fmt.Fprintf(w, "%s flag %s %v\n", strings.TrimSuffix(answer, "\n"), flag, on)
			return
		}
		fmt.Fprint(w, answer)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { reply(w) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		reply(w)
	})
	var readyAt atomic.Int64          // unix nanos, 0 until ready
	after := func(name string) bool { // the duration in $name has passed since ready
		d, err := time.ParseDuration(os.Getenv(name))
		at := readyAt.Load()
		return err == nil && at != 0 && time.Since(time.Unix(0, at)) >= d
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("APP_UNHEALTHY") == "1" || after("APP_UNHEALTHY_AFTER") {
			http.Error(w, "unhealthy as asked", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		f := failed.Load()
		fmt.Fprintf(w, "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} %d\nhttp_requests_total{code=\"500\"} %d\n",
			served.Load()-f, f)
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) { os.Exit(3) })
	srv := &http.Server{Handler: mux}
	errc := make(chan error, len(lns))
	for _, l := range lns {
		if os.Getenv("APP_NO_ACCEPT") == "1" {
			continue // holds its listeners but never accepts: connections wait in their queues
		}
		go func(l net.Listener) { errc <- srv.Serve(l) }(l)
	}
	for _, pc := range pcs {
		go echoGeneration(pc, answer)
	}
	if os.Getenv("APP_SHUTDOWN_LISTENER") == "1" {
		// A broken version that shuts its inherited listener down (which
		// stops it for every holder of that socket), then dies.
		for _, l := range lns {
			if rc, err := l.(*net.TCPListener).SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
			}
		}
		fmt.Fprintln(os.Stderr, "app: shut the listener down; exiting")
		return 3
	}

	sigs := make(chan os.Signal, 1)
	if os.Getenv("APP_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	if d, err := time.ParseDuration(os.Getenv("APP_READY_DELAY")); err == nil {
		time.Sleep(d)
	}
	if os.Getenv("APP_NEVER_READY") != "1" {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			fmt.Fprintln(os.Stderr, "app: notify:", err)
			return 1
		}
		readyAt.Store(time.Now().UnixNano())
	}
	if d, err := time.ParseDuration(os.Getenv("APP_CRASH_AFTER")); err == nil {
		time.AfterFunc(d, func() { fmt.Fprintln(os.Stderr, "app: crashing as asked"); os.Exit(4) })
	}
	if os.Getenv("WATCHDOG_USEC") != "" {
		interval, err := daemon.SdWatchdogEnabled(false) // checks WATCHDOG_PID against our pid
		if err != nil || interval == 0 {
			fmt.Fprintf(os.Stderr, "app: WATCHDOG_USEC=%s but not for us (WATCHDOG_PID=%s, pid %d): %v\n",
				os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid(), err)
			return 1
		}
		go func() {
			for !after("APP_WATCHDOG_STOP_AFTER") {
				daemon.SdNotify(false, daemon.SdNotifyWatchdog)
				time.Sleep(interval / 3)
			}
		}()
	}
	select {
	case <-sigs:
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "app: serve:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "app: shutdown:", err)
		return 1
	}
	return 0
}

// activated takes the sockets passed by socket activation (go-systemd checks
// LISTEN_PID) and sorts them into stream listeners and datagram sockets.
func activated() ([]net.Listener, []net.PacketConn, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil, errors.New("no sockets passed")
	}
	var (
		lns []net.Listener
		pcs []net.PacketConn
	)
	for _, f := range files {
		if l, err := net.FileListener(f); err == nil {
			lns = append(lns, l)
		} else if pc, err := net.FilePacketConn(f); err == nil {
			pcs = append(pcs, pc)
		} else {
			return nil, nil, fmt.Errorf("fd %s: neither a listener nor a datagram socket", f.Name())
		}
		f.Close()
	}
	return lns, pcs, nil
}

// echoGeneration answers every datagram with the app's greeting.
func echoGeneration(pc net.PacketConn, answer string) {
	buf := make([]byte, 1500)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(answer), from)
	}
}
