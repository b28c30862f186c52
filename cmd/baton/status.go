//go:build linux

package main

// `baton status`: one status request, printed as compact tables, or as
// the protocol's JSON with --json.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

func statusCmd(args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags("status", args, stderr)
	if err != nil {
		return err
	}
	var resp control.Response
	if err := ask("status", f.socket, control.Request{Command: control.CommandStatus}, clientTimeout,
		func(r control.Response) { resp = r }); err != nil {
		return err
	}
	if resp.Type != control.TypeStatus || resp.Status == nil {
		return usageError{fmt.Errorf("status: baton answered a %q instead of a status", resp.Type)}
	}
	if f.json {
		// As received, so that fields newer than this client are kept.
		var line struct {
			Status json.RawMessage `json:"status"`
		}
		var out bytes.Buffer
		if err := json.Unmarshal(resp.Raw, &line); err != nil {
			return usageError{fmt.Errorf("status: %w", err)}
		}
		if err := json.Indent(&out, line.Status, "", "  "); err != nil {
			return usageError{fmt.Errorf("status: %w", err)}
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	printStatus(stdout, resp.Status, time.Now())
	return nil
}

// printStatus writes the status as compact tables: the service, the failed
// state right below it, and its listeners; the upgrade in progress with
// each routed generation's weight and share, and the probation; the
// generations; and, when a generation runs several instances, the
// instances.
func printStatus(w io.Writer, st *control.StatusJSON, now time.Time) {
	fmt.Fprintf(w, "service %s (baton pid %d, config %s)\n", st.Service, st.BatonPID, st.Config)
	if st.Failed != "" {
		fmt.Fprintf(w, "FAILED: %s; `baton upgrade --force` to try again\n", st.Failed)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, l := range st.Listeners {
		fmt.Fprintf(tw, "listener %s\t%s\t%s\t%s\n", l.Name, l.Network, l.Address, l.Mode)
	}
	_ = tw.Flush() // the writes before report their own errors: none to act on
	switch {
	case st.Stopping:
		fmt.Fprintln(w, "stopping: draining every generation")
	case st.Upgrade != nil:
		printUpgrade(w, st)
	case st.Serving == 0:
		fmt.Fprintln(w, "no generation serving")
	}
	if st.Probation != 0 {
		fmt.Fprintln(w, probationLine(st, now))
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSTRATEGY\tPID\tREADY\tUPTIME\tRESTARTS\tEXECUTABLE\tSHA256")
	several := false
	for _, g := range st.Generations {
		several = several || len(g.Instances) > 1
		state := g.State
		if g.GaveUp {
			state += ",gave-up"
		}
		pids := "-"
		if len(g.PIDs) > 0 {
			ps := make([]string, len(g.PIDs))
			for i, p := range g.PIDs {
				ps[i] = strconv.Itoa(p)
			}
			pids = strings.Join(ps, ",")
		}
		ready := "no"
		if g.Ready {
			ready = formatMS(g.TimeToReadyMS)
		}
		uptime := "-"
		if t, err := time.Parse(time.RFC3339Nano, g.Started); err == nil {
			uptime = max(now.Sub(t), 0).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", g.ID, state, orDash(g.Strategy), pids, ready, uptime,
			g.Restarts, orDash(g.Executable), orDash(g.SHA256[:min(12, len(g.SHA256))]))
	}
	_ = tw.Flush() // see above
	if !several {
		return // each generation's row says all about its one instance
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tINSTANCE\tSTATE\tPID\tREADY\tROUTED\tRESTARTS\tSTATUS")
	for _, g := range st.Generations {
		for _, in := range g.Instances {
			state := in.State
			if in.GaveUp {
				state += ",gave-up"
			}
			pid := "-"
			if in.PID != 0 {
				pid = strconv.Itoa(in.PID)
			}
			ready := "no"
			if in.Ready {
				ready = formatMS(in.TimeToReadyMS)
			}
			routed := "no"
			if in.Routed {
				routed = "yes"
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", g.ID, in.Index, state, pid, ready, routed,
				in.Restarts, orDash(in.Status))
		}
	}
	_ = tw.Flush() // see above
}

// printUpgrade writes the upgrade in progress (or the revert, when the
// candidate was started to revert the serving generation): the candidate,
// how far its strategy has taken it, and the weight and share of each
// generation that takes new connections.
func printUpgrade(w io.Writer, st *control.StatusJSON) {
	var cand, serving *control.GenerationJSON
	for i, g := range st.Generations {
		switch g.ID {
		case st.Upgrade.Candidate:
			cand = &st.Generations[i]
		case st.Serving:
			serving = &st.Generations[i]
		}
	}
	if cand == nil || cand.Strategy == "" {
		// Not listed, or a baton from before gradual upgrades (no
		// strategy, weight or share): only the id is known.
		fmt.Fprintf(w, "upgrade in progress: generation %d\n", st.Upgrade.Candidate)
		return
	}
	if cand.RevertOf != 0 {
		// The generation the reverted one replaced, started again: its
		// strategy (blue-green, as every rollback's) says nothing more.
		fmt.Fprintf(w, "revert in progress: generation %d (reverting generation %d)%s\n", cand.ID, cand.RevertOf, progressOf(cand))
	} else {
		fmt.Fprintf(w, "upgrade in progress: generation %d (%s)%s\n", cand.ID, cand.Strategy, progressOf(cand))
	}
	var total uint64
	for _, g := range []*control.GenerationJSON{serving, cand} {
		if g != nil {
			total += g.Connections
		}
	}
	for _, g := range []*control.GenerationJSON{serving, cand} {
		if g != nil {
			fmt.Fprintf(w, "  generation %d: weight %d%%, %s\n", g.ID, g.Weight, shareOf(g, total))
		}
	}
}

// probationLine says which generation is on probation, until when, and
// what a revert would go back to: "generation 3 on probation until
// 12:04:05 (standby: generation 2)". The time is in now's location.
func probationLine(st *control.StatusJSON, now time.Time) string {
	line := fmt.Sprintf("generation %d on probation", st.Probation)
	if end, err := time.Parse(time.RFC3339Nano, st.ProbationEnd); err == nil {
		line += " until " + clock(end, now)
	}
	if st.Standby != 0 {
		return line + fmt.Sprintf(" (standby: generation %d)", st.Standby)
	}
	return line + " (no standby: a revert starts the replaced generation again)"
}

// clock writes t in now's location: the time of day if on now's day,
// else the date too.
func clock(t, now time.Time) string {
	t = t.In(now.Location())
	if y, m, d := t.Date(); y != now.Year() || m != now.Month() || d != now.Day() {
		return t.Format(time.DateTime)
	}
	return t.Format(time.TimeOnly)
}

// progressOf says how far a candidate is, for the upgrade line of the
// status: ", step 2/3 (50%), holding until `baton promote`".
func progressOf(g *control.GenerationJSON) string {
	switch {
	case g.Aborting != "":
		return ", being undone: " + g.Aborting
	case g.Steps == 0 && g.Strategy == supervisor.StrategyRolling:
		routed := 0
		for _, in := range g.Instances {
			if in.Routed {
				routed++
			}
		}
		return fmt.Sprintf(", %d new instances routed", routed)
	case g.Steps == 0:
		if g.State == "starting" {
			return ", starting"
		}
		return ""
	case g.Step == 0:
		return fmt.Sprintf(", starting before step 1/%d", g.Steps)
	case g.Step > g.Steps:
		return fmt.Sprintf(", past step %d/%d, moving to 100%%", g.Steps, g.Steps)
	case g.Holding:
		return fmt.Sprintf(", step %d/%d (%d%%), holding until `baton promote`", g.Step, g.Steps, g.Weight)
	default:
		return fmt.Sprintf(", step %d/%d (%d%%)", g.Step, g.Steps, g.Weight)
	}
}

// shareOf is the share of new connections g got: measured, estimated (in
// shared mode, by the number of processes), or not known yet.
func shareOf(g *control.GenerationJSON, total uint64) string {
	switch {
	case g.Share == nil:
		return "share not known yet"
	case g.ShareEstimated:
		return fmt.Sprintf("share ~%s (by instance count)", formatPercent(*g.Share))
	case total > 0:
		return fmt.Sprintf("share %s of %d new connections", formatPercent(*g.Share), total)
	default:
		return "share " + formatPercent(*g.Share)
	}
}

// formatPercent writes a percentage with at most one decimal: "50%",
// "48.7%".
func formatPercent(p float64) string {
	return strconv.FormatFloat(math.Round(p*10)/10, 'f', -1, 64) + "%"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatMS writes a whole number of milliseconds as a duration.
func formatMS(ms int64) string {
	if ms <= 0 {
		return "<1ms"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}
