// Package loadgen sends HTTP traffic at a service the way its users would
// during an upgrade, and counts what went wrong.
//
// Half of the clients open a fresh connection for every request; the other
// half keep one connection alive, so both the new-connection path (listener,
// accept queue) and the connection-draining path of an upgrade are exercised.
//
// Invariant: every request that was started is counted exactly once, as a
// success or as a failure. Stopping the load stops new requests only; the
// ones in flight finish (each bounded by Options.Timeout) and are counted.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultTimeout bounds one request when Options.Timeout is zero.
	DefaultTimeout = 10 * time.Second

	// failurePause is how long a client waits after a failed request, so
	// that a dead server costs some failures per second, not a busy loop.
	failurePause = 10 * time.Millisecond

	// maxBody is as much of a response body as is read and checked.
	maxBody = 64 << 10

	// pollInterval and pollAttempt pace WaitFor.
	pollInterval = 20 * time.Millisecond
	pollAttempt  = 2 * time.Second
)

// Options describes a load.
type Options struct {
	URL       string        // base URL, e.g. http://127.0.0.1:8080
	Clients   int           // concurrent clients; even-numbered ones use a fresh connection per request, odd ones keep one alive
	SlowEvery int           // every Nth request of a client goes to /slow?ms=SlowMS (0 = never)
	SlowMS    int           // delay asked of /slow, in milliseconds
	Timeout   time.Duration // per-request timeout, connecting and reading the body included (DefaultTimeout if 0)
}

// Result holds the totals of a load.
type Result struct {
	// Sent counts finished requests; at Stop, every request started. A
	// request in flight is counted when it ends.
	Sent int64
	// Failed counts transport errors, timeouts, statuses other than 200 and
	// bodies that do not start with "hello".
	Failed int64
	// Errors counts failures by a short reason: "status 500", "timeout",
	// "dial: connection refused", ...
	Errors map[string]int64
	// Generations counts successes by the G of "generation G" in the body
	// ("?" when the body names none). Its values add up to Sent - Failed.
	Generations map[string]int64
}

// Load is a running load; see Run.
type Load struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup // one per client goroutine
	transports []*http.Transport

	mu  sync.Mutex // guards res; held only to add or copy
	res Result
}

// Run starts o.Clients clients, each sending one request after another to
// o.URL until Stop is called or ctx ends. Call Stop in either case: it
// returns the totals and closes the clients' connections.
func Run(ctx context.Context, o Options) *Load {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	base := strings.TrimSuffix(o.URL, "/")
	root, slow := base+"/", fmt.Sprintf("%s/slow?ms=%d", base, o.SlowMS)

	ctx, cancel := context.WithCancel(ctx)
	l := &Load{
		cancel: cancel,
		res:    Result{Errors: map[string]int64{}, Generations: map[string]int64{}},
	}
	for i := range o.Clients {
		tr := &http.Transport{
			Proxy:               nil, // straight to the service, whatever HTTP_PROXY says
			DisableKeepAlives:   i%2 == 0,
			MaxIdleConnsPerHost: 1,
		}
		l.transports = append(l.transports, tr)
		hc := &http.Client{Transport: tr}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 1; ctx.Err() == nil; n++ {
				url := root
				if o.SlowEvery > 0 && n%o.SlowEvery == 0 {
					url = slow
				}
				// A request outlives the load's context: stopping must not
				// turn requests in flight into failures.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), o.Timeout)
				gen, err := Get(rctx, hc, url)
				rcancel()
				l.record(gen, err)
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(failurePause):
					}
				}
			}
		}()
	}
	return l
}

// Stop stops sending, waits for the requests in flight to finish (each is
// bounded by Options.Timeout) and returns the totals. It may be called more
// than once.
func (l *Load) Stop() Result {
	l.cancel()
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
	return l.Snapshot()
}

// Snapshot returns the totals so far. It is safe to call concurrently with
// the load and with Stop.
func (l *Load) Snapshot() Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.res
	r.Errors = make(map[string]int64, len(l.res.Errors))
	for k, v := range l.res.Errors {
		r.Errors[k] = v
	}
	r.Generations = make(map[string]int64, len(l.res.Generations))
	for k, v := range l.res.Generations {
		r.Generations[k] = v
	}
	return r
}

func (l *Load) record(gen string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Sent++
	if err != nil {
		l.res.Failed++
		l.res.Errors[Reason(err)]++
		return
	}
	l.res.Generations[gen]++
}

// errStatus and errBody are the failures of a request that got an answer.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("status %d", int(e)) }

type errBody string

func (e errBody) Error() string { return fmt.Sprintf("body %q", string(e)) }

// Get sends one GET and checks the answer as the load does: status 200 and
// a body starting with "hello". It returns the generation the body names.
func Get(ctx context.Context, hc *http.Client, url string) (string, error) {
	body, err := fetch(ctx, hc, url)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(body, "hello") {
		return "", errBody(truncate(body, 20))
	}
	return Generation(body), nil
}

// fetch sends one GET and returns the body of a 200 answer.
func fetch(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", errStatus(resp.StatusCode)
	}
	return string(body), nil
}

// Generation returns G from a body "... generation G ...", or "?" if the
// body names no generation.
func Generation(body string) string {
	_, after, ok := strings.Cut(body, "generation ")
	if f := strings.Fields(after); ok && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// addrs matches what differs between otherwise equal errors: addresses,
// ports and URLs.
var addrs = regexp.MustCompile(`"[a-z]+://[^"]*"|\[[0-9a-fA-F:.%]+\](:[0-9]+)?|[0-9]+(\.[0-9]+){3}(:[0-9]+)?`)

// Reason names a failure briefly, so that Result.Errors keeps a handful of
// keys however many requests fail.
func Reason(err error) string {
	var (
		status  errStatus
		body    errBody
		timeout interface{ Timeout() bool }
		errno   syscall.Errno
		op      *net.OpError
	)
	switch {
	case errors.As(err, &status), errors.As(err, &body):
		return err.Error()
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &timeout) && timeout.Timeout():
		return "timeout"
	case errors.As(err, &errno):
		if errors.As(err, &op) {
			return op.Op + ": " + errno.Error()
		}
		return errno.Error()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	return truncate(addrs.ReplaceAllString(err.Error(), "ADDR"), 80)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// WaitFor polls url every 20 ms, each time on a fresh connection, until it
// answers 200 with a body for which want returns true, and returns that body.
// After timeout (or when ctx ends) it returns the last 200 body it got, if
// any, and an error naming the last failure.
func WaitFor(ctx context.Context, url string, want func(body string) bool, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()

	var body string
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, pollAttempt)
		b, err := fetch(actx, hc, url)
		acancel()
		if err == nil {
			if want(b) {
				return b, nil
			}
			body, last = b, nil
		} else if ctx.Err() == nil || last == nil {
			last = err // keep a real failure over the one our own deadline caused
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return body, fmt.Errorf("waiting for %s: %w (last error: %w)", url, ctx.Err(), last)
			}
			return body, fmt.Errorf("waiting for %s: %w (last answer: %q)", url, ctx.Err(), truncate(body, 80))
		case <-tick.C:
		}
	}
}
