//go:build linux

package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Timeouts of the metrics endpoint. A scrape is a small GET, so a client
// that takes longer than ReadHeaderTimeout to send its headers is holding a
// connection, not scraping; ShutdownTimeout bounds the wait for scrapes in
// flight when baton stops (a scrape waits at most StatusTimeout for the
// supervisor).
const (
	ReadHeaderTimeout = 5 * time.Second
	ShutdownTimeout   = 5 * time.Second
)

const indexPage = `<!DOCTYPE html>
<html><head><title>baton</title></head>
<body><h1>baton</h1><p><a href="/metrics">Metrics</a></p></body></html>
`

// Serve listens on address (host:port, TCP) and serves m at /metrics, and a
// page linking to it at /, until ctx ends. It returns an error if it cannot
// listen or if serving fails; a stop through ctx returns nil once the
// scrapes in flight are answered (or ShutdownTimeout has passed). A nil log
// means slog.Default().
func Serve(ctx context.Context, address string, m *Metrics, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, indexPage) // the client went away: nothing to do
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving metrics", "address", ln.Addr().String())

	select {
	case err := <-served: // Serve closed ln when it returned
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Scrapes still running after the grace period: cut them off.
		// Close's error is that of closing the listener, already closed.
		log.Warn("metrics: scrapes still in flight at shutdown; cutting them off", "err", err)
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	}
	return nil
}
