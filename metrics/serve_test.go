//go:build linux

package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// addrHandler is a slog.Handler that hands over the "address" of the first
// record that has one: how a test learns the port Serve chose for :0.
type addrHandler struct{ addr chan string }

func (h addrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h addrHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h addrHandler) WithGroup(string) slog.Handler            { return h }
func (h addrHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "address" {
			select {
			case h.addr <- a.Value.String():
			default: // one is enough
			}
			return false
		}
		return true
	})
	return nil
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

func TestServeAnswersAndStops(t *testing.T) {
	// The network poller's own descriptors are opened once, on first use;
	// open them before counting.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	} else {
		_ = ln.Close() // only the poller mattered
	}
	fdsBefore := openFDs(t)

	m := New(newFakeSource(noStatus))
	log := addrHandler{addr: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, "127.0.0.1:0", m, slog.New(log)) }()

	var addr string
	select {
	case addr = <-log.addr:
	case err := <-served:
		t.Fatalf("Serve returned before serving: %v", err)
	case <-time.After(testWait):
		t.Fatal("Serve logged no address")
	}

	client := &http.Client{Timeout: testWait, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }() // read to the end already
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "baton_upgrades_total") {
		t.Errorf("GET /metrics: %d\n%s", code, body)
	}
	if code, body := get("/"); code != http.StatusOK || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("GET /: %d\n%s", code, body)
	}
	if code, _ := get("/elsewhere"); code != http.StatusNotFound {
		t.Errorf("GET /elsewhere: %d, want 404", code)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after ctx ended: %v, want nil", err)
		}
	case <-time.After(testWait):
		t.Fatal("Serve did not return after ctx ended")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.Close() // only its existence mattered
		t.Errorf("%s still accepts connections after Serve returned", addr)
	}
	// The client's side of each connection is closed by the transport's
	// own goroutine, shortly after the body is read: wait for it, bounded.
	n := openFDs(t)
	for deadline := time.Now().Add(testWait); n != fdsBefore && time.Now().Before(deadline); n = openFDs(t) {
		time.Sleep(10 * time.Millisecond)
	}
	if n != fdsBefore {
		t.Errorf("%d descriptors open after Serve returned, %d before", n, fdsBefore)
	}
}

func TestServeAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }() // the test is over

	m := New(newFakeSource(noStatus))
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	err = Serve(ctx, taken.Addr().String(), m, slog.New(slog.DiscardHandler))
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Serve on an address in use: %v, want EADDRINUSE", err)
	}
	t.Logf("as expected: %v", err)
}

func TestServeBadAddress(t *testing.T) {
	m := New(newFakeSource(noStatus))
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	err := Serve(ctx, "127.0.0.1", m, nil) // no port
	var addrErr *net.AddrError
	if !errors.As(err, &addrErr) {
		t.Fatalf("Serve on an address without a port: %v, want a *net.AddrError", err)
	}
	t.Logf("as expected: %v", err)
}
