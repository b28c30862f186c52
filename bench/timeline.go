//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// baton's upgrade timeline, read from its JSON log (one slog record per
// line) rather than from any API made for the bench. An upgrade from
// generation N to N+1 shows up as
//
//	process started (N+1), process ready (N+1), promoted (N+1, replaces N),
//	draining (N, kernel-steered only), stopping (N), process exited (N),
//	retired (N)
//
// The parser asks little of the lines, so that it survives the supervisor
// changing under it: the message names above, a generation under "gen" (or
// "generation"), as a number or a numeric string, and a time under "time"
// (slog's default key; when a line has none, the moment the harness read
// it stands in). With several processes per generation it takes the first
// start, the last readiness before promotion and the last exit. "replaces"
// on "promoted" is optional: without it the promoted generation is the
// first one after the serving one.

// logRecord is one JSON line of baton's log and when the harness read it.
type logRecord struct {
	arrived time.Time
	fields  map[string]any
}

// upgradeSteps is one upgrade's moments; a zero time is a step the log
// does not show.
type upgradeSteps struct {
	from, to int
	signal   time.Time // SIGHUP sent by the harness
	started  time.Time // "process started" of the new generation
	ready    time.Time // "process ready" of the new generation
	promoted time.Time // "promoted": new connections go to the new generation
	stopping time.Time // "stopping": the old generation got its stop signal
	exited   time.Time // "process exited" of the old generation: it is gone
	retired  time.Time // "retired": baton has reaped it and closed its sockets
}

// genOf returns the generation a log line names, 0 if none.
func genOf(m map[string]any) int {
	for _, k := range []string{"gen", "generation"} {
		switch v := m[k].(type) {
		case float64:
			return int(v)
		case string:
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return 0
}

func intField(m map[string]any, key string) int {
	switch v := m[key].(type) {
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v) // not a number: 0, as if absent
		return n
	}
	return 0
}

// timeOf is the line's own time if it has one, else when it was read.
func timeOf(r logRecord) time.Time {
	for _, k := range []string{"time", "ts"} {
		if s, ok := r.fields[k].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return t
			}
		}
	}
	return r.arrived
}

type stepKey struct {
	msg string
	gen int
}

// timeline matches the upgrades the harness asked for with baton's log.
// Call it after stop: the log is complete then.
func (b *batonTarget) timeline() ([]upgradeSteps, error) {
	select {
	case <-b.exited:
	default:
		return nil, errors.New("baton is still running")
	}
	return parseTimeline(b.recs, b.sent)
}

func parseTimeline(recs []logRecord, sent []sentUpgrade) ([]upgradeSteps, error) {
	type event struct {
		at       time.Time
		replaces int
	}
	events := map[stepKey][]event{}
	var promoted []event
	var promotedGen []int
	for _, r := range recs {
		msg, _ := r.fields["msg"].(string)
		g := genOf(r.fields)
		ev := event{at: timeOf(r), replaces: intField(r.fields, "replaces")}
		events[stepKey{msg, g}] = append(events[stepKey{msg, g}], ev)
		if msg == "promoted" {
			promoted = append(promoted, ev)
			promotedGen = append(promotedGen, g)
		}
	}
	first := func(msg string, gen int, after time.Time) time.Time {
		for _, e := range events[stepKey{msg, gen}] {
			if !e.at.Before(after) {
				return e.at
			}
		}
		return time.Time{}
	}
	// last is the last one not after before (zero: no bound), else the first.
	last := func(msg string, gen int, before time.Time) time.Time {
		es := events[stepKey{msg, gen}]
		var t time.Time
		for _, e := range es {
			if before.IsZero() || !e.at.After(before) {
				t = e.at
			}
		}
		if t.IsZero() && len(es) > 0 {
			t = es[0].at
		}
		return t
	}
	var out []upgradeSteps
	var missing []string
	for i, s := range sent {
		u := upgradeSteps{from: s.from, signal: s.at}
		for j, p := range promoted {
			g := promotedGen[j]
			if p.at.Before(s.at) || g <= s.from || (p.replaces != 0 && p.replaces != s.from) {
				continue
			}
			u.to, u.promoted = g, p.at
			break
		}
		if u.to == 0 {
			missing = append(missing, strconv.Itoa(i+1))
			continue
		}
		u.started = first("process started", u.to, s.at)
		u.ready = last("process ready", u.to, u.promoted)
		u.stopping = first("stopping", u.from, u.promoted)
		u.exited = last("process exited", u.from, time.Time{})
		u.retired = first("retired", u.from, u.promoted)
		out = append(out, u)
	}
	if len(recs) == 0 {
		return nil, errors.New("baton's log has no JSON lines")
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("no %q line in baton's log for upgrade %s", "promoted", strings.Join(missing, ", "))
	}
	return out, nil
}

// windows are baton's upgrades from the timeline: signal to the old
// process gone (its "process exited", else "retired").
func (b *batonTarget) windows() []window {
	steps, _ := b.timeline() // a partial timeline still gives the windows it has
	var ws []window
	for _, u := range steps {
		w := window{signal: u.signal, ready: u.promoted, gone: u.exited, from: u.from, to: u.to}
		if w.gone.IsZero() {
			w.gone = u.retired
		}
		ws = append(ws, w)
	}
	return ws
}

// timelineStep is one row of the timeline table: the time between two
// moments of an upgrade, and whose time it is.
type timelineStep struct {
	name, who string
	span      func(u upgradeSteps) (time.Duration, bool)
}

// between is the time from a to b when the log shows both.
func between(a, b time.Time) (time.Duration, bool) {
	if a.IsZero() || b.IsZero() {
		return 0, false
	}
	return b.Sub(a), true
}

func spanOf(from, to func(u upgradeSteps) time.Time) func(u upgradeSteps) (time.Duration, bool) {
	return func(u upgradeSteps) (time.Duration, bool) { return between(from(u), to(u)) }
}

var (
	atSignal   = func(u upgradeSteps) time.Time { return u.signal }
	atStarted  = func(u upgradeSteps) time.Time { return u.started }
	atReady    = func(u upgradeSteps) time.Time { return u.ready }
	atPromoted = func(u upgradeSteps) time.Time { return u.promoted }
	atStopping = func(u upgradeSteps) time.Time { return u.stopping }
	atExited   = func(u upgradeSteps) time.Time { return u.exited }
	atRetired  = func(u upgradeSteps) time.Time { return u.retired }
)

// batonShare is the whole upgrade minus the app's start-up and its drain:
// what baton spends or waits for on its own account.
func batonShare(u upgradeSteps) (time.Duration, bool) {
	total, ok1 := between(u.signal, u.exited)
	startup, ok2 := between(u.started, u.ready)
	drain, ok3 := between(u.stopping, u.exited)
	return total - startup - drain, ok1 && ok2 && ok3
}

var timelineSteps = []timelineStep{
	{"SIGHUP → process started", "baton: start the new generation (fork, exec shim, exec)", spanOf(atSignal, atStarted)},
	{"process started → process ready", "app: hello's start-up until READY=1 arrives", spanOf(atStarted, atReady)},
	{"process ready → promoted", "baton: route new connections to the new generation", spanOf(atReady, atPromoted)},
	{"promoted → stopping", "baton: wait for the old generation's accept queue to empty, then the drain grace (steered); nothing to wait for (shared)", spanOf(atPromoted, atStopping)},
	{"stopping → process exited", "app: the old process finishes its requests in flight and exits", spanOf(atStopping, atExited)},
	{"SIGHUP → promoted", "the upgrade as the table above counts it", spanOf(atSignal, atPromoted)},
	{"SIGHUP → process exited (old gone)", "the whole upgrade", spanOf(atSignal, atExited)},
	{"baton's share", "the whole upgrade minus the app's start-up and drain", batonShare},
	{"process exited → retired", "baton: reap, close the old generation's sockets (after the old process is gone)", spanOf(atExited, atRetired)},
}

// stepStats is the median and max of a step over the upgrades that show it.
func stepStats(steps []upgradeSteps, s timelineStep) (med, mx time.Duration, n int) {
	var ds []time.Duration
	for _, u := range steps {
		if d, ok := s.span(u); ok {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	return quantile(ds, 0.5), ds[len(ds)-1], len(ds)
}

// msSigned is ms that shows 0 and negative spans (clock order in the log
// is baton's, the signal time is the harness's) rather than "-".
func msSigned(d time.Duration) string {
	if d <= 0 {
		return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
	}
	return ms(d)
}

func timelineModes(results []modeResult) []modeResult {
	var out []modeResult
	for _, r := range results {
		if r.mode == "steered" || r.mode == "shared" {
			out = append(out, r)
		}
	}
	return out
}

// printTimeline writes the timeline of baton's modes as aligned text.
func printTimeline(w io.Writer, results []modeResult) {
	rs := timelineModes(results)
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w, "baton's upgrade timeline from its JSON log, ms (median / max over upgrades)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "  step\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t", r.title)
	}
	fmt.Fprintln(tw)
	for _, s := range timelineSteps {
		fmt.Fprintf(tw, "  %s\t", s.name)
		for _, r := range rs {
			med, mx, n := stepStats(r.timeline, s)
			if n == 0 {
				fmt.Fprint(tw, "-\t")
				continue
			}
			fmt.Fprintf(tw, "%s / %s\t", msSigned(med), msSigned(mx))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush() // w is stdout or a buffer
	for _, r := range rs {
		if r.timelineErr != nil {
			fmt.Fprintf(w, "%s: timeline incomplete: %v\n", r.title, r.timelineErr)
		}
	}
}

func writeTimeline(b *bytes.Buffer, results []modeResult) {
	rs := timelineModes(results)
	if len(rs) == 0 {
		return
	}
	b.WriteString("\n## baton's upgrade timeline\n\n")
	b.WriteString("Each upgrade of the two baton runs above, step by step, from baton's own JSON log (`--log-format json`: the `time` of the lines `process started`, `process ready`, `promoted`, `stopping`, `process exited` and `retired`), and the moment the harness sent SIGHUP. ")
	b.WriteString("Time in the app is hello's start-up (from its process started until its `READY=1` is in) and the old process's drain (from its stop signal until it has exited, most of it finishing `/slow` requests); *baton's share* is the rest of the upgrade: starting the process, promoting it, and, kernel-steered, waiting for the old generation's accept queue to empty plus the drain grace before the stop signal, a wait on purpose: while it lasts the old process has nothing left to accept and the new one serves every new connection. ")
	b.WriteString("Milliseconds, median / max over the upgrades.\n\n")
	b.WriteString("| step | whose time |")
	for _, r := range rs {
		fmt.Fprintf(b, " %s |", r.title)
	}
	b.WriteString("\n|---|---|")
	for range rs {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, s := range timelineSteps {
		fmt.Fprintf(b, "| %s | %s |", s.name, s.who)
		for _, r := range rs {
			med, mx, n := stepStats(r.timeline, s)
			if n == 0 {
				b.WriteString(" - |")
				continue
			}
			fmt.Fprintf(b, " %s / %s |", msSigned(med), msSigned(mx))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, r := range rs {
		if r.timelineErr != nil {
			fmt.Fprintf(b, "**%s: timeline incomplete**: %v.\n\n", r.title, r.timelineErr)
		}
	}
	b.WriteString(timelineMeaning(rs))
}

// timelineMeaning quotes the figures: how much of an upgrade is baton's.
func timelineMeaning(rs []modeResult) string {
	var s strings.Builder
	for _, r := range rs {
		total, _, n := stepStats(r.timeline, timelineSteps[6])
		share, _, _ := stepStats(r.timeline, timelineSteps[7])
		spawn, _, _ := stepStats(r.timeline, timelineSteps[0])
		promote, _, _ := stepStats(r.timeline, timelineSteps[2])
		wait, _, _ := stepStats(r.timeline, timelineSteps[3])
		if n == 0 || total <= 0 {
			continue
		}
		fmt.Fprintf(&s, "%s: of a median upgrade of %s ms (SIGHUP until the old process is gone), baton's share is %s ms (%.0f%%): %s ms to start the new process, %s ms to promote it once ready, %s ms before the old one gets its stop signal. ",
			r.title, ms(total), msSigned(share), 100*float64(share)/float64(total), msSigned(spawn), msSigned(promote), msSigned(wait))
	}
	if s.Len() > 0 {
		s.WriteString("Medians of each step do not add up to the median of the whole. The SIGHUP time is the harness's clock and the rest baton's log; both are the same machine's wall clock.\n")
	}
	return s.String()
}
