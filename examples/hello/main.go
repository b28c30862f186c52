// Command hello is a small HTTP service written to run under baton (or
// systemd socket activation): it never opens a socket of its own but serves
// on the one passed to it, tells the supervisor when it is ready, and on
// SIGTERM finishes the requests in flight before it exits.
//
//	/            hello from generation G pid P (version V)
//	/slow?ms=N   the same, after N milliseconds (at most 10000)
//	/healthz     ok
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
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

const (
	listenerName    = "http"           // the listener's name in baton.toml, passed in LISTEN_FDNAMES
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	greeting := fmt.Sprintf("hello from generation %s pid %d (version %s)\n",
		envOr("BATON_GENERATION", "-"), os.Getpid(), version)
	srv := &http.Server{Handler: handler(greeting), ReadHeaderTimeout: 10 * time.Second}

	select {
	case <-time.After(startupDelay):
	case <-ctx.Done():
		return nil
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// Not running under a supervisor (no NOTIFY_SOCKET) is a no-op.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return fmt.Errorf("notify %s: %w", daemon.SdNotifyReady, err)
	}
	log.Printf("serving on %s: %s", ln.Addr(), strings.TrimSpace(greeting))

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the default way

	log.Printf("stopping: finishing requests in flight")
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping) // informational only: the stop goes ahead whatever happens
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// listener returns the passed socket named "http", or else the first one.
func listener() (net.Listener, error) {
	// ListenersWithNames unsets LISTEN_FDNAMES, and its map has no order:
	// note the names in fd order first.
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("listening sockets: %w", err)
	}
	if ls := byName[listenerName]; len(ls) > 0 {
		return ls[0], nil
	}
	for i, name := range names {
		if name == "" {
			name = "LISTEN_FD_" + strconv.Itoa(3+i) // go-systemd's name for an unnamed fd
		}
		if ls := byName[name]; len(ls) > 0 {
			return ls[0], nil
		}
	}
	for _, ls := range byName { // LISTEN_FDNAMES shorter than LISTEN_FDS
		return ls[0], nil
	}
	return nil, errors.New("no listening socket passed (LISTEN_FDS); run me under baton or systemd-socket-activate")
}

// handler serves the greeting. A failed write means the client has gone, and
// there is no one left to tell: those errors are ignored.
func handler(greeting string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, greeting)
	})
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
		_, _ = io.WriteString(w, greeting)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
