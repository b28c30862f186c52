//go:build linux

// Package metrics exposes what the supervisor does as Prometheus metrics.
//
// Two kinds of numbers come from two places. Counters and histograms of
// steps (upgrades, reverts, canary and rolling steps, restarts, liveness
// failures, analysis measurements, flag changes, time to ready, time to
// drain) are kept by one goroutine, Run, from the supervisor's event
// stream; nothing else writes them. Everything that describes the present
// (the serving generation, the probation, the failed state, the
// generations, their instances, weights and shares, the listeners, the
// feature flags' values) is not stored here at all: it is read at scrape
// time from a fresh Status, Flags and /proc, so a scrape never shows a
// generation or a flag that is gone.
//
// Metrics (on a registry of their own, next to the go_* and process_*
// metrics of baton itself):
//
//	baton_upgrades_total{result="promoted"|"failed"|"aborted"}               counter    upgrades decided, rollbacks included; aborted: by `baton abort`
//	baton_reverts_total{reason="manual"|"probation",cause}                   counter    rollbacks promoted; generations reverted during their probation, by cause
//	baton_upgrade_steps_total                                                counter    changes of a candidate's share: canary steps, rolling instances
//	baton_restarts_total                                                     counter    crashes of a serving process that led to a restart
//	baton_liveness_failures_total                                            counter    health check or watchdog failures of ready processes
//	baton_analysis_measurements_total{outcome="pass"|"fail"|"inconclusive"}  counter    measurements of the canary analysis
//	baton_flag_changes_total{flag,by="operator"|"analysis"|"config"}         counter    changes of a feature flag's value, by who made them
//	baton_readiness_seconds                                                  histogram  time from a process's start to its readiness
//	baton_drain_seconds                                                      histogram  time from a generation being replaced to being gone
//	baton_serving_generation                                                 gauge      id of the serving generation, 0 if none
//	baton_probation_generation                                               gauge      id of the generation on probation, 0 if none
//	baton_failed_state                                                       gauge      1 in the failed state (upgrades refused unless forced), else 0
//	baton_generations{state}                                                 gauge      generations per state: starting, canary, serving, standby, draining, stopping
//	baton_listener_info{listener,network,address,mode}                       gauge      1 per listener; mode is steered or shared
//	baton_generation_instances{generation}                                   gauge      instances of the generation, whatever their state
//	baton_generation_weight_percent{generation}                              gauge      percent of new connections it should get
//	baton_generation_share_percent{generation,basis}                         gauge      percent it did get since the weights last changed; basis is connections or instances
//	baton_generation_steered_connections{generation}                         gauge      new connections the steering programs gave it since the weights last changed
//	baton_generation_resident_memory_bytes{generation,state}                 gauge      RSS of the generation's process trees, bytes
//	baton_generation_cpu_seconds_total{generation,state}                     counter    user+system CPU of the generation's process trees
//	baton_flag_percent{flag}                                                 gauge      each declared feature flag's value: 0 off, 100 on, else the percent of keys
//
// The first nine are counted from events since baton started; the label
// values shown are all present from the start, at 0. A promoted upgrade
// counts as promoted at once, and as a revert (reason "probation") if its
// probation then reverts it, whatever the cause, which the cause label
// says: "crash", "liveness" (a health check or the watchdog), "analysis",
// "rollback" or "abort" (`baton rollback` or `baton abort` during the
// probation); a rollback outside a probation is reason "manual", cause
// "rollback". Those six pairs are present from the start; a cause the
// supervisor adds later is counted as "other". A revert without a standby
// starts the replaced generation again; its promotion is part of the
// revert, not another upgrade. A flag's changes are counted under the
// flag's name and who changed it: "operator" (`baton flag set` or `reset`)
// or "analysis" (a flag with off_on = "analysis" turned off); both are
// present from the start for the flags declared when Run starts, and from
// its first change for a flag a later config declares. A flag that follows
// a new config's default counts under "config", from its first such change.
//
// The others are read at scrape time; they are absent from a scrape for
// which the supervisor did not answer within StatusTimeout (while it
// stops, for example), and the rest of the scrape is served as usual.
//
// Of the scrape-time ones: the share is only there once known, for the
// serving generation and the candidate: measured (basis "connections")
// once a steering program has counted a connection, or in shared mode
// estimated by the generation's part of the running processes (basis
// "instances"). Steered connections are only there with a steered
// listener, for the same two generations; they start again from 0 at every
// change of weights, so they are a gauge. A process tree is an instance's
// process and all its descendants, and a generation's usage sums the trees
// of all its instances, each process once; a generation without a process
// (every restart pending) has no resident memory or CPU series.
package metrics

import (
	"context"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-sh/baton/supervisor"
)

// Source is what metrics reads; *supervisor.Supervisor satisfies it.
type Source interface {
	Status(ctx context.Context) (supervisor.Status, error)
	Flags(ctx context.Context) ([]supervisor.FlagStatus, int64, string, error)
	Subscribe(buffer int) (<-chan supervisor.Event, func())
}

// EventBuffer is how many events Run may fall behind before the supervisor
// drops some for it (the supervisor never waits for a subscriber). An
// upgrade is about six events per instance, so this is far more than a
// scrape-sized hiccup can build up.
const EventBuffer = 1024

// Values of the result, reason, cause, outcome and by labels.
const (
	ResultPromoted  = "promoted"
	ResultFailed    = "failed"
	ResultAborted   = "aborted"   // undone by `baton abort`
	ReasonManual    = "manual"    // a rollback asked for by an operator, promoted
	ReasonProbation = "probation" // a generation reverted during its probation
	CauseOther      = "other"     // a revert's cause this package does not know

	OutcomePass         = "pass"
	OutcomeFail         = "fail"
	OutcomeInconclusive = "inconclusive"

	ByOperator = "operator" // `baton flag set` or `baton flag reset`
	ByAnalysis = "analysis" // turned off by its analysis (off_on = "analysis")
	ByConfig   = "config"   // the config's default
	ByOther    = "other"    // a flag event that does not say who changed it
)

// outcomes are the analysis outcomes counted; an event with another one
// (from a newer supervisor) is not counted rather than given a label of
// its own.
var outcomes = []string{OutcomePass, OutcomeFail, OutcomeInconclusive}

// probationCauses are the causes of a revert during probation, each
// present from the start.
var probationCauses = []string{supervisor.CauseCrash, supervisor.CauseLiveness, supervisor.CauseAnalysis,
	supervisor.CauseRollback, supervisor.CauseAbort}

// flagsBy are who may change a flag with an event, each present from the
// start for every declared flag.
var flagsBy = []string{ByOperator, ByAnalysis}

// Bucket bounds in seconds. Readiness is bounded by the readiness timeout
// (30 s by default) and drain by the drain timeout (30 s by default); the
// upper buckets leave room for configs that raise both.
var (
	readinessBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	drainBuckets     = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Metrics is baton's registry. The counters and histograms are written by
// Run only; the scrape-time metrics are computed by a collector on each
// scrape and hold no state.
type Metrics struct {
	reg         *prometheus.Registry
	status      *statusCollector
	flagValues  *flagCollector
	events      <-chan supervisor.Event
	unsubscribe func()

	upgrades  *prometheus.CounterVec
	reverts   *prometheus.CounterVec
	steps     prometheus.Counter
	restarts  prometheus.Counter
	liveness  prometheus.Counter
	analysis  *prometheus.CounterVec
	flags     *prometheus.CounterVec
	readiness prometheus.Histogram
	drain     prometheus.Histogram

	// src is asked once, when Run starts, which flags are declared, so
	// that their change counters start at 0.
	src Source
	// flagsSeen are the flags whose change counters exist. Run only.
	flagsSeen map[string]bool
}

// New builds the registry and subscribes to src's events at once, so that
// the steps of the first generation are counted even if the supervisor
// starts before Run does; they wait in the subscription's buffer. Run ends
// the subscription. (Without Run, the buffer fills and the supervisor drops
// what does not fit: it never waits for a subscriber.)
func New(src Source) *Metrics {
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		status: newStatusCollector(src),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_upgrades_total",
			Help: "Upgrades decided, by result: promoted (the new generation serves; a revert during its probation is counted in baton_reverts_total), failed (the old one still does) or aborted (by baton abort). Rollbacks count as upgrades.",
		}, []string{"result"}),
		reverts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_reverts_total",
			Help: "Returns to the previous generation, by reason: manual (a rollback, promoted) or probation (a generation reverted during its probation); and by cause: crash, liveness, analysis, rollback or abort (manual ones: rollback).",
		}, []string{"reason", "cause"}),
		steps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_upgrade_steps_total",
			Help: "Changes of an upgrade's share of new connections short of promotion: canary steps begun, and rolling updates' instances replaced.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_restarts_total",
			Help: "Times a serving process exited on its own and was scheduled for a restart.",
		}),
		liveness: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_liveness_failures_total",
			Help: "Liveness failures of ready processes: a [health] check failing failure_threshold times in a row, a missed or triggered watchdog. A serving process is restarted, a canary aborted, a generation on probation reverted.",
		}),
		analysis: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_analysis_measurements_total",
			Help: "Measurements of the canary analysis (during canary steps and probations), by outcome: pass, fail or inconclusive.",
		}, []string{"outcome"}),
		flags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_flag_changes_total",
			Help: "Changes of a feature flag's value, by flag and by who made them: operator (baton flag set or reset) or analysis (a flag with off_on = \"analysis\" turned off when the serving generation's analysis failed).",
		}, []string{"flag", "by"}),
		readiness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_readiness_seconds",
			Help:    "Time from a process's start to passing its readiness check, for every process of every generation, restarts included.",
			Buckets: readinessBuckets,
		}),
		drain: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_drain_seconds",
			Help:    "Time from a generation being replaced to its process having exited and its sockets being closed.",
			Buckets: drainBuckets,
		}),
	}
	// Pre-initialised so that every series exists from the first scrape:
	// rate() and absent() need a zero to start from.
	for _, r := range []string{ResultPromoted, ResultFailed, ResultAborted} {
		m.upgrades.WithLabelValues(r)
	}
	m.reverts.WithLabelValues(ReasonManual, supervisor.CauseRollback)
	for _, c := range probationCauses {
		m.reverts.WithLabelValues(ReasonProbation, c)
	}
	for _, o := range outcomes {
		m.analysis.WithLabelValues(o)
	}
	m.src, m.flagsSeen = src, map[string]bool{}
	m.flagValues = newFlagCollector(src)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.upgrades, m.reverts, m.steps, m.restarts, m.liveness, m.analysis, m.flags, m.readiness, m.drain,
		m.status, m.flagValues,
	)
	m.events, m.unsubscribe = src.Subscribe(EventBuffer)
	return m
}

// Run counts the supervisor's events until ctx ends, then ends the
// subscription. Call it once.
func (m *Metrics) Run(ctx context.Context) {
	defer m.unsubscribe()
	m.declareFlags(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-m.events:
			m.observe(ev)
		}
	}
}

// observe applies one event. Called by Run only.
func (m *Metrics) observe(ev supervisor.Event) {
	switch ev.Kind {
	case supervisor.EventPromoted:
		switch {
		case ev.RevertOf != 0:
			// The end of a revert without a standby, counted at the
			// reverted event.
		case ev.Replaces == 0 && !ev.Rollback:
			// Nothing was upgraded, a generation merely took the place of
			// none.
		case ev.Rollback:
			m.upgrades.WithLabelValues(ResultPromoted).Inc()
			m.reverts.WithLabelValues(ReasonManual, supervisor.CauseRollback).Inc()
		default:
			m.upgrades.WithLabelValues(ResultPromoted).Inc()
		}
	case supervisor.EventFailed:
		if ev.Aborted {
			m.upgrades.WithLabelValues(ResultAborted).Inc()
		} else {
			m.upgrades.WithLabelValues(ResultFailed).Inc()
		}
	case supervisor.EventReverted:
		cause := ev.Cause
		if !slices.Contains(probationCauses, cause) {
			cause = CauseOther
		}
		m.reverts.WithLabelValues(ReasonProbation, cause).Inc()
	case supervisor.EventUnhealthy:
		m.liveness.Inc()
	case supervisor.EventAnalysis:
		if slices.Contains(outcomes, ev.Outcome) {
			m.analysis.WithLabelValues(ev.Outcome).Inc()
		}
	case supervisor.EventFlag:
		if ev.Flag != "" {
			m.seeFlag(ev.Flag)
			m.flags.WithLabelValues(ev.Flag, flagChangedBy(ev.By)).Inc()
		}
	case supervisor.EventStep:
		m.steps.Inc()
	case supervisor.EventCrashed:
		m.restarts.Inc()
	case supervisor.EventReady:
		m.readiness.Observe(ev.Duration.Seconds())
	case supervisor.EventRetired:
		// 0: the generation was never replaced (a failed candidate, or a
		// stop of the serving one), so it had no drain to time.
		if ev.Duration > 0 {
			m.drain.Observe(ev.Duration.Seconds())
		}
	}
}

// Handler serves the registry in the Prometheus exposition formats. A
// collector that fails does not fail the scrape; the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
