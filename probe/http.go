package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// maxHTTPBody is how much of an answer an HTTP check reads, and matches
// Body and BodyRegexp against: a health endpoint's answer is small, and a
// check must not read whatever a broken one streams.
const maxHTTPBody = 64 << 10

// ErrHTTPStatus and ErrHTTPBody are wrapped by the errors of an HTTP check
// that got an answer but not a passing one.
var (
	ErrHTTPStatus = errors.New("status not in 200-399")
	ErrHTTPBody   = errors.New("body does not match")
)

// HTTP is a check that GETs a path from one address. It passes on a status
// from 200 to 399, as Kubernetes' httpGet does, and when the body matches
// Body and BodyRegexp if they are set.
//
// Each check is its own TCP connection, closed when the check ends: a
// connection kept alive from an earlier check could reach a process that no
// longer owns the listener, and the check would not measure the instance
// that does. Redirects are not followed (a 3xx passes), proxies in the
// environment are ignored, and nothing is compressed.
type HTTP struct {
	// Address is "host:port" with a literal IP: "127.0.0.1:8080",
	// "[::1]:8080". A name would be resolved at each check.
	Address string
	// Path is the path and query asked for, "/" if empty; it starts with
	// "/".
	Path string
	// Host, if set, is the Host header; else it is Address.
	Host string
	// Body, if set, must be in the first 64 KiB of the answer.
	Body string
	// BodyRegexp, if set, must match the first 64 KiB of the answer.
	BodyRegexp *regexp.Regexp
}

// URL is the URL the check asks for.
func (h HTTP) URL() (string, error) {
	if _, _, err := net.SplitHostPort(h.Address); err != nil {
		return "", fmt.Errorf("http check: address %q: %w", h.Address, err)
	}
	path := h.Path
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("http check: path %q does not start with /", path)
	}
	u, err := url.Parse("http://" + h.Address + path)
	if err != nil {
		return "", fmt.Errorf("http check: %w", err)
	}
	if u.Host != h.Address {
		return "", fmt.Errorf("http check: path %q changes the address", path)
	}
	return u.String(), nil
}

// Check asks once and returns the time from the request to the end of the
// body (or its first 64 KiB). Errors name the URL and say what was wrong:
// the connection, the status (wrapping ErrHTTPStatus, with the start of the
// body) or the body (wrapping ErrHTTPBody).
func (h HTTP) Check(ctx context.Context) (time.Duration, error) {
	u, err := h.URL()
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("http check %s: %w", u, err)
	}
	if h.Host != "" {
		req.Host = h.Host
	}
	req.Header.Set("User-Agent", "baton-probe")
	start := time.Now()
	resp, err := checkClient.Do(req)
	if err != nil {
		return time.Since(start), fmt.Errorf("http check: %w", err) // *url.Error names the URL
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody))
	_ = resp.Body.Close() // what is left unread is not the check's business
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("http check %s: reading the body: %w", u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return took, fmt.Errorf("http check %s: %w: %s: %s", u, ErrHTTPStatus, resp.Status, quoteStart(body))
	}
	if h.Body != "" && !strings.Contains(string(body), h.Body) {
		return took, fmt.Errorf("http check %s: %w: no %q in %s", u, ErrHTTPBody, h.Body, quoteStart(body))
	}
	if h.BodyRegexp != nil && !h.BodyRegexp.Match(body) {
		return took, fmt.Errorf("http check %s: %w: no match for /%s/ in %s", u, ErrHTTPBody, h.BodyRegexp, quoteStart(body))
	}
	return took, nil
}

// quoteStart quotes the start of a body for an error message.
func quoteStart(body []byte) string {
	const n = 128
	if len(body) > n {
		return fmt.Sprintf("%q...", body[:n])
	}
	return fmt.Sprintf("%q", body)
}

// checkClient is shared by all HTTP checks and scrapes; with keep-alives
// off it holds no connection between requests, so sharing it shares nothing
// but its configuration.
var checkClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                  nil, // not the environment's: the target is local
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      false,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
