//go:build linux

package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ms formats a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f == 0:
		return "-"
	case f < 10:
		return fmt.Sprintf("%.2f", f)
	default:
		return fmt.Sprintf("%.0f", f)
	}
}

func failedPct(r modeResult) string {
	if r.load.Sent == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f%%", 100*float64(r.load.Failed)/float64(r.load.Sent))
}

// rate is requests sent per second of load.
func rate(r modeResult) string {
	if r.wall <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(r.load.Sent)/r.wall.Seconds())
}

func upgradeTimes(r modeResult) (median, max time.Duration) {
	if len(r.upgradeTime) == 0 {
		return 0, 0
	}
	return quantile(r.upgradeTime, 0.5), r.upgradeTime[len(r.upgradeTime)-1]
}

// errorList is the failures by reason, most frequent first.
func errorList(r modeResult) string {
	reasons := slices.Collect(maps.Keys(r.load.Errors))
	slices.SortFunc(reasons, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.load.Errors[b], r.load.Errors[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, k := range reasons {
		parts = append(parts, fmt.Sprintf("%d × %s", r.load.Errors[k], k))
	}
	return strings.Join(parts, ", ")
}

func printRow(r modeResult) {
	status := "ok"
	if r.err != nil {
		status = "ERROR: " + r.err.Error()
	}
	fmt.Printf("  %-22s %d upgrades  sent %d  failed %d  (%s)\n", r.title, r.upgrades, r.load.Sent, r.load.Failed, status)
}

// printTable writes the figures as aligned text.
func printTable(w io.Writer, results []modeResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tupgrades\tsent\treq/s\tfailed\tfailed %\tp50 ms\tp99 ms\tmax ms\tslow max ms\tupgrade med ms\tupgrade max ms\t")
	for _, r := range results {
		med, mx := upgradeTimes(r)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.title, r.upgrades, r.load.Sent, rate(r), r.load.Failed, failedPct(r),
			ms(quantile(r.load.Fast, 0.5)), ms(quantile(r.load.Fast, 0.99)), ms(quantile(r.load.Fast, 1)),
			ms(quantile(r.load.Slow, 1)), ms(med), ms(mx))
	}
	_ = tw.Flush() // w is stdout or a buffer
	for _, r := range results {
		if e := errorList(r); e != "" {
			fmt.Fprintf(w, "%s failures: %s\n", r.title, e)
		}
	}
}

// machine describes where the figures were taken, and with which baton:
// the binary's own version (`make build` stamps it from git describe), not
// the checkout's, which others may be changing meanwhile.
func machine(baton string) []string {
	out := func(name string, args ...string) string {
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			return "unknown (" + err.Error() + ")"
		}
		return strings.TrimSpace(string(b))
	}
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return []string{
		"kernel: " + out("uname", "-r"),
		"CPUs (nproc): " + out("nproc"),
		"CPU: " + cpu,
		"Go: " + out("go", "version") + " (bench built with " + runtime.Version() + ")",
		"baton: " + strings.TrimPrefix(out(baton, "version"), "baton "),
	}
}

// nproc is the number of CPUs this process may use.
func nproc() string { return strconv.Itoa(runtime.NumCPU()) }

func writeReport(o options, results []modeResult, ov *overheadResult, fp *footprintResult, sc *scaleResult, sk *soakResult, started time.Time) error {
	svgRef, err := filepath.Rel(filepath.Dir(o.out), o.svg)
	if err != nil {
		svgRef = o.svg
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (the program in `bench/`); `make bench-quick` runs fewer upgrades.\n")
	fmt.Fprintf(&b, "Every figure below comes from one run, on loopback, on this machine:\n\n")
	fmt.Fprintf(&b, "- date: %s\n", started.UTC().Format("2006-01-02 15:04 MST"))
	for _, m := range machine(o.baton) {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "\n## Upgrades under load\n\n")
	fmt.Fprintf(&b, "Parameters: %d upgrades per mode; %d clients, even-numbered ones on a fresh connection per request, odd ones on one kept-alive connection; every %dth request of a client is `/slow?ms=%d`, so that upgrades find requests in flight; %v of load before the first upgrade and after the last, %v between one upgrade done and the next begun; per-request timeout %v; after a failure a client pauses %v.\n\n",
		o.upgrades, o.clients, o.slowEvery, o.slowMS, o.settle, o.interval, requestTimeout, failurePause)
	fmt.Fprintf(&b, "- **baton, kernel-steered**: `bin/baton run` with `[upgrade] steering = \"bpf\"`, `examples/hello` as the service; an upgrade is SIGHUP, done at the `promoted` log line of the next generation (the old one drains in the background).\n")
	fmt.Fprintf(&b, "- **baton, shared socket**: the same with `steering = \"shared\"`: every generation accepts on the same socket, as tableflip, einhorn and socketmaster do.\n")
	fmt.Fprintf(&b, "- **tableflip**: `examples/flipper`, the same service (same handlers and answers) upgrading itself with github.com/cloudflare/tableflip as its README recommends, no supervisor: `upg.Listen`, `upg.Ready()` once serving, SIGHUP to the pid in its PID file runs `upg.Upgrade()`, which starts a new copy of the binary with the socket; once the new copy is ready the old one's `upg.Exit()` closes and it calls `http.Server.Shutdown`. Both accept on the one socket meanwhile. Done when the new copy has called `Ready`. tableflip refuses to upgrade a copy whose parent has not exited yet, so the harness waits for that before each SIGHUP (never long: the next upgrade comes %v later).\n", o.interval)
	fmt.Fprintf(&b, "- **stop-then-start**: what `systemctl restart` does to a service that binds its own port: SIGTERM to hello, wait until it has exited, bind the address again, start the new hello on it (by socket activation, through baton's exec shim only to set `LISTEN_PID`), done when it answers. Nobody listens between the old process closing the socket and the new bind.\n\n")
	fmt.Fprintf(&b, "*req/s* is requests sent per second of load: every client waits for each answer, and a slow request holds its client %d ms, so the rate is set mostly by the slow requests. Latency is that of successful `/` requests (p50, p99, max); *slow max* is the longest successful `/slow` request (%d ms of it is the asked delay). *Upgrade* is from the signal (or the stop) until the next generation serves: median and max.\n\n", o.slowMS, o.slowMS)
	fmt.Fprintf(&b, "| mode | upgrades | sent | req/s | failed | failed %% | p50 ms | p99 ms | max ms | slow max ms | upgrade med ms | upgrade max ms |\n")
	fmt.Fprintf(&b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		med, mx := upgradeTimes(r)
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.title, r.upgrades, r.load.Sent, rate(r), r.load.Failed, failedPct(r),
			ms(quantile(r.load.Fast, 0.5)), ms(quantile(r.load.Fast, 0.99)), ms(quantile(r.load.Fast, 1)),
			ms(quantile(r.load.Slow, 1)), ms(med), ms(mx))
	}
	b.WriteString("\n")
	for _, r := range results {
		if e := errorList(r); e != "" {
			fmt.Fprintf(&b, "Failures, %s: %s.\n\n", r.title, e)
		}
		if r.err != nil {
			fmt.Fprintf(&b, "**%s did not complete**: %v.\n\n", r.title, r.err)
		}
	}
	b.WriteString(meaning(results))
	writeUpgradeLatency(&b, results, svgRef)
	writeTimeline(&b, results)
	if ov != nil {
		writeOverhead(&b, ov)
	}
	if fp != nil {
		writeFootprint(&b, fp)
	}
	if sc != nil {
		writeScale(&b, sc)
	}
	if sk != nil {
		writeSoak(&b, sk)
	}
	return os.WriteFile(o.out, b.Bytes(), 0o644)
}

// meaning is the prose that goes with the figures; it quotes them, so it
// is written from them.
func meaning(results []modeResult) string {
	by := map[string]modeResult{}
	for _, r := range results {
		by[r.mode] = r
	}
	var s strings.Builder
	s.WriteString("### What the figures mean\n\n")
	if r, ok := by["steered"]; ok {
		fmt.Fprintf(&s, "With kernel steering, %d of %d requests failed across %d upgrades. A new generation gets no connection before it is ready, and the old one is stopped only once its accept queue is empty, so a client cannot tell that an upgrade happened except by the generation in the answer. ", r.load.Failed, r.load.Sent, r.upgrades)
	}
	if r, ok := by["shared"]; ok {
		fmt.Fprintf(&s, "In shared mode %d of %d failed across %d upgrades. A shared socket has a known residual loss: a candidate accepts before it is ready, and the old process accepts until its stop signal, while Go's `http.Server` may drop a connection it reads after `Shutdown` began (the client sees EOF). It is rare and uneven (the README quotes about 1 request in 10 upgrades from an earlier measurement; a run may show none, or several), so compare a few runs before reading much into one figure. ", r.load.Failed, r.load.Sent, r.upgrades)
	}
	if r, ok := by["tableflip"]; ok {
		med, _ := upgradeTimes(r)
		fmt.Fprintf(&s, "tableflip failed %d of %d across %d upgrades. Old and new copy accept on the one socket, as in baton's shared mode, and the old copy accepts until its `upg.Exit()` closes and it calls `Shutdown`, so it is exposed to the same rare loss (a client on a fresh connection sees EOF; like the shared mode's, a run may show none, or a few). Its upgrades are done sooner (median %s ms from SIGHUP until the new copy is ready", r.load.Failed, r.load.Sent, r.upgrades, ms(med))
		if b, ok := by["steered"]; ok {
			bmed, _ := upgradeTimes(b)
			fmt.Fprintf(&s, ", against %s ms for baton kernel-steered", ms(bmed))
		}
		s.WriteString("): the app re-executes itself, with nothing between the signal and the new process; the timeline below shows where baton's time goes. ")
	}
	if r, ok := by["restart"]; ok {
		med, _ := upgradeTimes(r)
		perClient := 0.0
		if r.upgrades > 0 {
			perClient = float64(r.load.Failed) / float64(r.upgrades*max(1, r.clients))
		}
		fmt.Fprintf(&s, "A plain stop-then-start failed %d of %d: during each restart (median %s ms from SIGTERM until the new process answers, most of it the old process finishing its slow requests after it has closed its socket) nobody listens, and every new connection is refused, keep-alive clients' included once their connection closes. That is %.1f failures per client per restart here; since a client pauses %v after a failure, the count grows with the number of clients and the length of the window, not with the request rate. ", r.load.Failed, r.load.Sent, ms(med), perClient, failurePause)
	}
	s.WriteString("Latencies are on loopback with load generator and server sharing the same CPUs, so they show relative differences between modes, not what a network would add; the upgrade time of the baton modes includes hello's start-up and readiness, not the old generation's drain, which runs after promotion while the new one already serves.\n")
	return s.String()
}

func pct(x float64) string { return fmt.Sprintf("%.3f", x) }

// printOverhead writes the data-path overhead as aligned text.
func printOverhead(w io.Writer, r *overheadResult) {
	fmt.Fprintf(w, "data-path overhead: baton (kernel-steered) / hello alone, medians of %d rounds × %v per side, %d closed-loop clients on GET /\n", len(roundsDone(r)), r.dur, r.clients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "connections\tbaton req/s\talone req/s\tratio\tgoal >= 0.98\tbaton p99 ms\talone p99 ms\tp99 ratio\t")
	for _, v := range r.variants {
		if len(v.sides[1].rps) == 0 {
			continue
		}
		rr, pr := v.ratios()
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", v.name, medianF(v.sides[0].rps), medianF(v.sides[1].rps), pct(rr), verdict(rr),
			ms(medianD(v.sides[0].p99)), ms(medianD(v.sides[1].p99)), pct(pr))
	}
	_ = tw.Flush()
	for _, v := range r.variants {
		if f := v.failures(); f != "" {
			fmt.Fprintf(w, "%s failures: %s\n", v.name, f)
		}
	}
	if r.batonLoad > 0 {
		fmt.Fprintf(w, "baton's own CPU time while the load ran against it: %v over %v of load\n", r.batonCPU, r.batonLoad.Round(time.Millisecond))
	}
	if r.err != nil {
		fmt.Fprintf(w, "overhead did not complete: %v\n", r.err)
	}
}

func roundsDone(r *overheadResult) []float64 {
	if len(r.variants) == 0 {
		return nil
	}
	return r.variants[len(r.variants)-1].sides[1].rps
}

func writeOverhead(b *bytes.Buffer, r *overheadResult) {
	fmt.Fprintf(b, "\n## Data-path overhead\n\n")
	fmt.Fprintf(b, "The same `examples/hello` binary, under baton and alone, side by side in one run. **baton**: `bin/baton run` with `steering = \"bpf\"` (the kernel hands each connection to the serving generation; baton only holds the socket). **alone**: the harness binds the socket and starts hello on it by socket activation through `bin/baton __baton-exec`, which sets `LISTEN_PID` and execs hello: no supervisor at all. Both run at once, each on its own port of 127.0.0.1. ")
	fmt.Fprintf(b, "The load is closed-loop: %d clients, each sending `GET /` as soon as the previous answer is in, either over one kept-alive connection each or over a fresh connection per request, for %v against one side then %v against the other, alternating (baton, alone, baton, alone, ...) for %d rounds after an uncounted warm-up of each, so that a noisy neighbour on this shared machine hurts both alike. ", r.clients, r.dur, r.dur, r.rounds)
	fmt.Fprintf(b, "*req/s* is successful requests per second of a period; *p99* is that of a period's successful requests; each figure in the table is the median over the rounds and each ratio is baton / alone of those medians. The goal is a throughput ratio of at least %.2f; for p99, lower is better and ~1 means no difference.\n\n", overheadGoal)
	fmt.Fprintf(b, "| connections | baton req/s | alone req/s | throughput ratio | goal ≥ %.2f | baton p99 ms | alone p99 ms | p99 ratio |\n|---|--:|--:|--:|:-:|--:|--:|--:|\n", overheadGoal)
	for _, v := range r.variants {
		if len(v.sides[1].rps) == 0 {
			continue
		}
		rr, pr := v.ratios()
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n", v.name, medianF(v.sides[0].rps), medianF(v.sides[1].rps), pct(rr), verdict(rr),
			ms(medianD(v.sides[0].p99)), ms(medianD(v.sides[1].p99)), pct(pr))
	}
	fmt.Fprintf(b, "\nEvery round, in the order measured:\n\n| round | connections | baton req/s | alone req/s | baton p99 ms | alone p99 ms |\n|--:|---|--:|--:|--:|--:|\n")
	for i := range roundsDone(r) {
		for _, v := range r.variants {
			if i < len(v.sides[1].rps) {
				fmt.Fprintf(b, "| %d | %s | %.0f | %.0f | %s | %s |\n", i+1, v.name, v.sides[0].rps[i], v.sides[1].rps[i], ms(v.sides[0].p99[i]), ms(v.sides[1].p99[i]))
			}
		}
	}
	b.WriteString("\n")
	for _, v := range r.variants {
		if f := v.failures(); f != "" {
			fmt.Fprintf(b, "Failures, %s: %s.\n\n", v.name, f)
		}
	}
	if r.err != nil {
		fmt.Fprintf(b, "**The overhead measurement did not complete**: %v.\n\n", r.err)
	}
	var met, total int
	var worst float64 = -1
	for _, v := range r.variants {
		if len(v.sides[1].rps) == 0 {
			continue
		}
		rr, _ := v.ratios()
		total++
		if rr >= overheadGoal {
			met++
		}
		if worst < 0 || rr < worst {
			worst = rr
		}
	}
	if total > 0 {
		fmt.Fprintf(b, "The throughput goal (≥ %.2f) is met in %d of %d variants (lowest ratio %s). ", overheadGoal, met, total, pct(worst))
	}
	if r.batonLoad > 0 {
		fmt.Fprintf(b, "baton itself used %v of CPU time during the %v the load ran against it (utime+stime from `/proc/PID/stat`, in ticks of 10 ms): it does not touch requests, so what differs between the two sides is noise: load generator, both servers and whatever else runs here share %s CPUs. ", r.batonCPU, r.batonLoad.Round(time.Second), nproc())
	}
	b.WriteString("A ratio a few percent from 1 either way on one run is within what this machine varies from one period to the next (see the rounds above); compare several runs before reading more into it.\n")
}

func printFootprint(w io.Writer, r *footprintResult) {
	fmt.Fprintln(w, "footprint: bin/baton running examples/hello, no load")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range footprintRows(r) {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	_ = tw.Flush()
	if r.err != nil {
		fmt.Fprintf(w, "footprint did not complete: %v\n", r.err)
	}
}

func footprintRows(r *footprintResult) [][2]string {
	rows := [][2]string{
		{"bin/baton size (stripped, `make build`)", fmt.Sprintf("%d bytes (%s)", r.binSize, mib(r.binSize))},
	}
	if r.rss > 0 {
		rows = append(rows,
			[2]string{"baton RSS once generation 1 serves (VmRSS)", mib(r.rss)},
			[2]string{"baton peak RSS so far (VmHWM)", mib(r.hwm)},
			[2]string{"baton threads", fmt.Sprint(r.threads)})
	}
	if r.rssAfter > 0 {
		idle := fmt.Sprintf("%v (utime+stime)", r.idleCPU)
		if r.idleSched >= 0 {
			idle += fmt.Sprintf("; %v by schedstat", r.idleSched.Round(time.Microsecond))
		}
		rows = append(rows,
			[2]string{fmt.Sprintf("baton CPU time over %v idle", r.idle), idle},
			[2]string{fmt.Sprintf("baton RSS after %v idle", r.idle), mib(r.rssAfter)})
	}
	if r.helloRSS > 0 {
		rows = append(rows, [2]string{"for scale: hello's RSS", mib(r.helloRSS)})
	}
	return rows
}

func writeFootprint(b *bytes.Buffer, r *footprintResult) {
	fmt.Fprintf(b, "\n## Footprint\n\n")
	fmt.Fprintf(b, "A fresh `bin/baton run` with `examples/hello` as the service (kernel-steered, one listener, no load). RSS is read from `/proc/PID/status` once generation 1 serves and again after an idle period of %v; CPU time over that period is utime+stime from `/proc/PID/stat` (ticks of 10 ms, exited threads included), and for finer grain the sum of `/proc/PID/task/*/schedstat` (ns, live threads). baton polls nothing while idle, so its CPU time there should be about zero. Its metrics endpoint is off here (a scrape costs memory of its own); goroutine counts, which only it shows, are in the soak below.\n\n", r.idle)
	b.WriteString("| figure | value |\n|---|--:|\n")
	for _, row := range footprintRows(r) {
		fmt.Fprintf(b, "| %s | %s |\n", row[0], row[1])
	}
	b.WriteString("\n")
	if r.err != nil {
		fmt.Fprintf(b, "**The footprint measurement did not complete**: %v.\n", r.err)
	}
}
