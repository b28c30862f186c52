package probe

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDefaultAnalysisConfigIsValid(t *testing.T) {
	c := DefaultAnalysisConfig()
	c.MetricsPath = "/metrics"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Rules[0] = "changed"
	if DefaultRules[0] != RuleCrashes {
		t.Error("DefaultAnalysisConfig shares its Rules with DefaultRules")
	}
}

// TestAnalysisConfigDecodes: an [analysis] section decodes onto the
// defaults strictly, keys it sets replace them and the rest stay.
func TestAnalysisConfigDecodes(t *testing.T) {
	const text = `
[analysis]
interval = "30s"
measurements = 10
failure_limit = 2
rules = ["error_ratio", "rss", "cpu"]
min_requests = 50
metrics_path = "/metrics"
error_metric = "grpc_server_handled_total"
error_label = "grpc_code"
error_match = "Internal|Unavailable"
max_error_ratio_factor = 1.5
max_latency_p99_margin = "100ms"
max_rss_margin = "64MiB"
max_cpu_margin = 0.5
`
	var file struct {
		Analysis AnalysisConfig `toml:"analysis"`
	}
	file.Analysis = DefaultAnalysisConfig()
	md, err := toml.Decode(text, &file)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("keys not decoded: %v", u)
	}
	got := file.Analysis
	want := DefaultAnalysisConfig()
	want.Interval, want.Measurements, want.FailureLimit = 30*time.Second, 10, 2
	want.Rules = []string{RuleErrorRatio, RuleRSS, RuleCPU}
	want.MinRequests = 50
	want.MetricsPath = "/metrics"
	want.ErrorMetric, want.ErrorLabel, want.ErrorMatch = "grpc_server_handled_total", "grpc_code", "Internal|Unavailable"
	want.MaxErrorRatioFactor = 1.5
	want.MaxLatencyP99Margin = 100 * time.Millisecond
	want.MaxRSSMargin = 64 * MiB
	want.MaxCPUMargin = 0.5
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
	if err := file.Analysis.Validate(); err != nil {
		t.Error(err)
	}

	var b struct{ M Bytes }
	if _, err := toml.Decode("M = 1048576", &b); err != nil || b.M != MiB {
		t.Errorf("integer size: %v, %v", b.M, err)
	}
	if _, err := toml.Decode(`M = "lots"`, &b); err == nil { // toml keeps the cause as text only
		t.Errorf("bad size: %v", err)
	}
}

func TestAnalysisConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		key    string
		change func(*AnalysisConfig)
	}{
		{"interval", func(c *AnalysisConfig) { c.Interval = 0 }},
		{"measurements", func(c *AnalysisConfig) { c.Measurements = 0 }},
		{"failure_limit", func(c *AnalysisConfig) { c.FailureLimit = -1 }},
		{"min_requests", func(c *AnalysisConfig) { c.MinRequests = -1 }},
		{"min_checks", func(c *AnalysisConfig) { c.MinChecks = 0 }},
		{"max_crashes", func(c *AnalysisConfig) { c.MaxCrashes = -1 }},
		{"max_latency_p99_margin", func(c *AnalysisConfig) { c.MaxLatencyP99Margin = -time.Second }},
		{"max_error_ratio_factor", func(c *AnalysisConfig) { c.MaxErrorRatioFactor = -2 }},
		{"max_cpu_margin", func(c *AnalysisConfig) { c.MaxCPUMargin = math.NaN() }},
		{"rules is empty", func(c *AnalysisConfig) { c.Rules = nil }},
		{`unknown rule "latency"`, func(c *AnalysisConfig) { c.Rules = []string{"latency"} }},
		{`"rss" twice`, func(c *AnalysisConfig) { c.Rules = []string{RuleRSS, RuleRSS} }},
		{"metrics_path", func(c *AnalysisConfig) { c.MetricsPath = "" }},
		{"error_metric", func(c *AnalysisConfig) { c.ErrorMetric = "" }},
		{"error_label", func(c *AnalysisConfig) { c.ErrorLabel = "" }},
		{"error match", func(c *AnalysisConfig) { c.ErrorMatch = "5(" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c := DefaultAnalysisConfig()
			c.MetricsPath = "/metrics"
			tc.change(&c)
			err := c.Validate()
			if !errors.Is(err, ErrAnalysisConfig) || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("err = %v; want ErrAnalysisConfig naming %s", err, tc.key)
			}
			if _, err := NewAnalysis(c); !errors.Is(err, ErrAnalysisConfig) {
				t.Errorf("NewAnalysis took it: %v", err)
			}
		})
	}
	// Without error_ratio the scrape settings are not needed.
	c := DefaultAnalysisConfig()
	c.Rules = []string{RuleCrashes}
	if err := c.Validate(); err != nil {
		t.Errorf("crashes alone: %v", err)
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bytes
	}{
		{"0", 0}, {"4096", 4096}, {"4096B", 4096}, {"512KiB", 512 * KiB}, {"50MiB", 50 * MiB},
		{"1.5GiB", 3 * GiB / 2}, {"2 TiB", 2 * TiB}, {"100MB", 100e6}, {"1KB", 1000}, {" 3 GB ", 3e9},
	} {
		if got, err := ParseBytes(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "1.5XB", "lots", "NaN", "1e30TiB", "Inf"} {
		if got, err := ParseBytes(in); !errors.Is(err, ErrBytes) {
			t.Errorf("ParseBytes(%q) = %d, %v; want ErrBytes", in, got, err)
		}
	}
	for b, want := range map[Bytes]string{900: "900B", 50 * MiB: "50MiB", 3 * GiB / 2: "1.5GiB", KiB + 1: "1KiB"} {
		if got := b.String(); got != want {
			t.Errorf("%d.String() = %q; want %q", uint64(b), got, want)
		}
	}
}
