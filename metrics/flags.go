//go:build linux

package metrics

// Feature flags: their values are read at scrape time, as the status is;
// their changes are counted from the supervisor's flag events by Run.

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var flagPercentDesc = prometheus.NewDesc("baton_flag_percent",
	"Value of each declared feature flag: 0 (off), 100 (on), or the percent of keys it is on for.",
	[]string{"flag"}, nil)

// flagCollector emits each declared flag's value from a Flags read at
// scrape time. Like statusCollector it holds no state: a flag removed by a
// new config is gone from the next scrape.
type flagCollector struct {
	src     Source
	timeout time.Duration
}

func newFlagCollector(src Source) *flagCollector {
	return &flagCollector{src: src, timeout: StatusTimeout}
}

func (c *flagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- flagPercentDesc }

func (c *flagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	flags, _, _, err := c.src.Flags(ctx)
	if err != nil {
		return // absent from this scrape, as the status metrics are
	}
	for _, f := range flags {
		ch <- prometheus.MustNewConstMetric(flagPercentDesc, prometheus.GaugeValue, float64(f.Percent), f.Name)
	}
}

// declareFlags starts the change counters of the flags declared now at 0,
// so that the first change of each is an increase. A supervisor that does
// not answer within StatusTimeout (not running yet, say) only costs that:
// the counters of its flags start at their first change. Called by Run
// only, before the first event.
func (m *Metrics) declareFlags(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, StatusTimeout)
	defer cancel()
	flags, _, _, err := m.src.Flags(ctx)
	if err != nil {
		return
	}
	for _, f := range flags {
		m.seeFlag(f.Name)
	}
}

// seeFlag starts the change counters of flag at 0 if they do not exist.
// Run only.
func (m *Metrics) seeFlag(flag string) {
	if m.flagsSeen[flag] {
		return
	}
	m.flagsSeen[flag] = true
	for _, by := range flagsBy {
		m.flags.WithLabelValues(flag, by)
	}
}

// flagChangedBy is who made a flag change, from the event's By; anything
// but one of the known values is ByOther, so that an unknown origin costs
// the label, never the count.
func flagChangedBy(by string) string {
	if !slices.Contains([]string{ByOperator, ByAnalysis, ByConfig}, by) {
		return ByOther
	}
	return by
}
