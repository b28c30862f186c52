//go:build linux

package supervisor

// Analysis: while a canary has a share of the traffic, and while a promoted
// generation is on probation, baton compares it with the generation it
// would replace (or replaced: the standby), on the same clock, once per
// [analysis] interval: crashes, health checks (failure ratio, p99 latency),
// RSS and CPU of each generation's process trees, and the service's own
// error ratio scraped from each instance's private listener. probe.Analysis
// judges; more failed measurements than failure_limit abort the canary or
// revert the promotion. Every measurement is logged with its figures.
//
// The loop takes each sample's inputs (pids, addresses, probers), a
// goroutine reads /proc and scrapes, and the loop judges the result: no
// state is shared with the goroutine.

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/baton-sh/baton/probe"
)

type (
	// analysisRun is one analysis: of cand against base (nil: no
	// baseline runs, the relative limits are inconclusive).
	analysisRun struct {
		cand, base *generation
		phase      string // "canary" or "probation"
		an         *probe.Analysis
		prev       map[*generation]*genSample
		timer      *time.Timer
		busy       bool // a sample is being taken
	}
	// genSample is what one generation looked like at one moment.
	genSample struct {
		at      time.Time
		crashes int
		usage   probe.Usage
		counts  map[int]probe.Counts        // by pid: counters reset with the process
		probes  map[*process]probe.Snapshot // health checks, by process
	}
	// sampleInput is what the goroutine needs to sample one generation.
	sampleInput struct {
		gen     *generation
		crashes int
		pids    []int
		scrapes map[int]probe.Scrape // by pid
		probers map[*process]*probe.Prober
	}
	analysisTick   struct{ run *analysisRun }
	analysisSample struct {
		run     *analysisRun
		samples map[*generation]*genSample
	}
)

// startAnalysis begins analysing cand against base, if cand's config asks
// for it and no analysis runs.
func (s *Supervisor) startAnalysis(cand, base *generation, phase string) {
	ac := cand.cfg.Analysis
	if !ac.Enabled {
		return
	}
	s.stopAnalysis()
	an, err := probe.NewAnalysis(ac.AnalysisConfig)
	if err != nil {
		s.log.Error("analysis not started", "gen", cand.id, "err", err)
		return
	}
	run := &analysisRun{cand: cand, base: base, phase: phase, an: an, prev: map[*generation]*genSample{}}
	s.analysis = run
	s.log.Info("analysis started", "gen", cand.id, "against", idOf(base), "phase", phase,
		"interval", ac.Interval, "measurements", ac.Measurements, "failure_limit", ac.FailureLimit)
	s.sampleNow(run) // the first sample is the start of the first interval
}

func (s *Supervisor) stopAnalysis() {
	if run := s.analysis; run != nil {
		if run.timer != nil {
			run.timer.Stop()
		}
		s.analysis = nil
	}
}

// sampleNow starts taking a sample of both generations.
func (s *Supervisor) sampleNow(run *analysisRun) {
	if run.busy {
		return
	}
	run.busy = true
	var inputs []sampleInput
	for _, g := range []*generation{run.cand, run.base} {
		if g != nil {
			inputs = append(inputs, s.sampleInput(g, run.cand.cfg.Analysis))
		}
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), run.cand.cfg.Analysis.Interval)
		defer cancel()
		samples := map[*generation]*genSample{}
		for _, in := range inputs {
			samples[in.gen] = takeSample(ctx, in)
		}
		s.send(analysisSample{run: run, samples: samples})
	}()
}

// sampleInput collects, in the loop, what sampling g needs.
func (s *Supervisor) sampleInput(g *generation, ac AnalysisConfig) sampleInput {
	in := sampleInput{gen: g, crashes: g.crashes + g.unhealthy, scrapes: map[int]probe.Scrape{}, probers: map[*process]*probe.Prober{}}
	li := slices.IndexFunc(s.listeners, func(l *listener) bool { return l.spec.Name == ac.Listener })
	match, _ := probe.CompileMatch(ac.ErrorMatch) // checked with the config
	for _, inst := range g.instances {
		p := inst.proc
		if p == nil || !p.ready {
			continue
		}
		in.pids = append(in.pids, p.pid)
		if p.prober != nil {
			in.probers[p] = p.prober
		}
		if li >= 0 && slices.Contains(ac.Rules, probe.RuleErrorRatio) {
			in.scrapes[p.pid] = probe.Scrape{URL: "http://" + inst.address(li) + ac.MetricsPath,
				Metric: ac.ErrorMetric, Label: ac.ErrorLabel, Match: match}
		}
	}
	return in
}

// takeSample reads /proc, the probers and the metrics pages. A scrape or
// process that fails is left out: the figures then have less data.
func takeSample(ctx context.Context, in sampleInput) *genSample {
	smp := &genSample{at: time.Now(), crashes: in.crashes, counts: map[int]probe.Counts{}, probes: map[*process]probe.Snapshot{}}
	for _, pid := range in.pids {
		if u, err := probe.TreeUsage(pid); err == nil {
			smp.usage.RSSBytes += u.RSSBytes
			smp.usage.CPUSeconds += u.CPUSeconds
			smp.usage.Processes += u.Processes
		}
	}
	for pid, sc := range in.scrapes {
		if c, err := sc.Fetch(ctx); err == nil {
			smp.counts[pid] = c
		}
	}
	for p, pr := range in.probers {
		smp.probes[p] = pr.Snapshot()
	}
	return smp
}

// figures are g's figures from prev to cur.
func figures(prev, cur *genSample) probe.Figures {
	f := probe.Figures{Period: cur.at.Sub(prev.at), Crashes: cur.crashes - prev.crashes, Usage: cur.usage.Sub(prev.usage)}
	for pid, c := range cur.counts {
		t := c.Since(prev.counts[pid]) // a new pid starts from zero
		f.Traffic.Requests += t.Requests
		f.Traffic.Errors += t.Errors
	}
	for p, snap := range cur.probes {
		w := snap.Since(prev.probes[p])
		f.Probe.Checks += w.Checks
		f.Probe.Failures += w.Failures
		f.Probe.Samples += w.Samples
		f.Probe.LatencyP50 = max(f.Probe.LatencyP50, w.LatencyP50)
		f.Probe.LatencyP99 = max(f.Probe.LatencyP99, w.LatencyP99)
	}
	return f
}

// onAnalysisSample judges an interval (after the first sample) and arms
// the next one.
func (s *Supervisor) onAnalysisSample(ev analysisSample) {
	run := ev.run
	run.busy = false
	if s.analysis != run {
		return
	}
	cand := ev.samples[run.cand]
	if prev := run.prev[run.cand]; prev != nil {
		cf := figures(prev, cand)
		var bf probe.Figures
		if run.base != nil && run.prev[run.base] != nil && ev.samples[run.base] != nil {
			bf = figures(run.prev[run.base], ev.samples[run.base])
		}
		m := run.an.Add(cf, bf)
		s.log.Info("analysis measurement", "gen", run.cand.id, "against", idOf(run.base), "phase", run.phase,
			"outcome", m.Outcome.String(), "verdict", run.an.Verdict().String(), "figures", ruleFigures(m))
		s.emit(Event{Kind: EventAnalysis, Gen: run.cand.id, Outcome: m.Outcome.String(),
			Reason: m.Outcome.String() + ": " + ruleFigures(m)})
		switch run.an.Verdict() {
		case probe.Failed:
			s.analysis = nil
			why := "analysis failed: " + run.an.Summary()
			if run.phase == "probation" {
				s.revert(run.cand, CauseAnalysis, why)
			} else {
				s.failUpgrade(run.cand, why)
			}
			return
		case probe.Passed, probe.AllInconclusive:
			s.log.Info("analysis done", "gen", run.cand.id, "verdict", run.an.Verdict().String(), "summary", run.an.Summary())
			s.analysis = nil
			return
		}
	}
	for g, smp := range ev.samples {
		run.prev[g] = smp
	}
	run.timer = s.after(run.cand.cfg.Analysis.Interval, analysisTick{run: run})
}

// ruleFigures is every rule of a measurement with the figures behind its
// outcome, for the log: "error_ratio: error ratio 0.200 > limit ...; ...".
func ruleFigures(m probe.Measurement) string {
	reasons := make([]string, 0, len(m.Rules))
	for _, r := range m.Rules {
		reasons = append(reasons, r.Rule+": "+r.Reason)
	}
	return strings.Join(reasons, "; ")
}
