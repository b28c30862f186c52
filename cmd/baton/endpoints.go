//go:build linux

package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/metrics"
	"github.com/baton-sh/baton/supervisor"
)

// endpoints are the control socket and the metrics listener: what a running
// baton answers on besides the service's own sockets. They are let go
// during a self-upgrade, so that the new baton can make its own, and made
// anew if the new baton fails.
type endpoints struct {
	cfg *supervisor.Config
	sup *supervisor.Supervisor
	log *slog.Logger
	m   *metrics.Metrics // nil without [metrics] address
	// failed receives an error when metrics cannot be served; baton stops.
	failed chan error

	mu          sync.Mutex // guards the three below; held only to swap them
	ctrl        *control.Server
	cancel      context.CancelFunc // stops metrics.Serve
	metricsDone chan struct{}      // closed when metrics.Serve has returned
}

func newEndpoints(cfg *supervisor.Config, sup *supervisor.Supervisor, log *slog.Logger) *endpoints {
	e := &endpoints{cfg: cfg, sup: sup, log: log, failed: make(chan error, 1)}
	if cfg.Metrics.Address != "" {
		e.m = metrics.New(sup) // subscribes now, before the supervisor runs
	}
	return e
}

// start makes the control socket (an error if another baton has it) and
// starts serving metrics.
func (e *endpoints) start() error {
	ctrl, err := control.Listen(control.ServerOptions{Path: e.cfg.Control.Socket, GID: e.cfg.Control.GID, Logger: e.log})
	if err != nil {
		return err
	}
	go func() {
		if err := ctrl.Serve(e.sup); err != nil {
			e.log.Error("control socket failed; baton goes on without it", "err", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.mu.Lock()
	e.ctrl, e.cancel, e.metricsDone = ctrl, cancel, done
	e.mu.Unlock()
	if e.m == nil {
		close(done)
	} else {
		go func() {
			defer close(done)
			// Metrics are optional, but an operator who asked for them and
			// cannot have them should know at once: baton stops.
			if err := metrics.Serve(ctx, e.cfg.Metrics.Address, e.m, e.log); err != nil {
				select {
				case e.failed <- err:
				default:
				}
				e.sup.Stop()
			}
		}()
	}
	return nil
}

// stop closes the control socket (removing its file) and stops serving
// metrics, returning once the metrics address is free. It may be called
// more than once.
func (e *endpoints) stop() {
	e.mu.Lock()
	ctrl, cancel, done := e.ctrl, e.cancel, e.metricsDone
	e.ctrl, e.cancel, e.metricsDone = nil, nil, nil
	e.mu.Unlock()
	if ctrl != nil {
		_ = ctrl.Close() // nothing to do about it: baton is letting the socket go
	}
	if cancel != nil {
		cancel()
		<-done // bounded: metrics.Serve shuts down within its ShutdownTimeout
	}
}

// runMetrics counts the supervisor's events until ctx ends.
func (e *endpoints) runMetrics(ctx context.Context) {
	if e.m != nil {
		e.m.Run(ctx)
	}
}
