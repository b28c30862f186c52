package probe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newServer serves h on a free port of network's loopback address
// ("tcp4" or "tcp6"), skipping the test if there is none, and counts the
// connections it accepts.
func newServer(t *testing.T, network string, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
	l, err := net.Listen(network, addr)
	if err != nil {
		if network == "tcp6" {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

// healthMux answers the paths the HTTP check tests ask for.
func healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("status: ok, v1.2.3")) })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fail", http.StatusFound) })
	mux.HandleFunc("/399", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(399) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "app.example" {
			http.Error(w, "wrong host "+r.Host, http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("full=" + r.URL.Query().Get("full")))
	})
	return mux
}

func TestHTTPCheck(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			s, conns := newServer(t, network, healthMux())
			addr := s.Listener.Addr().String()
			passes := []struct {
				name string
				h    HTTP
			}{
				{"200", HTTP{Path: "/ok"}},
				{"204", HTTP{Path: "/empty"}},
				{"3xx not followed", HTTP{Path: "/redirect"}},
				{"399", HTTP{Path: "/399"}},
				{"body substring", HTTP{Path: "/ok", Body: "status: ok"}},
				{"body regexp", HTTP{Path: "/ok", BodyRegexp: regexp.MustCompile(`v\d+\.\d+`)}},
				{"host header", HTTP{Path: "/host", Host: "app.example"}},
				{"query", HTTP{Path: "/query?full=1", Body: "full=1"}},
			}
			fails := []struct {
				name string
				h    HTTP
				want error
			}{
				{"404", HTTP{Path: "/nowhere"}, ErrHTTPStatus},
				{"503", HTTP{Path: "/fail"}, ErrHTTPStatus},
				{"wrong host", HTTP{Path: "/host"}, ErrHTTPStatus},
				{"body substring missing", HTTP{Path: "/ok", Body: "status: degraded"}, ErrHTTPBody},
				{"body regexp missing", HTTP{Path: "/ok", BodyRegexp: regexp.MustCompile(`^v`)}, ErrHTTPBody},
			}
			checks := 0
			for _, tc := range passes {
				t.Run("pass/"+tc.name, func(t *testing.T) {
					tc.h.Address = addr
					checks++
					if _, err := Once(context.Background(), tc.h, 5*time.Second); err != nil {
						t.Error(err)
					}
				})
			}
			for _, tc := range fails {
				t.Run("fail/"+tc.name, func(t *testing.T) {
					tc.h.Address = addr
					checks++
					_, err := Once(context.Background(), tc.h, 5*time.Second)
					if !errors.Is(err, tc.want) {
						t.Errorf("err = %v; want %v", err, tc.want)
					}
				})
			}
			// Each check was a connection of its own, closed after it.
			if got := conns.Load(); got != int64(checks) {
				t.Errorf("%d checks made %d connections", checks, got)
			}
		})
	}
}

func TestHTTPCheckErrorSaysWhy(t *testing.T) {
	s, _ := newServer(t, "tcp4", healthMux())
	_, err := HTTP{Address: s.Listener.Addr().String(), Path: "/fail"}.Check(context.Background())
	for _, want := range []string{s.URL + "/fail", "503", "database down"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want it to say %q", err, want)
		}
	}
}

func TestHTTPCheckMeasuresLatency(t *testing.T) {
	const delay = 30 * time.Millisecond
	s, _ := newServer(t, "tcp4", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay) // the latency being measured
	}))
	d, err := HTTP{Address: s.Listener.Addr().String()}.Check(context.Background())
	if err != nil || d < delay {
		t.Errorf("Check = %v, %v; want at least %v", d, err, delay)
	}
}

func TestHTTPCheckTimesOut(t *testing.T) {
	release := make(chan struct{})
	s, _ := newServer(t, "tcp4", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release) // before s.Close, which waits for the handler
	start := time.Now()
	_, err := Once(context.Background(), HTTP{Address: s.Listener.Addr().String()}, 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("err = %v; want ErrTimeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a 50ms timeout took %v", took)
	}
}

func TestHTTPCheckFailsWithoutListener(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var op *net.OpError
	if _, err := (HTTP{Address: addr}).Check(context.Background()); !errors.As(err, &op) {
		t.Errorf("err = %v; want a *net.OpError", err)
	}
}

func TestHTTPCheckRefusesBadTargets(t *testing.T) {
	for _, h := range []HTTP{
		{Address: "127.0.0.1", Path: "/"},
		{Address: "::1:80", Path: "/"},
		{Address: "127.0.0.1:80", Path: "healthz"},
		{Address: "127.0.0.1:80", Path: "/%zz"},
	} {
		if _, err := h.Check(context.Background()); err == nil {
			t.Errorf("%+v: no error", h)
		}
	}
	if u, err := (HTTP{Address: "[::1]:8080"}).URL(); err != nil || u != "http://[::1]:8080/" {
		t.Errorf("URL = %q, %v", u, err)
	}
}

func TestTCPCheck(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			s, _ := newServer(t, network, healthMux())
			if _, err := (TCP{Address: s.Listener.Addr().String()}).Check(context.Background()); err != nil {
				t.Errorf("pass: %v", err)
			}
			addr := s.Listener.Addr().String()
			s.Close()
			var op *net.OpError
			if _, err := (TCP{Address: addr}).Check(context.Background()); !errors.As(err, &op) {
				t.Errorf("fail: err = %v; want a *net.OpError", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := (TCP{Address: addr}).Check(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled: err = %v", err)
			}
		})
	}
}
