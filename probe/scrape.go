package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxScrapeBytes bounds how much of a metrics page is read. A service's own
// metrics are well below it; a larger page is refused rather than cut, since
// a cut page would drop series and look like a counter reset.
const maxScrapeBytes = 16 << 20

// startTimeMetric is the standard process collector's start time; when a
// page has it, a change of it marks a new process (a counter reset) even if
// the new counters already exceed the old ones.
const startTimeMetric = "process_start_time_seconds"

// ErrNotCounter is wrapped by a scrape's error when the metric exists but is
// neither a counter nor untyped.
var ErrNotCounter = errors.New("not a counter")

// Scrape reads a request counter from a Prometheus text exposition page
// (text/plain version 0.0.4) and sums it, and the part of it that counts
// errors, over all its series.
type Scrape struct {
	URL    string // "http://127.0.0.1:9090/metrics"
	Metric string // the counter's name as exposed: "http_requests_total"
	// Label and Match pick the errors: a series counts as errors when the
	// value of Label (empty if the series lacks it) matches Match, which
	// is anchored at both ends as PromQL's =~ is: "5.." matches "503",
	// not "1503". A nil Match counts no errors.
	Label string
	Match *regexp.Regexp
}

// Counts is one scrape's sums.
type Counts struct {
	Total  float64 // over all series of the metric
	Errors float64 // over the series whose label matched
	Series int     // how many series there were; 0 if the metric is absent
	// Start is process_start_time_seconds if the page has it, else 0.
	Start float64
}

// Fetch GETs the page, bounded by ctx, on a connection of its own (as HTTP
// checks do) and sums it. A metric that is absent gives zero counts and no
// error: a service exposes no series of a labelled counter before its first
// request.
func (s Scrape) Fetch(ctx context.Context) (Counts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return Counts{}, fmt.Errorf("scrape %s: %w", s.URL, err)
	}
	// Ask for the text format, which TextParser reads, and not OpenMetrics
	// or protobuf.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	req.Header.Set("User-Agent", "baton-probe")
	resp, err := checkClient.Do(req)
	if err != nil {
		return Counts{}, fmt.Errorf("scrape: %w", err) // *url.Error names the URL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Counts{}, fmt.Errorf("scrape %s: %s", s.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxScrapeBytes+1))
	if err != nil {
		return Counts{}, fmt.Errorf("scrape %s: %w", s.URL, err)
	}
	if len(body) > maxScrapeBytes {
		return Counts{}, fmt.Errorf("scrape %s: page larger than %d bytes", s.URL, maxScrapeBytes)
	}
	c, err := s.Parse(bytes.NewReader(body))
	if err != nil {
		return Counts{}, fmt.Errorf("scrape %s: %w", s.URL, err)
	}
	return c, nil
}

// Parse sums a page in the text exposition format.
func (s Scrape) Parse(r io.Reader) (Counts, error) {
	// The parser's zero value refuses every name; UTF-8 validation is the
	// one Prometheus itself now uses, and accepts the legacy names too.
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	if st := families[startTimeMetric]; st != nil && len(st.GetMetric()) > 0 {
		m := st.GetMetric()[0]
		c.Start = m.GetGauge().GetValue() + m.GetUntyped().GetValue() // one of them is set
	}
	mf := families[s.Metric]
	if mf == nil {
		return c, nil
	}
	if t := mf.GetType(); t != dto.MetricType_COUNTER && t != dto.MetricType_UNTYPED {
		return Counts{}, fmt.Errorf("metric %s: %w: %s", s.Metric, ErrNotCounter, t)
	}
	for _, m := range mf.GetMetric() {
		v := m.GetCounter().GetValue() + m.GetUntyped().GetValue() // one of them is set
		c.Total += v
		c.Series++
		if s.Match != nil && s.Match.MatchString(labelValue(m, s.Label)) {
			c.Errors += v
		}
	}
	return c, nil
}

// CompileMatch compiles an error matcher anchored at both ends, as PromQL
// anchors label matchers.
func CompileMatch(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("error match %q: %w", expr, err)
	}
	return re, nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Traffic is the requests and errors between two scrapes.
type Traffic struct {
	Requests, Errors float64
	// Reset is true when the counters were reset between the scrapes (a
	// new process): the figures are then those since the reset, which
	// leaves out what the old process counted after prev.
	Reset bool
}

// Since returns the traffic from prev to c. A counter that went down, or a
// process start time that changed, is a reset: counting starts again from
// zero, so c's own sums are the traffic.
func (c Counts) Since(prev Counts) Traffic {
	if c.Total < prev.Total || c.Errors < prev.Errors || (prev.Start != 0 && c.Start != 0 && c.Start != prev.Start) {
		return Traffic{Requests: c.Total, Errors: c.Errors, Reset: true}
	}
	return Traffic{Requests: c.Total - prev.Total, Errors: c.Errors - prev.Errors}
}

// ErrorRatio is Errors/Requests, and false if there were no requests.
func (t Traffic) ErrorRatio() (float64, bool) {
	if t.Requests <= 0 {
		return 0, false
	}
	return t.Errors / t.Requests, true
}
