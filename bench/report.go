package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
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

// machine describes where the figures were taken.
func machine() []string {
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
		"baton: " + out("git", "describe", "--tags", "--always", "--dirty"),
	}
}

func writeReport(o options, results []modeResult, started time.Time) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (the program in `bench/`); `make bench-quick` runs fewer upgrades.\n")
	fmt.Fprintf(&b, "Every figure below comes from one run, on loopback, on this machine:\n\n")
	fmt.Fprintf(&b, "- date: %s\n", started.UTC().Format("2006-01-02 15:04 MST"))
	for _, m := range machine() {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "\n## Upgrades under load\n\n")
	fmt.Fprintf(&b, "Parameters: %d upgrades per mode; %d clients, even-numbered ones on a fresh connection per request, odd ones on one kept-alive connection; every %dth request of a client is `/slow?ms=%d`, so that upgrades find requests in flight; %v of load before the first upgrade and after the last, %v between one upgrade done and the next begun; per-request timeout %v; after a failure a client pauses %v.\n\n",
		o.upgrades, o.clients, o.slowEvery, o.slowMS, o.settle, o.interval, requestTimeout, failurePause)
	fmt.Fprintf(&b, "- **baton, kernel-steered**: `bin/baton run` with `[upgrade] steering = \"bpf\"`, `examples/hello` as the service; an upgrade is SIGHUP, done at the `promoted` log line of the next generation (the old one drains in the background).\n")
	fmt.Fprintf(&b, "- **baton, shared socket**: the same with `steering = \"shared\"`: every generation accepts on the same socket, as tableflip, einhorn and socketmaster do.\n")
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
