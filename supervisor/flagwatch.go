//go:build linux

package supervisor

// Turning a flag off by itself: a flag with off_on = "analysis" is watched
// while it is on. The generation is the same before and after the flip, so
// its own figures from the interval before the flip are the baseline:
// baton samples the serving generation once per [analysis] interval while
// such a flag is declared, and a watch judges each interval after the flip
// against that baseline with the same rules as a canary analysis. A failed
// analysis turns the flag off (kept off across restarts, as an operator's
// setting is), logged with its figures. A new generation ends the watch:
// the condition is about the generation that was serving at the flip.

import (
	"context"

	"github.com/baton-sh/baton/probe"
)

type (
	// flagWatch judges the serving generation while flag is on.
	flagWatch struct {
		flag     string
		gen      *generation
		baseline probe.Figures // the interval before the flip; zero if none
		an       *probe.Analysis
		prev     *genSample // start of the interval being measured
	}
	flagSampleTick struct{}
	flagSampleDone struct {
		gen    *generation
		sample *genSample
	}
)

// flagsNeedSampling reports whether a declared flag asks for analysis.
func (s *Supervisor) flagsNeedSampling() bool {
	for _, f := range s.flags {
		if f.cfg.OffOn == "analysis" {
			return true
		}
	}
	return false
}

// startFlagSampler arms the sampler if a flag needs it and it is not armed.
func (s *Supervisor) startFlagSampler() {
	if s.flagSamplerOn || !s.flagsNeedSampling() || s.serving == nil || !s.serving.cfg.Analysis.Enabled {
		return
	}
	s.flagSamplerOn = true
	s.after(s.serving.cfg.Analysis.Interval, flagSampleTick{})
}

// onFlagSampleTick samples the serving generation.
func (s *Supervisor) onFlagSampleTick() {
	g := s.serving
	if g == nil || s.stopping || !s.flagsNeedSampling() || !g.cfg.Analysis.Enabled {
		s.flagSamplerOn = false
		return
	}
	in := s.sampleInput(g, g.cfg.Analysis)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Analysis.Interval)
		defer cancel()
		s.send(flagSampleDone{gen: g, sample: takeSample(ctx, in)})
	}()
}

// onFlagSample keeps the baseline and judges the watches.
func (s *Supervisor) onFlagSample(ev flagSampleDone) {
	g, cur := ev.gen, ev.sample
	if prev := s.flagLast; prev != nil && s.flagLastGen == g {
		s.flagBaseline = figures(prev, cur)
		s.flagHaveBaseline = true
		s.log.Debug("flag baseline measured", "gen", g.id, "requests", s.flagBaseline.Traffic.Requests)
	} else {
		s.flagHaveBaseline = false
	}
	s.flagLast, s.flagLastGen = cur, g
	for name, w := range s.flagWatches {
		if w.gen != g || w.gen != s.serving {
			s.log.Info("flag no longer watched: the generation changed", "flag", name, "gen", w.gen.id)
			delete(s.flagWatches, name)
			continue
		}
		if w.prev == nil {
			w.prev = cur
			continue
		}
		m := w.an.Add(figures(w.prev, cur), w.baseline)
		w.prev = cur
		s.log.Info("flag analysis measurement", "flag", name, "gen", g.id, "outcome", m.Outcome.String(),
			"verdict", w.an.Verdict().String(), "figures", ruleFigures(m))
		switch w.an.Verdict() {
		case probe.Failed:
			delete(s.flagWatches, name)
			why := "analysis failed while it was on: " + w.an.Summary()
			if err := s.changeFlag(name, 0, true, "analysis", why); err != nil {
				s.log.Error("cannot turn the flag off", "flag", name, "err", err)
			}
		case probe.Passed, probe.AllInconclusive:
			s.log.Info("flag analysis done", "flag", name, "verdict", w.an.Verdict().String(), "summary", w.an.Summary())
			delete(s.flagWatches, name)
		}
	}
	if s.flagsNeedSampling() && !s.stopping {
		s.after(g.cfg.Analysis.Interval, flagSampleTick{})
	} else {
		s.flagSamplerOn = false
	}
}

// watchFlag starts or ends the watch of f after its value changed from old.
func (s *Supervisor) watchFlag(f *flagState, old int) {
	name := f.cfg.Name
	if f.percent == 0 {
		delete(s.flagWatches, name)
		return
	}
	if f.cfg.OffOn != "analysis" || old > 0 || s.serving == nil || s.flagWatches[name] != nil {
		return
	}
	an, err := probe.NewAnalysis(s.serving.cfg.Analysis.AnalysisConfig)
	if err != nil {
		s.log.Error("flag not watched", "flag", name, "err", err)
		return
	}
	w := &flagWatch{flag: name, gen: s.serving, an: an}
	if s.flagHaveBaseline && s.flagLastGen == s.serving {
		w.baseline = s.flagBaseline
	} else {
		s.log.Warn("flag watched without a baseline: no interval of this generation measured before it went on; relative limits are inconclusive",
			"flag", name, "gen", s.serving.id)
	}
	s.flagWatches[name] = w
	s.log.Info("flag watched: its analysis turns it off if it fails", "flag", name, "gen", s.serving.id,
		"interval", s.serving.cfg.Analysis.Interval)
	s.startFlagSampler()
}
