package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is an httptest server with the semantics of examples/hello, whose
// answers a test can change, counting what it sees.
type server struct {
	*httptest.Server
	gen      atomic.Value // string: the generation named in answers
	answer   func(n int64, w http.ResponseWriter, r *http.Request) bool
	requests atomic.Int64 // requests that reached a handler
	slow     atomic.Int64 // of those, to /slow
	conns    atomic.Int64 // connections accepted
}

// newServer starts a server answering as generation gen. If answer is not
// nil it sees each request first (n counts from 1) and may answer it itself
// by returning true.
func newServer(t *testing.T, gen string, answer func(n int64, w http.ResponseWriter, r *http.Request) bool) *server {
	t.Helper()
	s := &server{answer: answer}
	s.gen.Store(gen)
	mux := http.NewServeMux()
	hello := func(w http.ResponseWriter) {
		fmt.Fprintf(w, "hello from generation %s pid %d (version 1)\n", s.gen.Load(), 42)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if n := s.requests.Add(1); s.answer == nil || !s.answer(n, w, r) {
			hello(w)
		}
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		n := s.requests.Add(1)
		s.slow.Add(1)
		if s.answer != nil && s.answer(n, w, r) {
			return
		}
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			hello(w)
		case <-r.Context().Done():
		}
	})
	s.Server = httptest.NewUnstartedServer(mux)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop stops l, failing the test if that takes longer than timeout.
func stop(t *testing.T, l *Load, timeout time.Duration) Result {
	t.Helper()
	done := make(chan Result, 1)
	go func() { done <- l.Stop() }()
	select {
	case r := <-done:
		return r
	case <-time.After(timeout):
		t.Fatalf("Stop did not return within %v", timeout)
		return Result{}
	}
}

func successes(r Result) int64 {
	var n int64
	for _, v := range r.Generations {
		n += v
	}
	return n
}

// --- Success ---

func TestCountsAddUp(t *testing.T) {
	s := newServer(t, "7", nil)
	l := Run(context.Background(), Options{URL: s.URL, Clients: 4, SlowEvery: 3, SlowMS: 20, Timeout: 5 * time.Second})
	waitUntil(t, 10*time.Second, "200 requests", func() bool { return l.Snapshot().Sent >= 200 })
	r := stop(t, l, 10*time.Second)

	if r.Failed != 0 || len(r.Errors) != 0 {
		t.Errorf("Failed = %d, Errors = %v; want none", r.Failed, r.Errors)
	}
	if got := s.requests.Load(); r.Sent != got {
		t.Errorf("Sent = %d, but the server got %d requests", r.Sent, got)
	}
	if len(r.Generations) != 1 || r.Generations["7"] != r.Sent {
		t.Errorf("Generations = %v; want all %d in generation 7", r.Generations, r.Sent)
	}
	if s.slow.Load() == 0 {
		t.Error("no request went to /slow")
	}
	// Two clients open a connection per request, two keep theirs.
	if c := s.conns.Load(); c <= 2 || c >= r.Sent {
		t.Errorf("%d connections for %d requests; want some fresh, some reused", c, r.Sent)
	}
}

func TestStopWaitsForRequestsInFlight(t *testing.T) {
	const clients = 4
	arrived := make(chan struct{}, clients)
	release := make(chan struct{})
	s := newServer(t, "1", func(_ int64, w http.ResponseWriter, r *http.Request) bool {
		arrived <- struct{}{}
		select {
		case <-release:
			return false // answer normally
		case <-r.Context().Done():
			return true
		}
	})
	l := Run(context.Background(), Options{URL: s.URL, Clients: clients, Timeout: 5 * time.Second})
	for range clients {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("clients did not all send a request")
		}
	}

	done := make(chan Result, 1)
	go func() { done <- l.Stop() }()
	select {
	case r := <-done:
		t.Fatalf("Stop returned with requests in flight: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	var r Result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the requests finished")
	}
	if r.Sent != clients || r.Failed != 0 || r.Generations["1"] != clients {
		t.Errorf("got %+v; want %d requests sent, all answered by generation 1", r, clients)
	}
}

// --- Failure ---

func TestServerErrorsAreFailures(t *testing.T) {
	var n500, nBad atomic.Int64
	s := newServer(t, "1", func(n int64, w http.ResponseWriter, r *http.Request) bool {
		switch {
		case n%4 == 0:
			n500.Add(1)
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		case n%7 == 0:
			nBad.Add(1)
			fmt.Fprintln(w, "goodbye")
			return true
		}
		return false
	})
	l := Run(context.Background(), Options{URL: s.URL, Clients: 4, SlowEvery: 5, SlowMS: 1})
	waitUntil(t, 10*time.Second, "200 requests", func() bool { return l.Snapshot().Sent >= 200 })
	r := stop(t, l, 10*time.Second)

	if got := s.requests.Load(); r.Sent != got {
		t.Errorf("Sent = %d, but the server got %d requests", r.Sent, got)
	}
	if want := n500.Load() + nBad.Load(); r.Failed != want {
		t.Errorf("Failed = %d; want %d (%d status 500, %d bad bodies)", r.Failed, want, n500.Load(), nBad.Load())
	}
	wantErrors := map[string]int64{"status 500": n500.Load(), `body "goodbye\n"`: nBad.Load()}
	if fmt.Sprint(r.Errors) != fmt.Sprint(wantErrors) {
		t.Errorf("Errors = %v; want %v", r.Errors, wantErrors)
	}
	if got := successes(r); r.Sent != got+r.Failed {
		t.Errorf("Sent = %d, but %d successes + %d failures", r.Sent, got, r.Failed)
	}
}

func TestClosedServerFailsWithoutHanging(t *testing.T) {
	s := newServer(t, "1", nil)
	s.Close()
	l := Run(context.Background(), Options{URL: s.URL, Clients: 4, Timeout: time.Second})
	waitUntil(t, 5*time.Second, "10 failures", func() bool { return l.Snapshot().Failed >= 10 })
	r := stop(t, l, 5*time.Second)

	if r.Sent != r.Failed || len(r.Generations) != 0 {
		t.Errorf("got %+v; want every request failed", r)
	}
	// Every failure has its own client port: the reasons must not.
	if len(r.Errors) != 1 || r.Errors["dial: connection refused"] != r.Failed {
		t.Errorf("Errors = %v; want %d under one reason, connection refused", r.Errors, r.Failed)
	}
}

func TestHungServerTimesOut(t *testing.T) {
	s := newServer(t, "1", func(_ int64, w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	l := Run(context.Background(), Options{URL: s.URL, Clients: 2, Timeout: 50 * time.Millisecond})
	waitUntil(t, 5*time.Second, "4 failures", func() bool { return l.Snapshot().Failed >= 4 })
	r := stop(t, l, 2*time.Second)

	if r.Sent != r.Failed || r.Errors["timeout"] != r.Failed {
		t.Errorf("got %+v; want every request timed out", r)
	}
}

func TestEndOfContextStopsSending(t *testing.T) {
	s := newServer(t, "1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	l := Run(ctx, Options{URL: s.URL, Clients: 2, SlowEvery: 2, SlowMS: 30})
	waitUntil(t, 5*time.Second, "10 requests", func() bool { return l.Snapshot().Sent >= 10 })
	cancel()
	r := stop(t, l, 5*time.Second)
	if r.Failed != 0 || r.Sent != s.requests.Load() {
		t.Errorf("got %+v, server got %d; want every request answered and counted", r, s.requests.Load())
	}
}

// --- WaitFor ---

func TestWaitFor(t *testing.T) {
	var s *server
	s = newServer(t, "1", func(n int64, w http.ResponseWriter, r *http.Request) bool {
		if n == 5 {
			s.gen.Store("2")
		}
		return false
	})
	isGen2 := func(body string) bool { return Generation(body) == "2" }

	t.Run("success", func(t *testing.T) {
		body, err := WaitFor(context.Background(), s.URL, isGen2, 5*time.Second)
		if err != nil || !isGen2(body) {
			t.Fatalf("WaitFor = %q, %v; want generation 2", body, err)
		}
		if c, n := s.conns.Load(), s.requests.Load(); c != n {
			t.Errorf("%d connections for %d polls; want a fresh one each time", c, n)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		body, err := WaitFor(context.Background(), s.URL, func(string) bool { return false }, 100*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(body, "hello") {
			t.Errorf("WaitFor = %q, %v; want the last body and a deadline error", body, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("WaitFor took %v with a 100ms timeout", d)
		}
	})
	t.Run("refused", func(t *testing.T) {
		dead := newServer(t, "1", nil)
		dead.Close()
		_, err := WaitFor(context.Background(), dead.URL, isGen2, 100*time.Millisecond)
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitFor error = %v; want it to name the refused connection", err)
		}
	})
	t.Run("status", func(t *testing.T) {
		failing := newServer(t, "1", func(_ int64, w http.ResponseWriter, _ *http.Request) bool {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return true
		})
		_, err := WaitFor(context.Background(), failing.URL, isGen2, 100*time.Millisecond)
		if want := errStatus(http.StatusServiceUnavailable); !errors.Is(err, want) {
			t.Errorf("WaitFor error = %v; want %v", err, want)
		}
	})
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errStatus(502), "status 502"},
		{errBody("nope"), `body "nope"`},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "timeout"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "read: connection reset by peer"},
		{errors.New(`Get "http://127.0.0.1:8080/": weird 10.0.0.1:443 [::1]:80`), "Get ADDR: weird ADDR ADDR"},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}
