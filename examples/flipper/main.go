// Command flipper is examples/hello upgrading itself with
// github.com/cloudflare/tableflip instead of running under a supervisor, so
// that `make bench` can compare the two with the same service. It is used
// the way tableflip's README and its net/http example recommend: it binds
// its socket with upg.Listen (or inherits it from its parent), calls
// upg.Ready() once it serves, and on SIGHUP runs upg.Upgrade(): a new copy
// of the binary starts with the socket, and once the new copy is ready the
// old one's upg.Exit() closes and it shuts its server down. Old and new
// accept on the same socket meanwhile. The PID file names the ready process
// (tableflip writes it in Ready), which is how a service manager (systemd's
// PIDFile=) or the bench finds whom to signal.
//
//	/            hello from generation G pid P (version V)
//	/slow?ms=N   the same, after N milliseconds (at most 10000)
//	/healthz     ok
//
// G is $FLIPPER_GENERATION (1 if unset); each upgrade starts the next one
// with G+1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

const (
	generationEnv   = "FLIPPER_GENERATION" // this copy's generation, set by the copy before it
	maxSlow         = 10 * time.Second     // longest /slow delay
	shutdownTimeout = 30 * time.Second     // how long requests in flight get to finish once replaced or stopped
	upgradeTimeout  = 10 * time.Second     // for a new copy to be ready, as baton's readiness timeout in the bench
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("flipper: ")
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on (a new copy inherits the socket bound for this address)")
	pidFile := flag.String("pid-file", "", "write the pid of the ready copy here")
	version := flag.String("version", envOr("GREETING_VERSION", "1"), "version to report in the greeting (default $GREETING_VERSION)")
	startupDelay := flag.Duration("startup-delay", 0, "simulate a slow start: wait this long before serving and calling Ready")
	flag.Parse()

	if err := run(*listen, *pidFile, *version, *startupDelay); err != nil {
		log.Fatal(err)
	}
}

func run(listen, pidFile, version string, startupDelay time.Duration) error {
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidFile, UpgradeTimeout: upgradeTimeout})
	if err != nil {
		return fmt.Errorf("tableflip: %w", err)
	}
	defer upg.Stop()

	gen := 1
	if s := os.Getenv(generationEnv); s != "" {
		if gen, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("$%s: %w", generationEnv, err)
		}
	}

	// SIGTERM or SIGINT stops this copy for good: Stop closes Exit, and
	// with no successor the server drains as below. Set up before the
	// (simulated) start-up work so that a stop meanwhile is a clean exit.
	stopSig := make(chan os.Signal, 1)
	signal.Notify(stopSig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stopSig
		signal.Stop(stopSig) // a second signal kills the process the default way
		upg.Stop()
	}()
	// SIGHUP: start the next copy. Upgrade returns once it is ready (then
	// Exit closes) or has failed (this copy keeps serving). A copy whose
	// parent has not exited yet refuses, as tableflip runs one upgrade at
	// a time.
	go func() {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		for range hup {
			// The new copy inherits the environment at Upgrade time;
			// this copy reads it no more after start-up.
			_ = os.Setenv(generationEnv, strconv.Itoa(gen+1)) // cannot fail for a valid name
			if err := upg.Upgrade(); err != nil {
				log.Printf("upgrade failed: %v", err)
			}
		}
	}()

	// Listen must be called before Ready; a new copy gets its parent's
	// socket for the same network and address.
	ln, err := upg.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	defer ln.Close() // Shutdown closes it first; a second close is harmless

	greeting := fmt.Sprintf("hello from generation %d pid %d (version %s)\n", gen, os.Getpid(), version)
	srv := &http.Server{Handler: handler(greeting), ReadHeaderTimeout: 10 * time.Second}

	select {
	case <-time.After(startupDelay):
	case <-upg.Exit():
		return nil
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if err := upg.Ready(); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	log.Printf("serving on %s: %s", ln.Addr(), strings.TrimSpace(greeting))

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-upg.Exit(): // a successor is ready, or we were asked to stop
	}

	log.Printf("stopping: finishing requests in flight")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// handler serves the greeting, as examples/hello does. A failed write
// means the client has gone, and there is no one left to tell: those
// errors are ignored.
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
