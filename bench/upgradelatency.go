//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Latency across an upgrade against steady state: every request of a
// mode's load is "during an upgrade" if its lifetime (sent until the whole
// answer, or the failure, was in) overlaps an upgrade window, from the
// signal until the old process is gone (stop-then-start: until the new one
// answers), and "steady" otherwise. The figures are those of successful
// GET / requests (/slow ones take their asked delay) on each side, and the
// ratios upgrade / steady of the same mode in the same run.

// requestSet is the requests on one side of the split.
type requestSet struct {
	sent, failed int
	fast         []time.Duration // successful GET /, sorted
}

type upgradeSplit struct {
	upgrade, steady requestSet
	inWindows       time.Duration // the windows' total length
	windows         int
}

func splitByUpgrade(r modeResult) upgradeSplit {
	var s upgradeSplit
	ws := r.windows
	for _, w := range ws {
		s.inWindows += w.end().Sub(w.signal)
	}
	s.windows = len(ws)
	i := 0 // windows ending before the current request started; samples are in start order
	for _, x := range r.load.Samples {
		for i < len(ws) && ws[i].end().Before(x.start) {
			i++
		}
		finished := x.start.Add(x.latency)
		during := false
		for _, w := range ws[i:] {
			if w.signal.After(finished) {
				break
			}
			if !w.end().Before(x.start) {
				during = true
				break
			}
		}
		set := &s.steady
		if during {
			set = &s.upgrade
		}
		set.sent++
		switch {
		case x.failed:
			set.failed++
		case !x.slow:
			set.fast = append(set.fast, x.latency)
		}
	}
	slices.Sort(s.upgrade.fast)
	slices.Sort(s.steady.fast)
	return s
}

// ratio is a / b with two decimals, "-" when either is missing.
func ratio(a, b time.Duration) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

func failedOf(s requestSet) string {
	if s.sent == 0 {
		return "-"
	}
	return fmt.Sprintf("%d (%d failed)", s.sent, s.failed)
}

// upgradeLatencyRow is one mode's figures as table cells.
func upgradeLatencyRow(r modeResult) []string {
	s := splitByUpgrade(r)
	row := []string{r.title, fmt.Sprintf("%d, %s ms", s.windows, ms(s.inWindows)), failedOf(s.upgrade), failedOf(s.steady)}
	for _, q := range []float64{0.5, 0.99, 1} {
		u, st := quantile(s.upgrade.fast, q), quantile(s.steady.fast, q)
		row = append(row, ms(u)+" / "+ms(st), ratio(u, st))
	}
	return row
}

var upgradeLatencyHeader = []string{"mode", "upgrades, time in them", "requests during upgrades", "steady requests", "p50 ms upgrade / steady", "p50 ratio", "p99 ms upgrade / steady", "p99 ratio", "max ms upgrade / steady", "max ratio"}

func printUpgradeLatency(w io.Writer, results []modeResult) {
	fmt.Fprintln(w, "latency of GET / during upgrades (signal until the old process is gone) against steady state, same run")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, h := range upgradeLatencyHeader {
		fmt.Fprintf(tw, "%s\t", h)
	}
	fmt.Fprintln(tw)
	for _, r := range results {
		for _, c := range upgradeLatencyRow(r) {
			fmt.Fprintf(tw, "%s\t", c)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush() // w is stdout or a buffer
}

func writeUpgradeLatency(b *bytes.Buffer, results []modeResult, svgRef string) {
	b.WriteString("\n## Latency during upgrades against steady state\n\n")
	b.WriteString("The same runs as above, each request put on one side: *during upgrades* if its lifetime (sent until its answer was in, or it failed) overlaps an upgrade, from the signal until the old process is gone (baton: its `process exited` log line; tableflip: the old copy's exit, seen through a pidfd; stop-then-start: from SIGTERM until the new process answers, since there the old one is gone first), *steady* otherwise. ")
	b.WriteString("Latencies are of successful `GET /` requests on each side; each ratio is upgrade / steady of the same mode in the same run, so a ratio near 1 means an upgrade costs clients nothing they can measure, whatever this machine's absolute figures.\n\n")
	b.WriteString("|")
	for _, h := range upgradeLatencyHeader {
		fmt.Fprintf(b, " %s |", h)
	}
	b.WriteString("\n|---|")
	for range upgradeLatencyHeader[1:] {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, r := range results {
		b.WriteString("|")
		for _, c := range upgradeLatencyRow(r) {
			fmt.Fprintf(b, " %s |", c)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, r := range results {
		sp := splitByUpgrade(r)
		u, st := quantile(sp.upgrade.fast, 0.99), quantile(sp.steady.fast, 0.99)
		if sp.upgrade.sent == 0 || u == 0 || st == 0 {
			continue
		}
		fmt.Fprintf(b, "%s: %d of %d requests during upgrades failed, %d of %d steady ones; p99 during upgrades %s ms against %s ms steady (×%s). ",
			r.title, sp.upgrade.failed, sp.upgrade.sent, sp.steady.failed, sp.steady.sent, ms(u), ms(st), ratio(u, st))
	}
	b.WriteString("A p99 or max of a few hundred requests varies a lot from one run to the next on this shared machine (compare the rounds of the overhead measurement below): read a ratio between about 0.5 and 1.5 on one run as no measurable difference. A failure is not noise.\n\n")
	fmt.Fprintf(b, "The picture shows a few of these upgrades from each run (from the middle, or from the first that lost requests if only some did), every request a dot coloured by the generation that answered it:\n\n![Request latency over time across upgrades, per mode](%s)\n", svgRef)
}
