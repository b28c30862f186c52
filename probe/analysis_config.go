package probe

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// The rules an analysis can apply, as named in AnalysisConfig.Rules.
const (
	RuleCrashes           = "crashes"             // candidate's crashes <= max_crashes
	RuleErrorRatio        = "error_ratio"         // errors / requests, from the scrape
	RuleProbeFailureRatio = "probe_failure_ratio" // failed / all health checks
	RuleLatencyP99        = "latency_p99"         // of passing health checks
	RuleRSS               = "rss"                 // resident memory of the process tree
	RuleCPU               = "cpu"                 // CPU time of the tree per second (cores)
)

// allRules is every rule, in the order they are evaluated and reported.
var allRules = []string{RuleCrashes, RuleErrorRatio, RuleProbeFailureRatio, RuleLatencyP99, RuleRSS, RuleCPU}

// Defaults of an AnalysisConfig. Each relative limit is factor x baseline +
// margin: "at most twice the old one's, plus one point".
const (
	// DefaultAnalysisInterval is the length of one measurement.
	DefaultAnalysisInterval = time.Minute
	// DefaultMeasurements is how many intervals an analysis runs for.
	DefaultMeasurements = 5
	// DefaultFailureLimit is how many failed measurements are tolerated;
	// one more fails the analysis (Argo Rollouts' failureLimit, whose
	// default is also 0: the first failed measurement fails it).
	DefaultFailureLimit = 0
	// DefaultMinRequests is how many requests an interval needs for its
	// error ratio to count: with 100, one error is one point, the
	// resolution of the default margin.
	DefaultMinRequests = 100
	// DefaultMinChecks is how many health checks an interval needs for
	// its failure ratio and latency to count.
	DefaultMinChecks = 5
	// DefaultErrorMetric, DefaultErrorLabel and DefaultErrorMatch pick
	// server errors from client_golang's promhttp counter.
	DefaultErrorMetric = "http_requests_total"
	// DefaultMetricsPath is where the service serves its Prometheus page.
	DefaultMetricsPath = "/metrics"
	DefaultErrorLabel  = "code"
	DefaultErrorMatch  = "5.."

	DefaultMaxCrashes                 = 0
	DefaultMaxErrorRatioFactor        = 2.0
	DefaultMaxErrorRatioMargin        = 0.01
	DefaultMaxProbeFailureRatioFactor = 2.0
	// DefaultMaxProbeFailureRatioMargin forgives one failed check in five:
	// the prober's failure threshold already forgives a blip.
	DefaultMaxProbeFailureRatioMargin = 0.2
	DefaultMaxLatencyP99Factor        = 2.0
	DefaultMaxLatencyP99Margin        = 50 * time.Millisecond
	DefaultMaxRSSFactor               = 1.5
	DefaultMaxRSSMargin               = 50 * MiB
	DefaultMaxCPUFactor               = 2.0
	DefaultMaxCPUMargin               = 0.25 // cores
)

// DefaultRules are the rules applied when the config names none. Memory and
// CPU are left out: a new version warming its caches or compiling its
// templates differs from a settled one without being worse.
var DefaultRules = []string{RuleCrashes, RuleErrorRatio, RuleProbeFailureRatio, RuleLatencyP99}

// AnalysisConfig says how a candidate generation is judged against its
// baseline. The TOML keys are those of an [analysis] section; decode onto
// DefaultAnalysisConfig() so that absent keys keep their defaults, then
// Validate.
type AnalysisConfig struct {
	Interval     time.Duration `toml:"interval"`
	Measurements int           `toml:"measurements"`
	FailureLimit int           `toml:"failure_limit"`
	Rules        []string      `toml:"rules"`
	MinRequests  int           `toml:"min_requests"`
	MinChecks    int           `toml:"min_checks"`

	// MetricsPath is the path of the page scraped for the error ratio, on
	// each instance's own address (the supervisor knows it); required when
	// Rules has error_ratio. The evaluator does not read it.
	MetricsPath string `toml:"metrics_path"`
	ErrorMetric string `toml:"error_metric"`
	ErrorLabel  string `toml:"error_label"`
	ErrorMatch  string `toml:"error_match"` // a regexp, anchored (see Scrape)

	MaxCrashes                 int           `toml:"max_crashes"`
	MaxErrorRatioFactor        float64       `toml:"max_error_ratio_factor"`
	MaxErrorRatioMargin        float64       `toml:"max_error_ratio_margin"`
	MaxProbeFailureRatioFactor float64       `toml:"max_probe_failure_ratio_factor"`
	MaxProbeFailureRatioMargin float64       `toml:"max_probe_failure_ratio_margin"`
	MaxLatencyP99Factor        float64       `toml:"max_latency_p99_factor"`
	MaxLatencyP99Margin        time.Duration `toml:"max_latency_p99_margin"`
	MaxRSSFactor               float64       `toml:"max_rss_factor"`
	MaxRSSMargin               Bytes         `toml:"max_rss_margin"`
	MaxCPUFactor               float64       `toml:"max_cpu_factor"`
	MaxCPUMargin               float64       `toml:"max_cpu_margin"` // cores
}

// DefaultAnalysisConfig is the config with every default filled in.
func DefaultAnalysisConfig() AnalysisConfig {
	return AnalysisConfig{
		Interval: DefaultAnalysisInterval, Measurements: DefaultMeasurements,
		FailureLimit: DefaultFailureLimit, Rules: slices.Clone(DefaultRules),
		MinRequests: DefaultMinRequests, MinChecks: DefaultMinChecks,
		MetricsPath: DefaultMetricsPath, ErrorMetric: DefaultErrorMetric, ErrorLabel: DefaultErrorLabel, ErrorMatch: DefaultErrorMatch,
		MaxCrashes:          DefaultMaxCrashes,
		MaxErrorRatioFactor: DefaultMaxErrorRatioFactor, MaxErrorRatioMargin: DefaultMaxErrorRatioMargin,
		MaxProbeFailureRatioFactor: DefaultMaxProbeFailureRatioFactor,
		MaxProbeFailureRatioMargin: DefaultMaxProbeFailureRatioMargin,
		MaxLatencyP99Factor:        DefaultMaxLatencyP99Factor, MaxLatencyP99Margin: DefaultMaxLatencyP99Margin,
		MaxRSSFactor: DefaultMaxRSSFactor, MaxRSSMargin: DefaultMaxRSSMargin,
		MaxCPUFactor: DefaultMaxCPUFactor, MaxCPUMargin: DefaultMaxCPUMargin,
	}
}

// ErrAnalysisConfig is wrapped by the errors of AnalysisConfig.Validate.
var ErrAnalysisConfig = errors.New("invalid analysis config")

// Validate says which setting is out of range, naming its TOML key.
func (c AnalysisConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrAnalysisConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Interval <= 0:
		return bad("interval %s is not positive", c.Interval)
	case c.Measurements < 1:
		return bad("measurements %d is less than 1", c.Measurements)
	case c.FailureLimit < 0:
		return bad("failure_limit %d is negative", c.FailureLimit)
	case c.MinRequests < 0:
		return bad("min_requests %d is negative", c.MinRequests)
	case c.MinChecks < 1:
		return bad("min_checks %d is less than 1", c.MinChecks)
	case c.MaxCrashes < 0:
		return bad("max_crashes %d is negative", c.MaxCrashes)
	case c.MaxLatencyP99Margin < 0:
		return bad("max_latency_p99_margin %s is negative", c.MaxLatencyP99Margin)
	}
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"max_error_ratio_factor", c.MaxErrorRatioFactor}, {"max_error_ratio_margin", c.MaxErrorRatioMargin},
		{"max_probe_failure_ratio_factor", c.MaxProbeFailureRatioFactor},
		{"max_probe_failure_ratio_margin", c.MaxProbeFailureRatioMargin},
		{"max_latency_p99_factor", c.MaxLatencyP99Factor}, {"max_rss_factor", c.MaxRSSFactor},
		{"max_cpu_factor", c.MaxCPUFactor}, {"max_cpu_margin", c.MaxCPUMargin},
	} {
		if !(f.v >= 0) { // NaN too
			return bad("%s %v is not a number >= 0", f.key, f.v)
		}
	}
	if len(c.Rules) == 0 {
		return bad("rules is empty")
	}
	for i, r := range c.Rules {
		if !slices.Contains(allRules, r) {
			return bad("rules: unknown rule %q (known: %v)", r, allRules)
		}
		if slices.Contains(c.Rules[:i], r) {
			return bad("rules: %q twice", r)
		}
	}
	if slices.Contains(c.Rules, RuleErrorRatio) {
		switch {
		case c.MetricsPath == "":
			return bad("rule error_ratio needs metrics_path")
		case c.ErrorMetric == "":
			return bad("rule error_ratio needs error_metric")
		case c.ErrorLabel == "":
			return bad("rule error_ratio needs error_label")
		}
		if _, err := CompileMatch(c.ErrorMatch); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}
