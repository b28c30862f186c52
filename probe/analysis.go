package probe

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Figures is what one generation did during one interval of an analysis.
// The candidate's and the baseline's must be of the same interval, on the
// same clock, for a comparison to mean anything. Each group has its own
// "no data" state, which makes the rules that need it inconclusive.
type Figures struct {
	// Period is the interval's length; the cpu rule needs it.
	Period time.Duration
	// Crashes is how many of the generation's processes exited unasked.
	Crashes int
	// Probe is its health checks (Snapshot.Since); fewer than min_checks
	// is no data.
	Probe Window
	// Usage is its process tree at the end of the interval, with the CPU
	// time used during it (Usage.Sub); no processes is no data.
	Usage Usage
	// Traffic is its requests and errors (Counts.Since); fewer than
	// min_requests is no data.
	Traffic Traffic
}

// Outcome is a rule's or a measurement's result.
type Outcome int

const (
	// Inconclusive: not enough data to judge; it counts neither way.
	Inconclusive Outcome = iota
	Pass
	Fail
)

func (o Outcome) String() string {
	switch o {
	case Inconclusive:
		return "inconclusive"
	case Pass:
		return "pass"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// RuleResult is one rule applied to one interval.
type RuleResult struct {
	Rule    string // one of the Rule* names
	Outcome Outcome
	// Reason gives the figures behind the outcome: "error ratio 0.201 >
	// limit 0.020 (2 x baseline 0.000 + 0.010)".
	Reason string
}

// Measurement is every configured rule applied to one interval. It fails
// if any rule fails, passes if none fails and at least one passes, and is
// inconclusive if no rule could judge.
type Measurement struct {
	Outcome Outcome
	Rules   []RuleResult // in the order of allRules
}

// String is the outcome and the reasons of the rules that decided it.
func (m Measurement) String() string {
	var reasons []string
	for _, r := range m.Rules {
		if r.Outcome == m.Outcome {
			reasons = append(reasons, r.Reason)
		}
	}
	return m.Outcome.String() + ": " + strings.Join(reasons, "; ")
}

// Evaluate applies c's rules to one interval of a candidate and its
// baseline. It is a pure function of its arguments; c must be valid
// (Validate).
func (c AnalysisConfig) Evaluate(candidate, baseline Figures) Measurement {
	var m Measurement
	passed := false
	for _, name := range allRules {
		if !slices.Contains(c.Rules, name) {
			continue
		}
		r := c.rule(name, candidate, baseline)
		m.Rules = append(m.Rules, r)
		switch r.Outcome {
		case Fail:
			m.Outcome = Fail
		case Pass:
			passed = true
		}
	}
	if m.Outcome != Fail && passed {
		m.Outcome = Pass
	}
	return m
}

// figure is one rule's quantity for one generation: its value, or why
// there is none.
type figure struct {
	v      float64
	noData string // "" if v is known
}

func (c AnalysisConfig) rule(name string, cand, base Figures) RuleResult {
	switch name {
	case RuleCrashes:
		v, lim := cand.Crashes, c.MaxCrashes
		if v > lim {
			return RuleResult{name, Fail, fmt.Sprintf("crashes %d > limit %d", v, lim)}
		}
		return RuleResult{name, Pass, fmt.Sprintf("crashes %d <= limit %d", v, lim)}
	case RuleErrorRatio:
		get := func(f Figures) figure {
			if f.Traffic.Requests < float64(c.MinRequests) || f.Traffic.Requests <= 0 {
				return figure{noData: fmt.Sprintf("%.0f requests < min_requests %d", f.Traffic.Requests, c.MinRequests)}
			}
			r, _ := f.Traffic.ErrorRatio()
			return figure{v: r}
		}
		return relative(name, "error ratio", ratio, get(cand), get(base), c.MaxErrorRatioFactor, c.MaxErrorRatioMargin)
	case RuleProbeFailureRatio:
		get := func(f Figures) figure {
			if f.Probe.Checks < uint64(c.MinChecks) {
				return figure{noData: fmt.Sprintf("%d checks < min_checks %d", f.Probe.Checks, c.MinChecks)}
			}
			return figure{v: float64(f.Probe.Failures) / float64(f.Probe.Checks)}
		}
		return relative(name, "probe failure ratio", ratio, get(cand), get(base),
			c.MaxProbeFailureRatioFactor, c.MaxProbeFailureRatioMargin)
	case RuleLatencyP99:
		get := func(f Figures) figure {
			if f.Probe.Samples < c.MinChecks {
				return figure{noData: fmt.Sprintf("%d passing checks < min_checks %d", f.Probe.Samples, c.MinChecks)}
			}
			return figure{v: f.Probe.LatencyP99.Seconds()}
		}
		return relative(name, "latency p99", seconds, get(cand), get(base),
			c.MaxLatencyP99Factor, c.MaxLatencyP99Margin.Seconds())
	case RuleRSS:
		get := func(f Figures) figure {
			if f.Usage.Processes == 0 {
				return figure{noData: "no process figures"}
			}
			return figure{v: float64(f.Usage.RSSBytes)}
		}
		return relative(name, "rss", bytesOf, get(cand), get(base), c.MaxRSSFactor, float64(c.MaxRSSMargin))
	case RuleCPU:
		get := func(f Figures) figure {
			switch {
			case f.Usage.Processes == 0:
				return figure{noData: "no process figures"}
			case f.Period <= 0:
				return figure{noData: "no period"}
			}
			return figure{v: f.Usage.CPUSeconds / f.Period.Seconds()}
		}
		return relative(name, "cpu", cores, get(cand), get(base), c.MaxCPUFactor, c.MaxCPUMargin)
	}
	return RuleResult{name, Inconclusive, fmt.Sprintf("%s: unknown rule", name)}
}

// relative judges value <= factor x baseline + margin (see exceeds). Without the
// candidate's value it is inconclusive; without the baseline's too, unless
// factor is 0 and the limit is the margin alone.
func relative(rule, what string, format func(float64) string, cand, base figure, factor, margin float64) RuleResult {
	if cand.noData != "" {
		return RuleResult{rule, Inconclusive, fmt.Sprintf("%s inconclusive: %s", what, cand.noData)}
	}
	limit, how := margin, ""
	if factor != 0 {
		if base.noData != "" {
			return RuleResult{rule, Inconclusive, fmt.Sprintf("%s %s, inconclusive: baseline has %s",
				what, format(cand.v), base.noData)}
		}
		limit = factor*base.v + margin
		how = fmt.Sprintf(" (%g x baseline %s + %s)", factor, format(base.v), format(margin))
	}
	if exceeds(cand.v, limit) {
		return RuleResult{rule, Fail, fmt.Sprintf("%s %s > limit %s%s", what, format(cand.v), format(limit), how)}
	}
	return RuleResult{rule, Pass, fmt.Sprintf("%s %s <= limit %s%s", what, format(cand.v), format(limit), how)}
}

// exceeds is v > limit, give or take rounding: 14 errors in 1000 requests
// are within "2 x 0.002 + 0.010" although 2*0.002+0.010 may round below
// 0.014 in binary.
func exceeds(v, limit float64) bool {
	return v > limit+1e-9*max(1, math.Abs(limit))
}

func ratio(v float64) string { return fmt.Sprintf("%.3f", v) }

func seconds(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.1fms", v*1e3)
	}
	return fmt.Sprintf("%.3fs", v)
}

func bytesOf(v float64) string { return fmt.Sprintf("%.1fMiB", v/float64(MiB)) }

func cores(v float64) string { return fmt.Sprintf("%.3f cores", v) }
