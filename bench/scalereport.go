//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// The scale and soak figures, as text (stdout) and as BENCHMARKS.md
// sections.

func scaleRows(r *scaleResult) [][2]string {
	rows := [][2]string{
		{"generation", fmt.Sprintf("%d instances × %d TCP listeners: %d steered sockets", r.instances, r.listeners, r.instances*r.listeners)},
	}
	if r.startReady > 0 {
		rows = append(rows,
			[2]string{"baton started → every instance ready (harness)", ms(r.startReady) + " ms"},
			[2]string{"slowest instance's time to ready (status)", ms(r.slowestReady) + " ms"})
	}
	if r.steady.fds > 0 {
		rows = append(rows, [2]string{"baton once generation 1 serves", fmt.Sprintf("%d fds, %s RSS, %d threads", r.steady.fds, mib(r.steady.rss), r.steady.threads)})
	}
	return rows
}

func printScale(w io.Writer, r *scaleResult) {
	fmt.Fprintf(w, "scale: %d instances × %d listeners\n", r.instances, r.listeners)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range scaleRows(r) {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	_ = tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "upgrade\tlast ready ms\tpromoted ms\tdone ms\tpeak fds\tpeak RSS\tpeak threads\tfds after\tRSS after\t")
	for _, u := range r.upgrades {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t\n", u.strategy, ms(u.lastReady), ms(u.promoted), ms(u.total), u.peak.fds, mib(u.peak.rss), u.peak.threads, u.after.fds, mib(u.after.rss))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "load on two listeners during the upgrades: %d requests, %d failed\n", r.load.Sent, r.load.Failed)
	if r.err != nil {
		fmt.Fprintf(w, "scale did not complete: %v\n", r.err)
	}
}

func writeScale(b *bytes.Buffer, r *scaleResult) {
	fmt.Fprintf(b, "\n## Scale: %d instances × %d listeners\n\n", r.instances, r.listeners)
	fmt.Fprintf(b, "`bin/baton run` with `[service] instances = %d` and %d TCP listeners on 127.0.0.1:0, all kernel-steered: baton holds a socket per instance per listener (%d per generation, twice that while a blue-green upgrade has both). The service is `tests/faults/faultapp`, which serves every socket passed to it and sends `READY=1` once it does (hello serves only one). ", r.instances, r.listeners, r.instances*r.listeners)
	b.WriteString("Time to ready runs from starting baton until the last instance's `process ready` line is in; the status figure is the slowest instance's, from its own start. Each upgrade is asked for over the control socket with `wait` (as `baton upgrade --wait` does): *last ready* and *promoted* are when those events arrived, *done* when the answer came, once the replaced generation had retired; a blue-green upgrade starts every new instance at once and promotes them together, a rolling one replaces one instance at a time (the next starts once the one it replaces has exited: each step includes the default 100 ms drain grace). baton's fd count (`/proc/PID/fd`) and RSS (`VmRSS`) are sampled every 10 ms during each upgrade (peak) and once it is done. During both upgrades 4 clients load the first listener and 4 the last; every listener is checked to answer from the new generation afterwards.\n\n")
	b.WriteString("| figure | value |\n|---|--:|\n")
	for _, row := range scaleRows(r) {
		fmt.Fprintf(b, "| %s | %s |\n", row[0], row[1])
	}
	b.WriteString("\n| upgrade | last instance ready ms | promoted ms | done ms | baton peak fds | peak RSS | peak threads | fds after | RSS after |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, u := range r.upgrades {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %d | %s | %d | %d | %s |\n", u.strategy, ms(u.lastReady), ms(u.promoted), ms(u.total), u.peak.fds, mib(u.peak.rss), u.peak.threads, u.after.fds, mib(u.after.rss))
	}
	b.WriteString("\n*fds after* is one more than while generation 1 served: the executable of the generation replaced, kept open (pinned) for a rollback. baton waits for each of its processes in a blocking `waitid` call, which holds an OS thread: its thread count follows the number of processes (one per instance, twice as many while a blue-green upgrade runs both generations).\n")
	fmt.Fprintf(b, "\nLoad during the upgrades: %d requests, %d failed", r.load.Sent, r.load.Failed)
	if e := errorString(r.load.Errors); e != "" {
		fmt.Fprintf(b, " (%s)", e)
	}
	b.WriteString(".\n")
	if r.err != nil {
		fmt.Fprintf(b, "\n**The scale measurement did not complete**: %v.\n", r.err)
	}
}

func soakLine(r *soakResult) string {
	med, p99, mx, first, last := soakStats(r.durations)
	return fmt.Sprintf("%d upgrades in %v: each %s ms median, %s ms p99, %s ms max; median of the first tenth %s ms, of the last %s ms",
		r.upgrades, r.wall.Round(time.Second), ms(med), ms(p99), ms(mx), ms(first), ms(last))
}

func printSoak(w io.Writer, r *soakResult) {
	fmt.Fprintf(w, "soak: %s\n", soakLine(r))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sample\tfds\tgoroutines\tthreads\tRSS\t")
	for _, s := range r.samples {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t\n", s.label, s.fds, s.goroutines, s.threads, mib(s.rss))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "load during the upgrades: %d requests, %d failed\n", r.load.Sent, r.load.Failed)
	if v := r.verdict(); v == "" {
		fmt.Fprintln(w, "start and end: the same fds and goroutines, RSS within", mib(soakRSSMargin))
	} else {
		fmt.Fprintln(w, "start and end DIFFER:", v)
	}
	if r.err != nil {
		fmt.Fprintf(w, "soak did not complete: %v\n", r.err)
	}
}

func writeSoak(b *bytes.Buffer, r *soakResult) {
	fmt.Fprintf(b, "\n## %s upgrades back to back\n\n", thousands(r.upgrades))
	fmt.Fprintf(b, "`bin/baton run` with `examples/hello` (one instance, kernel-steered, `[drain] grace = %q` so that the old generation is stopped as soon as its accept queue is empty), under a light load (%d clients, half on fresh connections). Each upgrade is asked for over the control socket with `wait` and the next as soon as the answer is in (the replaced generation has retired by then). ", soakGrace, soakClients)
	fmt.Fprintf(b, "baton's fds (`/proc/PID/fd`), goroutines (`go_goroutines`, scraped from its own `[metrics]` endpoint), threads and RSS (`/proc/PID/status`) are sampled before any upgrade, after %d warm-up upgrades (*start*), every %d upgrades, and after the last once settled (*end*, up to %v). Anything baton kept per upgrade (a socket, a pidfd, a pinned executable, a goroutine, a subscription) would make *end* exceed *start* by about the number of upgrades: fds and goroutines must match exactly, RSS within %s. ", soakWarmup, max(1, r.upgrades/soakSamples), soakSettle, mib(soakRSSMargin))
	fmt.Fprintf(b, "A scrape is work for baton too (its connection, and a goroutine or three that the registry gathers its collectors on, some still running when `go_goroutines` is read), so in *before*, *start* and *end* the fds are counted first, once no scrape is under way, the goroutine count is the most frequent of %d scrapes 50 ms apart, and RSS is read after those scrapes, so that all three see baton just after the same work of its metrics endpoint; the rows in between are single samples taken while upgrades go on (their counts include the scrape's and the upgrade's own).", soakScrapes)
	b.WriteString(" *start* holds one fd more than *before*: the executable of the generation replaced, pinned for a rollback. The metrics endpoint's first scrapes raise baton's RSS by a few MiB (compare the footprint above, which never scrapes): that is the Go heap growing to serve them, not the upgrades. Threads are the Go runtime's OS threads; their number may grow a little and is not compared.\n\n")
	b.WriteString("| sample | fds | goroutines | threads | RSS |\n|---|--:|--:|--:|--:|\n")
	for _, s := range r.samples {
		fmt.Fprintf(b, "| %s | %d | %d | %d | %s |\n", s.label, s.fds, s.goroutines, s.threads, mib(s.rss))
	}
	fmt.Fprintf(b, "\n%s. Load: %d requests, %d failed", strings.ToUpper(soakLine(r)[:1])+soakLine(r)[1:], r.load.Sent, r.load.Failed)
	if e := errorString(r.load.Errors); e != "" {
		fmt.Fprintf(b, " (%s)", e)
	}
	b.WriteString(". ")
	if v := r.verdict(); v == "" {
		fmt.Fprintf(b, "**Start and end match**: the same fds and goroutines, RSS within %s.\n", mib(soakRSSMargin))
	} else {
		fmt.Fprintf(b, "**Start and end differ**: %s.\n", v)
	}
	if r.err != nil {
		fmt.Fprintf(b, "\n**The soak did not complete**: %v.\n", r.err)
	}
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
