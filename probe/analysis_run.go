package probe

import (
	"fmt"
	"strings"
)

// Verdict is where an analysis stands.
type Verdict int

const (
	// Running: fewer than Measurements intervals judged, and no more
	// failures than FailureLimit.
	Running Verdict = iota
	// Passed: all intervals judged, at most FailureLimit failed, and at
	// least one was conclusive.
	Passed
	// Failed: more than FailureLimit intervals failed; decided as soon as
	// that happens, without waiting for the rest.
	Failed
	// AllInconclusive: all intervals judged and none was conclusive; the
	// caller decides whether no evidence is a pass.
	AllInconclusive
)

func (v Verdict) String() string {
	switch v {
	case Running:
		return "running"
	case Passed:
		return "passed"
	case Failed:
		return "failed"
	case AllInconclusive:
		return "inconclusive"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Analysis judges a candidate over successive intervals, as an Argo
// Rollouts analysis run does with its count and failureLimit: each Add is
// one measurement, an inconclusive one counts neither way, and the
// analysis fails once more than FailureLimit measurements have failed.
// It is pure state, with no clock: the caller decides when an interval
// ends. It is not safe for concurrent use; one goroutine owns it.
type Analysis struct {
	cfg          AnalysisConfig
	measurements []Measurement
	passed       int
	failed       int
	verdict      Verdict
}

// NewAnalysis starts an analysis with a validated copy of cfg.
func NewAnalysis(cfg AnalysisConfig) (*Analysis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Rules = append([]string(nil), cfg.Rules...)
	return &Analysis{cfg: cfg}, nil
}

// Add judges one more interval and returns its measurement. Once the
// verdict is final, Add still returns the measurement but changes nothing.
func (a *Analysis) Add(candidate, baseline Figures) Measurement {
	m := a.cfg.Evaluate(candidate, baseline)
	if a.verdict != Running {
		return m
	}
	a.measurements = append(a.measurements, m)
	switch m.Outcome {
	case Pass:
		a.passed++
	case Fail:
		a.failed++
	}
	switch {
	case a.failed > a.cfg.FailureLimit:
		a.verdict = Failed
	case len(a.measurements) < a.cfg.Measurements:
	case a.passed+a.failed == 0:
		a.verdict = AllInconclusive
	default:
		a.verdict = Passed
	}
	return m
}

// Verdict is where the analysis stands.
func (a *Analysis) Verdict() Verdict { return a.verdict }

// Measurements returns the measurements counted so far, oldest first.
func (a *Analysis) Measurements() []Measurement {
	return append([]Measurement(nil), a.measurements...)
}

// Summary says where the analysis stands and why, for a log line: "failed:
// 2 of 3 measurements failed (failure_limit 1); last failure: error ratio
// 0.201 > limit 0.020 (2 x baseline 0.000 + 0.010)".
func (a *Analysis) Summary() string {
	n := len(a.measurements)
	inconclusive := n - a.passed - a.failed
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d measurements failed (failure_limit %d), %d passed, %d inconclusive",
		a.verdict, a.failed, n, a.cfg.FailureLimit, a.passed, inconclusive)
	if a.verdict == Running {
		fmt.Fprintf(&b, ", %d to go", a.cfg.Measurements-n)
	}
	for i := n - 1; i >= 0; i-- {
		if a.measurements[i].Outcome == Fail {
			fmt.Fprintf(&b, "; last failure: %s", strings.TrimPrefix(a.measurements[i].String(), "fail: "))
			break
		}
	}
	return b.String()
}
