//go:build linux

package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-sh/baton/supervisor"
)

// StatusTimeout bounds how long a scrape waits for the supervisor's status.
// The event loop answers in microseconds unless it is busy starting or
// stopping processes; a scrape that waits longer gets the event metrics
// only, rather than hanging until Prometheus gives up on it.
const StatusTimeout = 2 * time.Second

// states are the generation states; baton_generations reports each of
// them, zero included.
var states = []string{"starting", "canary", "serving", "standby", "draining", "stopping"}

// Values of the basis label of baton_generation_share_percent.
const (
	BasisConnections = "connections" // counted by the steering programs
	BasisInstances   = "instances"   // shared mode: the generation's part of the processes
)

var (
	servingDesc = prometheus.NewDesc("baton_serving_generation",
		"Id of the generation new connections go to, 0 if none.", nil, nil)
	probationDesc = prometheus.NewDesc("baton_probation_generation",
		"Id of the promoted generation on probation (a crash, liveness failure or failed analysis reverts it), 0 if none.", nil, nil)
	failedDesc = prometheus.NewDesc("baton_failed_state",
		"1 when the service is in the failed state after repeated reverts (upgrades are refused until one is forced), else 0.", nil, nil)
	generationsDesc = prometheus.NewDesc("baton_generations",
		"Generations in each state.", []string{"state"}, nil)
	listenerDesc = prometheus.NewDesc("baton_listener_info",
		"One per listener, always 1; mode is steered (a socket per generation) or shared (one socket for all).",
		[]string{"listener", "network", "address", "mode"}, nil)
	rssDesc = prometheus.NewDesc("baton_generation_resident_memory_bytes",
		"Resident memory of the generation's processes (one per instance) and all their descendants, summed per process (pages shared between them count once per process).",
		[]string{"generation", "state"}, nil)
	cpuDesc = prometheus.NewDesc("baton_generation_cpu_seconds_total",
		"User and system CPU time of the generation's processes (one per instance) and all their descendants, including descendants that exited and were waited for. An instance that restarts or exits takes its time with it, which rate() reads as a counter reset.",
		[]string{"generation", "state"}, nil)
	instancesDesc = prometheus.NewDesc("baton_generation_instances",
		"Instances of the generation, whatever their state (running, draining, stopping).",
		[]string{"generation"}, nil)
	weightDesc = prometheus.NewDesc("baton_generation_weight_percent",
		"Percent of new connections the generation should get: 100 for the serving generation outside an upgrade; during one, the candidate's canary step or part of the routed instances, the serving generation the rest; 0 for the others.",
		[]string{"generation"}, nil)
	shareDesc = prometheus.NewDesc("baton_generation_share_percent",
		"Percent of new connections the serving generation and the candidate got since the weights last changed; absent until known. basis: connections (counted by the steering programs) or instances (shared mode: the generation's part of the running processes).",
		[]string{"generation", "basis"}, nil)
	connectionsDesc = prometheus.NewDesc("baton_generation_steered_connections",
		"New connections the steering programs gave the serving generation or the candidate since the weights last changed (it starts again from 0 at every change); absent without a steered listener.",
		[]string{"generation"}, nil)
)

// statusCollector emits the metrics that describe the present, from a
// Status and /proc read at scrape time. It holds no state of its own, so
// concurrent scrapes need no lock.
type statusCollector struct {
	src     Source
	timeout time.Duration
	proc    string // the procfs root
}

func newStatusCollector(src Source) *statusCollector {
	return &statusCollector{src: src, timeout: StatusTimeout, proc: "/proc"}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{servingDesc, probationDesc, failedDesc, generationsDesc, listenerDesc, rssDesc, cpuDesc,
		instancesDesc, weightDesc, shareDesc, connectionsDesc} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.src.Status(ctx)
	if err != nil {
		// A stopping or busy supervisor: these series are absent from
		// this scrape, which is what they are. Failing the whole scrape
		// would hide the counters too.
		return
	}

	ch <- prometheus.MustNewConstMetric(servingDesc, prometheus.GaugeValue, float64(st.Serving))
	ch <- prometheus.MustNewConstMetric(probationDesc, prometheus.GaugeValue, float64(st.Probation))
	failed := 0.0
	if st.Failed != "" {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.GaugeValue, failed)

	count := make(map[string]int, len(states))
	for _, s := range states {
		count[s] = 0 // reported even when empty
	}
	for _, g := range st.Generations {
		count[g.State]++ // a state added to the supervisor later is reported too
	}
	for s, n := range count {
		ch <- prometheus.MustNewConstMetric(generationsDesc, prometheus.GaugeValue, float64(n), s)
	}

	steered := false
	for _, l := range st.Listeners {
		ch <- prometheus.MustNewConstMetric(listenerDesc, prometheus.GaugeValue, 1, l.Name, l.Network, l.Address, l.Mode)
		steered = steered || l.Mode == supervisor.ModeSteered
	}

	for _, g := range st.Generations {
		id := strconv.Itoa(g.ID)
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(len(g.Instances)), id)
		ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, float64(g.Weight), id)
		if g.Share >= 0 {
			basis := BasisConnections
			if g.ShareEstimated {
				basis = BasisInstances
			}
			ch <- prometheus.MustNewConstMetric(shareDesc, prometheus.GaugeValue, g.Share, id, basis)
		}
		// Only these two are counted; the others' 0 would say nothing.
		if steered && (g.ID == st.Serving || g.ID == st.Candidate) {
			ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(g.Connections), id)
		}
	}

	var table *procTable
	for _, g := range st.Generations {
		if len(g.PIDs) == 0 { // every restart is pending, or it gave up
			continue
		}
		if table == nil {
			if table, err = readProcTable(c.proc); err != nil {
				return // no procfs: no per-generation usage
			}
		}
		u, ok := table.treeUsage(g.PIDs...)
		if !ok { // exited since the status was taken
			continue
		}
		id := strconv.Itoa(g.ID)
		ch <- prometheus.MustNewConstMetric(rssDesc, prometheus.GaugeValue, float64(u.RSS), id, g.State)
		ch <- prometheus.MustNewConstMetric(cpuDesc, prometheus.CounterValue, u.CPU, id, g.State)
	}
}
