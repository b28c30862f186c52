// Command hello is a small HTTP service written to run under baton (or
// systemd socket activation), with package handoff/child: it never opens a
// socket of its own but serves on the one passed to it, tells the
// supervisor when it is ready, sends watchdog pings when asked to, and on
// SIGTERM finishes the requests in flight before it exits.
//
//	/            hello from generation G pid P (version V)
//	/slow?ms=N   the same, after N milliseconds (at most 10000)
//	/healthz     ok
//
// It has one feature flag, "shout", off (0%) unless the flags file baton
// names in BATON_FLAGS_FILE says otherwise. When it is on for a request's
// key (its ?user= parameter, or else the client's IP address) the greeting
// ends in " (shouting)":
//
//	hello from generation G pid P (version V) (shouting)
//
// so that it still starts with "hello from generation G pid P (version V)".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/baton-sh/baton/handoff/child"
)

const (
	listenerName    = "http"           // the listener's name in baton.toml, passed in LISTEN_FDNAMES
	flagShout       = "shout"          // the feature flag; see the package comment
	maxSlow         = 10 * time.Second // longest /slow delay
	shutdownTimeout = 30 * time.Second // how long requests in flight get to finish after SIGTERM
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("hello: ")
	version := flag.String("version", envOr("GREETING_VERSION", "1"), "version to report in the greeting (default $GREETING_VERSION)")
	startupDelay := flag.Duration("startup-delay", 0, "simulate a slow start: wait this long before serving and sending READY=1")
	flag.Parse()

	if err := run(*version, *startupDelay); err != nil {
		log.Fatal(err)
	}
}

func run(version string, startupDelay time.Duration) error {
	ln, err := listener()
	if err != nil {
		return err
	}

	// Listen for signals before the (simulated) start-up work so that a
	// stop requested meanwhile is still a clean exit.
	ctx, stop := child.StopContext(context.Background())
	defer stop()

	// Checked now, so that a malformed WATCHDOG_USEC stops the start.
	if _, err := child.WatchdogInterval(); err != nil {
		return err
	}
	flags, err := child.NewFlags(map[string]int{flagShout: 0})
	if err != nil {
		return err
	}

	// The watchdog pings and the flags follow their file for as long as the
	// process lives, draining included.
	background, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = child.RunWatchdog(background) })     // its only error, a malformed WATCHDOG_USEC, was checked above
	wg.Go(func() { _ = flags.Watch(background, logFlags) }) // its only error is a second Watch of flags

	greeting := fmt.Sprintf("hello from generation %s pid %d (version %s)",
		envOr("BATON_GENERATION", "-"), os.Getpid(), version)
	srv := &http.Server{Handler: handler(greeting, flags), ReadHeaderTimeout: 10 * time.Second}

	select {
	case <-time.After(startupDelay):
	case <-ctx.Done():
		return nil
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// Not running under a supervisor (no NOTIFY_SOCKET) is a no-op.
	if err := child.Ready(); err != nil {
		return err
	}
	log.Printf("serving on %s: %s", ln.Addr(), greeting)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the default way

	log.Printf("stopping: finishing requests in flight")
	_ = child.Stopping() // informational only: the stop goes ahead whatever happens
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// listener returns the passed socket named "http", or else the first
// listening one.
func listener() (net.Listener, error) {
	ln, err := child.Listener(listenerName)
	if !errors.Is(err, child.ErrNoSocket) {
		return ln, err
	}
	socks, _ := child.Sockets() // what went wrong taking them is in err already
	for _, s := range socks {
		if s.Listener != nil {
			return s.Listener, nil
		}
	}
	return nil, fmt.Errorf("%w; run me under baton or systemd-socket-activate", err)
}

// logFlags logs what the flags file changed.
func logFlags(version int64, err error) {
	if err != nil {
		log.Printf("flags: keeping version %d: %v", version, err)
		return
	}
	log.Printf("flags: version %d", version)
}

// handler serves the greeting. A failed write means the client has gone, and
// there is no one left to tell: those errors are ignored.
func handler(greeting string, flags *child.Flags) http.Handler {
	greet := func(w http.ResponseWriter, r *http.Request) {
		if flags.Enabled(flagShout, requestKey(r)) {
			_, _ = io.WriteString(w, greeting+" (shouting)\n")
			return
		}
		_, _ = io.WriteString(w, greeting+"\n")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", greet)
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "ms must be a number of milliseconds", http.StatusBadRequest)
			return
		}
		delay := min(time.Duration(ms)*time.Millisecond, maxSlow)
		select {
		case <-time.After(delay):
		case <-r.Context().Done(): // client gone; Shutdown does not cancel this, so drains wait for it
			return
		}
		greet(w, r)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

// requestKey is what the feature flags split requests by: the ?user=
// parameter, or else the client's IP address (without the port, which
// changes with every connection).
func requestKey(r *http.Request) string {
	if user := r.URL.Query().Get("user"); user != "" {
		return user
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
