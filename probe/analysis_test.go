package probe

import (
	"strings"
	"testing"
	"time"
)

// allOn is the default config with every rule applied.
func allOn() AnalysisConfig {
	c := DefaultAnalysisConfig()
	c.Rules = append([]string(nil), allRules...)
	c.MetricsPath = "/metrics"
	return c
}

// healthy is a generation's interval with every figure present and good.
func healthy() Figures {
	return Figures{
		Period:  time.Minute,
		Probe:   Window{Checks: 6, Samples: 6, LatencyP50: 5 * time.Millisecond, LatencyP99: 10 * time.Millisecond},
		Usage:   Usage{RSSBytes: 100 << 20, CPUSeconds: 6, Processes: 2},
		Traffic: Traffic{Requests: 1000, Errors: 2},
	}
}

func TestEvaluateRules(t *testing.T) {
	type want struct {
		rule    string
		outcome Outcome
		reason  string
	}
	for _, tc := range []struct {
		name       string
		cand, base func(*Figures)
		want       want
	}{
		// pass
		{"error ratio at the limit", func(f *Figures) { f.Traffic.Errors = 14 }, nil,
			want{RuleErrorRatio, Pass, "error ratio 0.014 <= limit 0.014 (2 x baseline 0.002 + 0.010)"}},
		{"latency within", func(f *Figures) { f.Probe.LatencyP99 = 70 * time.Millisecond }, nil,
			want{RuleLatencyP99, Pass, "latency p99 70.0ms <= limit 70.0ms (2 x baseline 10.0ms + 50.0ms)"}},
		{"rss within", nil, nil,
			want{RuleRSS, Pass, "rss 100.0MiB <= limit 200.0MiB (1.5 x baseline 100.0MiB + 50.0MiB)"}},
		{"probe failures within", func(f *Figures) { f.Probe.Failures = 1 }, nil,
			want{RuleProbeFailureRatio, Pass, "probe failure ratio 0.167 <= limit 0.200 (2 x baseline 0.000 + 0.200)"}},
		{"no crash", nil, nil, want{RuleCrashes, Pass, "crashes 0 <= limit 0"}},
		// fail
		{"error ratio", func(f *Figures) { f.Traffic.Errors = 201 }, func(f *Figures) { f.Traffic.Errors = 0 },
			want{RuleErrorRatio, Fail, "error ratio 0.201 > limit 0.010 (2 x baseline 0.000 + 0.010)"}},
		{"crash", func(f *Figures) { f.Crashes = 1 }, nil, want{RuleCrashes, Fail, "crashes 1 > limit 0"}},
		{"latency", func(f *Figures) { f.Probe.LatencyP99 = 1500 * time.Millisecond }, nil,
			want{RuleLatencyP99, Fail, "latency p99 1.500s > limit 70.0ms (2 x baseline 10.0ms + 50.0ms)"}},
		{"probe failures", func(f *Figures) { f.Probe.Failures = 2 }, nil,
			want{RuleProbeFailureRatio, Fail, "probe failure ratio 0.333 > limit 0.200 (2 x baseline 0.000 + 0.200)"}},
		{"rss", func(f *Figures) { f.Usage.RSSBytes = 300 << 20 }, nil,
			want{RuleRSS, Fail, "rss 300.0MiB > limit 200.0MiB (1.5 x baseline 100.0MiB + 50.0MiB)"}},
		{"cpu", func(f *Figures) { f.Usage.CPUSeconds = 60 }, nil,
			want{RuleCPU, Fail, "cpu 1.000 cores > limit 0.450 cores (2 x baseline 0.100 cores + 0.250 cores)"}},
		// inconclusive
		{"few requests", func(f *Figures) { f.Traffic = Traffic{Requests: 12, Errors: 12} }, nil,
			want{RuleErrorRatio, Inconclusive, "error ratio inconclusive: 12 requests < min_requests 100"}},
		{"baseline has few requests", nil, func(f *Figures) { f.Traffic = Traffic{Requests: 3} },
			want{RuleErrorRatio, Inconclusive, "error ratio 0.002, inconclusive: baseline has 3 requests < min_requests 100"}},
		{"few checks", func(f *Figures) { f.Probe = Window{Checks: 2, Failures: 2} }, nil,
			want{RuleProbeFailureRatio, Inconclusive, "probe failure ratio inconclusive: 2 checks < min_checks 5"}},
		{"few latency samples", func(f *Figures) { f.Probe.Samples = 1 }, nil,
			want{RuleLatencyP99, Inconclusive, "latency p99 inconclusive: 1 passing checks < min_checks 5"}},
		{"no usage", func(f *Figures) { f.Usage = Usage{} }, nil,
			want{RuleRSS, Inconclusive, "rss inconclusive: no process figures"}},
		{"no period", func(f *Figures) { f.Period = 0 }, nil,
			want{RuleCPU, Inconclusive, "cpu inconclusive: no period"}},
	} {
		t.Run(tc.want.outcome.String()+"/"+tc.name, func(t *testing.T) {
			cand, base := healthy(), healthy()
			if tc.cand != nil {
				tc.cand(&cand)
			}
			if tc.base != nil {
				tc.base(&base)
			}
			m := allOn().Evaluate(cand, base)
			if len(m.Rules) != len(allRules) {
				t.Fatalf("%d rules judged; want %d", len(m.Rules), len(allRules))
			}
			for _, r := range m.Rules {
				if r.Rule != tc.want.rule {
					continue
				}
				if r.Outcome != tc.want.outcome || r.Reason != tc.want.reason {
					t.Errorf("got %v %q\nwant %v %q", r.Outcome, r.Reason, tc.want.outcome, tc.want.reason)
				}
			}
			wantM := Pass
			if tc.want.outcome == Fail {
				wantM = Fail
			}
			if m.Outcome != wantM {
				t.Errorf("measurement %v; want %v: %s", m.Outcome, wantM, m)
			}
		})
	}
}

func TestEvaluateAbsoluteLimits(t *testing.T) {
	c := allOn()
	c.Rules = []string{RuleErrorRatio}
	c.MaxErrorRatioFactor, c.MaxErrorRatioMargin = 0, 0.05
	cand := healthy()
	cand.Traffic.Errors = 60
	// No baseline at all: an absolute limit still judges.
	m := c.Evaluate(cand, Figures{})
	if m.Outcome != Fail || m.Rules[0].Reason != "error ratio 0.060 > limit 0.050" {
		t.Errorf("got %s", m)
	}
}

func TestEvaluateOnlyTheConfiguredRules(t *testing.T) {
	c := DefaultAnalysisConfig()
	m := c.Evaluate(healthy(), healthy())
	var got []string
	for _, r := range m.Rules {
		got = append(got, r.Rule)
	}
	if strings.Join(got, ",") != strings.Join(DefaultRules, ",") {
		t.Errorf("rules judged %v; want %v", got, DefaultRules)
	}
	none := Figures{}
	if m := c.Evaluate(none, none); m.Outcome != Pass || m.Rules[0].Outcome != Pass {
		t.Errorf("no data but no crash: %s; want pass on crashes alone", m)
	}
	c.Rules = []string{RuleErrorRatio, RuleRSS}
	if m := c.Evaluate(none, none); m.Outcome != Inconclusive {
		t.Errorf("no data: %s; want inconclusive", m)
	}
}

// TestAnalysisOfAFailingCandidate is the whole path: two live services,
// the candidate failing 20% of its requests, scraped before and after an
// interval of traffic, judged against the baseline.
func TestAnalysisOfAFailingCandidate(t *testing.T) {
	baseline, candidate := newApp(t, "tcp4", 0), newApp(t, "tcp4", 5)
	b0, c0 := baseline.scrape(t), candidate.scrape(t)
	baseline.load(t, 200)
	candidate.load(t, 200)
	base, cand := healthy(), healthy()
	base.Traffic = baseline.scrape(t).Since(b0)
	cand.Traffic = candidate.scrape(t).Since(c0)

	cfg := DefaultAnalysisConfig()

	cfg.FailureLimit = 1
	a, err := NewAnalysis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := a.Add(cand, base)
	const why = "error ratio 0.200 > limit 0.010 (2 x baseline 0.000 + 0.010)"
	if m.Outcome != Fail || m.String() != "fail: "+why {
		t.Errorf("measurement %s", m)
	}
	if a.Verdict() != Running {
		t.Errorf("verdict %v after one failure with failure_limit 1", a.Verdict())
	}
	a.Add(cand, base)
	if a.Verdict() != Failed || !strings.HasSuffix(a.Summary(), "last failure: "+why) {
		t.Errorf("verdict %v: %s", a.Verdict(), a.Summary())
	}
}

func TestAnalysisVerdicts(t *testing.T) {
	pass, fail, none := healthy(), healthy(), healthy()
	fail.Crashes = 1
	none.Traffic, none.Probe = Traffic{}, Window{}
	// P, F, I stand for an interval that passes, fails, or has no data.
	fig := map[rune]Figures{'P': pass, 'F': fail, 'I': none}
	for _, tc := range []struct {
		intervals    string
		measurements int
		failureLimit int
		want         Verdict
		at           int // intervals counted when the verdict came
	}{
		{"PPP", 3, 0, Passed, 3},
		{"PFP", 3, 1, Passed, 3},
		{"PIP", 3, 0, Passed, 3},
		{"IIP", 3, 0, Passed, 3},
		{"PP", 3, 0, Running, 2},
		{"PFPP", 3, 0, Failed, 2},
		{"FIFF", 5, 1, Failed, 3},
		{"III", 3, 0, AllInconclusive, 3},
	} {
		t.Run(tc.intervals, func(t *testing.T) {
			cfg := DefaultAnalysisConfig()
			cfg.Rules = []string{RuleErrorRatio, RuleProbeFailureRatio}
			cfg.MetricsPath = "/metrics"
			if strings.ContainsRune(tc.intervals, 'F') {
				cfg.Rules = append(cfg.Rules, RuleCrashes)
			}
			cfg.Measurements, cfg.FailureLimit = tc.measurements, tc.failureLimit
			a, err := NewAnalysis(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.intervals {
				a.Add(fig[r], pass)
			}
			if a.Verdict() != tc.want || len(a.Measurements()) != tc.at {
				t.Errorf("verdict %v after %d; want %v after %d: %s",
					a.Verdict(), len(a.Measurements()), tc.want, tc.at, a.Summary())
			}
		})
	}
}

func TestAnalysisSummary(t *testing.T) {
	cfg := DefaultAnalysisConfig()
	cfg.MetricsPath = "/metrics"
	a, err := NewAnalysis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Add(healthy(), healthy())
	want := "running: 0 of 1 measurements failed (failure_limit 0), 1 passed, 0 inconclusive, 4 to go"
	if got := a.Summary(); got != want {
		t.Errorf("Summary = %q\nwant %q", got, want)
	}
}
