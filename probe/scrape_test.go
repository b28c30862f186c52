package probe

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// app is a service instrumented the usual way: promhttp's counter of
// requests by code and method, served on /metrics. Every errorEvery-th
// request to / fails with 500 (never, if errorEvery is 0).
type app struct {
	addr, metricsURL string
}

func newApp(t *testing.T, network string, errorEvery int64) app {
	t.Helper()
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "Requests by status code and method.",
	}, []string{"code", "method"})
	reg.MustRegister(requests)
	var n atomic.Int64
	work := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if errorEvery > 0 && n.Add(1)%errorEvery == 0 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux := http.NewServeMux()
	mux.Handle("/", promhttp.InstrumentHandlerCounter(requests, work))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s, _ := newServer(t, network, mux)
	return app{addr: s.Listener.Addr().String(), metricsURL: s.URL + "/metrics"}
}

// load sends n requests to a, one after another; a bounded loop.
func (a app) load(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		resp, err := checkClient.Get("http://" + a.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
}

func (a app) scrape(t *testing.T) Counts {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.scraper(t).Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (a app) scraper(t *testing.T) Scrape {
	match, err := CompileMatch("5..")
	if err != nil {
		t.Fatal(err)
	}
	return Scrape{URL: a.metricsURL, Metric: "http_requests_total", Label: "code", Match: match}
}

func TestScrapeOfALiveService(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			a := newApp(t, network, 5)
			if c := a.scrape(t); c != (Counts{}) {
				t.Errorf("before any request: %+v; want zero counts", c)
			}
			a.load(t, 100)
			first := a.scrape(t)
			if first.Total != 100 || first.Errors != 20 || first.Series != 2 {
				t.Errorf("after 100 requests: %+v; want 100 total, 20 errors, 2 series", first)
			}
			a.load(t, 50)
			tr := a.scrape(t).Since(first)
			if r, ok := tr.ErrorRatio(); tr.Requests != 50 || tr.Errors != 10 || tr.Reset || !ok || r != 0.2 {
				t.Errorf("next 50: %+v, ratio %v; want 50 requests, 10 errors, 0.2", tr, r)
			}
		})
	}
}

func TestScrapeFetchFails(t *testing.T) {
	a := newApp(t, "tcp4", 0)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		s    Scrape
	}{
		{"404", Scrape{URL: "http://" + a.addr + "/metrics/nowhere", Metric: "x"}},
		{"not a metrics page", Scrape{URL: "http://" + a.addr + "/", Metric: "x"}}, // "ok" is a sample without value
		{"bad URL", Scrape{URL: "http://[::1", Metric: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := tc.s.Fetch(ctx); err == nil {
				t.Errorf("Fetch = %+v; want an error", c)
			}
		})
	}
}

const samplePage = `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} 900
http_requests_total{code="503",method="get"} 40
http_requests_total{code="500",method="post"} 10
http_requests_total{code="1503",method="get"} 7
http_requests_total{method="get"} 3
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e9
# TYPE in_flight gauge
in_flight 4
untyped_requests{status="error"} 5
untyped_requests{status="ok"} 15
`

func TestScrapeParse(t *testing.T) {
	m5xx, _ := CompileMatch("5..")
	mErr, _ := CompileMatch("error")
	for _, tc := range []struct {
		name string
		s    Scrape
		want Counts
	}{
		{"anchored match", Scrape{Metric: "http_requests_total", Label: "code", Match: m5xx},
			Counts{Total: 960, Errors: 50, Series: 5, Start: 1.7e9}},
		{"no matcher counts no errors", Scrape{Metric: "http_requests_total", Label: "code"},
			Counts{Total: 960, Series: 5, Start: 1.7e9}},
		{"untyped", Scrape{Metric: "untyped_requests", Label: "status", Match: mErr},
			Counts{Total: 20, Errors: 5, Series: 2, Start: 1.7e9}},
		{"absent", Scrape{Metric: "grpc_server_handled_total", Label: "code", Match: m5xx},
			Counts{Start: 1.7e9}},
	} {
		t.Run("ok/"+tc.name, func(t *testing.T) {
			got, err := tc.s.Parse(strings.NewReader(samplePage))
			if err != nil || got != tc.want {
				t.Errorf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	t.Run("fail/gauge", func(t *testing.T) {
		if _, err := (Scrape{Metric: "in_flight"}).Parse(strings.NewReader(samplePage)); !errors.Is(err, ErrNotCounter) {
			t.Errorf("err = %v; want ErrNotCounter", err)
		}
	})
	t.Run("fail/syntax", func(t *testing.T) {
		if _, err := (Scrape{Metric: "x"}).Parse(strings.NewReader("x{code=500} 1\n")); err == nil {
			t.Error("no error")
		}
	})
	if _, err := CompileMatch("5.(."); err == nil {
		t.Error("CompileMatch took a bad regexp")
	}
}

func TestCountsSince(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur Counts
		want      Traffic
	}{
		{"growth", Counts{Total: 100, Errors: 5}, Counts{Total: 150, Errors: 6}, Traffic{Requests: 50, Errors: 1}},
		{"idle", Counts{Total: 100, Errors: 5}, Counts{Total: 100, Errors: 5}, Traffic{}},
		{"total went down", Counts{Total: 100, Errors: 5}, Counts{Total: 30, Errors: 1}, Traffic{30, 1, true}},
		{"errors went down", Counts{Total: 100, Errors: 5}, Counts{Total: 120, Errors: 2}, Traffic{120, 2, true}},
		{"new start time", Counts{Total: 100, Start: 1}, Counts{Total: 300, Errors: 3, Start: 2}, Traffic{300, 3, true}},
		{"start time appears", Counts{Total: 100}, Counts{Total: 300, Start: 2}, Traffic{Requests: 200}},
		{"start time vanishes", Counts{Total: 100, Start: 2}, Counts{Total: 300}, Traffic{Requests: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cur.Since(tc.prev); got != tc.want {
				t.Errorf("Since = %+v; want %+v", got, tc.want)
			}
		})
	}
	if _, ok := (Traffic{}).ErrorRatio(); ok {
		t.Error("a ratio of no requests")
	}
}
