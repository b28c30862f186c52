//go:build linux

package main

// The client subcommands: each sends one request to a running `baton run`
// over its control socket (package control) and prints the answer.
//
// Exit status, through the returned error: nil is 0; a usageError is 2, for
// usage errors and for every failure to get an answer (no socket, refused,
// an answer that is not the protocol's), so that a deploy script can tell
// "could not ask" from "the upgrade failed"; any other error is 1: the
// upgrade or rollback was decided and it failed, or promote or abort had
// nothing to act on.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/supervisor"
)

// clientTimeout bounds the exchanges that do not wait for an upgrade.
const clientTimeout = 30 * time.Second

// waitSlack is how much longer than the server's own wait timeout the
// client waits for its answer.
const waitSlack = 30 * time.Second

type clientFlags struct {
	socket  string
	json    bool
	wait    bool
	timeout time.Duration
	all     bool
}

// parseClientFlags parses -c/--config or --socket (exactly one) and the
// flags the subcommand takes, and finds the socket.
func parseClientFlags(name string, args []string, stderr io.Writer) (clientFlags, error) {
	var f clientFlags
	var config string
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&config, "config", "", "config `FILE` (TOML) of the running baton: its [control] socket")
	fs.StringVar(&config, "c", "", "config `FILE` (shorthand for --config)")
	fs.StringVar(&f.socket, "socket", "", "control socket `PATH` (instead of -c)")
	switch name {
	case "status":
		fs.BoolVar(&f.json, "json", false, "print the status as JSON (stable; see control/PROTOCOL.md)")
	case "upgrade", "rollback":
		fs.BoolVar(&f.wait, "wait", false, "follow the "+name+" until it is decided; exit 0 if promoted, 1 if not")
		fs.DurationVar(&f.timeout, "timeout", 0, "with --wait: give up waiting after `D` (default "+control.DefaultWaitTimeout.String()+")")
	case "promote":
		fs.BoolVar(&f.all, "all", false, "skip the remaining canary steps: straight to 100%")
	}
	if err := fs.Parse(args); err != nil {
		return f, usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return f, usageError{fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))}
	case config == "" && f.socket == "":
		return f, usageError{fmt.Errorf("%s: -c FILE or --socket PATH is required", name)}
	case config != "" && f.socket != "":
		return f, usageError{fmt.Errorf("%s: give -c FILE or --socket PATH, not both", name)}
	case f.timeout != 0 && !f.wait:
		return f, usageError{fmt.Errorf("%s: --timeout needs --wait", name)}
	case f.timeout < 0 || f.timeout > control.MaxWaitTimeout:
		return f, usageError{fmt.Errorf("%s: --timeout %s is out of range (more than 0, at most %s)", name, f.timeout, control.MaxWaitTimeout)}
	}
	if config != "" {
		cfg, err := supervisor.LoadConfig(config)
		if err != nil {
			return f, usageError{fmt.Errorf("%s: find the control socket: %w (or give it with --socket PATH)", name, err)}
		}
		f.socket = cfg.Control.Socket
	}
	return f, nil
}

// ask sends req and hands each answer to on. Every failure to get an answer
// is a usageError: exit 2.
func ask(name, socket string, req control.Request, timeout time.Duration, on func(control.Response)) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req.Version = control.ProtocolVersion
	err := control.Do(ctx, socket, req, func(r control.Response) error {
		on(r)
		return nil
	})
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", name, err)}
	}
	return nil
}

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

// printStatus writes the status as compact tables: the service and its
// listeners; the upgrade in progress with each routed generation's weight
// and share; the generations; and, when a generation runs several
// instances, the instances.
func printStatus(w io.Writer, st *control.StatusJSON, now time.Time) {
	fmt.Fprintf(w, "service %s (baton pid %d, config %s)\n", st.Service, st.BatonPID, st.Config)
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

// printUpgrade writes the upgrade in progress: the candidate, how far its
// strategy has taken it, and the weight and share of each generation that
// takes new connections.
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
	fmt.Fprintf(w, "upgrade in progress: generation %d (%s)%s\n", cand.ID, cand.Strategy, progressOf(cand))
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

func upgradeCmd(args []string, stdout, stderr io.Writer) error {
	var rest []string
	self := false
	for _, a := range args {
		if a == "--self" || a == "-self" {
			self = true
			continue
		}
		rest = append(rest, a)
	}
	if self {
		return selfUpgradeCmd(rest, stdout, stderr)
	}
	return startCmd(control.CommandUpgrade, args, stdout, stderr)
}

// selfUpgradeCmd asks the running baton to replace itself with the binary
// now at its path: it sends it SIGUSR2, having found its pid through the
// control socket. The outcome is in baton's log (and, under systemd, in
// MAINPID): the control socket changes hands during a self-upgrade.
func selfUpgradeCmd(args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags("upgrade", args, stderr)
	if err != nil {
		return err
	}
	if f.wait {
		return usageError{errors.New("upgrade: --self cannot --wait; follow the self-upgrade in baton's log")}
	}
	var resp control.Response
	if err := ask("upgrade", f.socket, control.Request{Command: control.CommandStatus}, clientTimeout,
		func(r control.Response) { resp = r }); err != nil {
		return err
	}
	if resp.Status == nil || resp.Status.BatonPID <= 0 {
		return usageError{errors.New("upgrade: baton did not say its pid")}
	}
	if err := syscall.Kill(resp.Status.BatonPID, syscall.SIGUSR2); err != nil {
		return usageError{fmt.Errorf("upgrade: signal baton (pid %d): %w", resp.Status.BatonPID, err)}
	}
	fmt.Fprintf(stdout, "self-upgrade of baton (pid %d) started; its log tells the outcome\n", resp.Status.BatonPID)
	return nil
}

func rollbackCmd(args []string, stdout, stderr io.Writer) error {
	return startCmd(control.CommandRollback, args, stdout, stderr)
}

// errDecided is wrapped by the error of an upgrade or rollback that was
// decided and not promoted: exit 1.
var errDecided = errors.New("failed")

// startCmd runs upgrade or rollback; with --wait it prints one line per
// event and fails (exit 1) unless the new generation was promoted.
func startCmd(name string, args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags(name, args, stderr)
	if err != nil {
		return err
	}
	req := control.Request{Command: name, Wait: f.wait}
	timeout := clientTimeout
	if f.wait {
		timeout = control.DefaultWaitTimeout + waitSlack
		if f.timeout > 0 {
			req.Timeout = f.timeout.String()
			timeout = f.timeout + waitSlack
		}
	}
	var result *control.ResultJSON
	p := &progress{socket: f.socket}
	if err := ask(name, f.socket, req, timeout, func(r control.Response) {
		switch {
		case r.Type == control.TypeEvent && r.Event != nil:
			fmt.Fprintln(stdout, p.line(r.Event))
		case r.Type == control.TypeResult:
			result = r.Result
		}
	}); err != nil {
		return err
	}
	switch {
	case result == nil:
		return usageError{fmt.Errorf("%s: baton answered without a result", name)}
	case !f.wait && result.OK:
		fmt.Fprintf(stdout, "%s started\n", name)
		return nil
	case result.OK:
		fmt.Fprintf(stdout, "%s complete: generation %d serving\n", name, result.Generation)
		if result.Reason != "" {
			fmt.Fprintf(stdout, "note: %s\n", result.Reason)
		}
		return nil
	default:
		return fmt.Errorf("%s %w: %s", name, errDecided, result.Reason)
	}
}

// lookupTimeout bounds the status asked for while following an upgrade,
// to describe an event; without an answer the line says less.
const lookupTimeout = 2 * time.Second

// progress turns the events of a wait into lines. Events say what happened
// but not all of the context a reader wants (the canary's step number,
// whether the service runs several instances): that comes from a status,
// asked for on a second connection when an event needs it.
type progress struct {
	socket string
	// several: instance numbers are worth showing; nil until known.
	several *bool
}

// line is the progress line of ev.
func (p *progress) line(ev *control.EventJSON) string {
	var gen *control.GenerationJSON
	switch {
	case ev.Kind == supervisor.EventStep:
		// Asked for each step: the step number is the status's as long as
		// its weight is the event's (the canary did not move on since).
		if st := p.status(); st != nil {
			for i := range st.Generations {
				if st.Generations[i].ID == ev.Generation {
					gen = &st.Generations[i]
				}
			}
		}
	case hasInstance(ev.Kind) && p.several == nil:
		several := ev.Instance > 0
		if st := p.status(); st != nil && !several {
			for _, g := range st.Generations {
				several = several || len(g.Instances) > 1
			}
		}
		p.several = &several
	case hasInstance(ev.Kind) && ev.Instance > 0:
		*p.several = true
	}
	return eventLine(ev, gen, p.several != nil && *p.several)
}

// status asks for a status for lookupTimeout; nil if none came.
func (p *progress) status() *control.StatusJSON {
	var st *control.StatusJSON
	if err := ask("status", p.socket, control.Request{Command: control.CommandStatus}, lookupTimeout,
		func(r control.Response) { st = r.Status }); err != nil {
		return nil // the line goes without what the status would have added
	}
	return st
}

// hasInstance: events of this kind are about one instance.
func hasInstance(kind string) bool {
	switch kind {
	case supervisor.EventSpawned, supervisor.EventReady, supervisor.EventStopping, supervisor.EventCrashed, supervisor.EventGaveUp:
		return true
	}
	return false
}

// eventLine is the progress line of one event, e.g. "generation 3: ready
// after 12ms". gen is the event's generation as a status just showed it,
// or nil; several puts instance numbers into the lines of instances.
func eventLine(ev *control.EventJSON, gen *control.GenerationJSON, several bool) string {
	who := fmt.Sprintf("generation %d", ev.Generation)
	if several && hasInstance(ev.Kind) {
		who += fmt.Sprintf(", instance %d", ev.Instance)
	}
	what := ev.Kind
	switch ev.Kind {
	case supervisor.EventStep:
		return stepLine(ev, gen)
	case supervisor.EventSpawned:
		what = fmt.Sprintf("spawned (pid %d)", ev.PID)
	case supervisor.EventReady:
		what = "ready after " + formatMS(ev.DurationMS)
	case supervisor.EventPromoted:
		what = "promoted"
		if ev.Rollback {
			what += " (rollback)"
		}
		if ev.Replaces != 0 {
			what += fmt.Sprintf(", replacing generation %d", ev.Replaces)
		}
	case supervisor.EventFailed:
		what = "failed: " + ev.Reason
	case supervisor.EventGaveUp:
		what = "gave up restarting"
		if ev.Reason != "" {
			what += " (" + ev.Reason + ")"
		}
	default: // draining, stopping, retired, crashed, and kinds newer than this client
		if ev.Reason != "" {
			what += " (" + ev.Reason + ")"
		}
	}
	return who + ": " + what
}

// stepLine is the line of a step event: "generation 3 at 10% (step 1/2,
// pause 30s)". The step number and the strategy come from gen; without
// them (no status, or the canary moved on already) the line has the
// weight and pause only.
func stepLine(ev *control.EventJSON, gen *control.GenerationJSON) string {
	line := fmt.Sprintf("generation %d at %d%%", ev.Generation, ev.Weight)
	pause := ""
	if ev.DurationMS > 0 {
		pause = "pause " + formatMS(ev.DurationMS)
	}
	switch {
	case gen != nil && gen.Strategy == supervisor.StrategyRolling:
		return line + " (rolling)"
	case gen != nil && gen.Strategy == supervisor.StrategyCanary && gen.Weight == ev.Weight &&
		gen.Step >= 1 && gen.Step <= gen.Steps:
		step := fmt.Sprintf("step %d/%d, ", gen.Step, gen.Steps)
		if pause == "" {
			return line + " (" + step + "holding until `baton promote`)"
		}
		return line + " (" + step + pause + ")"
	case gen != nil && gen.Strategy == supervisor.StrategyCanary && pause == "":
		return line + " (holding until `baton promote`)"
	case pause != "":
		return line + " (" + pause + ")"
	default:
		return line
	}
}

func stopCmd(args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags("stop", args, stderr)
	if err != nil {
		return err
	}
	var result *control.ResultJSON
	if err := ask("stop", f.socket, control.Request{Command: control.CommandStop}, clientTimeout,
		func(r control.Response) { result = r.Result }); err != nil {
		return err
	}
	if result == nil || !result.OK {
		return usageError{errors.New("stop: baton did not accept the request")}
	}
	fmt.Fprintln(stdout, "baton is stopping: draining every generation")
	return nil
}

func promoteCmd(args []string, stdout, stderr io.Writer) error {
	return gradualCmd(control.CommandPromote, args, stdout, stderr)
}

func abortCmd(args []string, stdout, stderr io.Writer) error {
	return gradualCmd(control.CommandAbort, args, stdout, stderr)
}

// gradualCmd runs promote or abort: done (exit 0), nothing to act on (exit
// 1, with the supervisor's reason), or no answer (exit 2). The upgrade's
// own outcome is for `baton upgrade --wait` and `baton status` to tell.
func gradualCmd(name string, args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags(name, args, stderr)
	if err != nil {
		return err
	}
	var result *control.ResultJSON
	if err := ask(name, f.socket, control.Request{Command: name, All: f.all}, clientTimeout,
		func(r control.Response) { result = r.Result }); err != nil {
		return err
	}
	switch {
	case result == nil:
		return usageError{fmt.Errorf("%s: baton answered without a result", name)}
	case !result.OK:
		return fmt.Errorf("%s %w: %s", name, errDecided, result.Reason)
	case name == control.CommandAbort:
		fmt.Fprintln(stdout, "upgrade aborted: the serving generation gets every new connection back, the candidate drains")
	case f.all:
		fmt.Fprintln(stdout, "the canary moves on to 100% once all its instances are ready")
	default:
		fmt.Fprintln(stdout, "the canary moves on to its next step (`baton status` shows it)")
	}
	return nil
}
