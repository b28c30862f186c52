//go:build linux

package main

// The client subcommands: each sends one request to a running `baton run`
// over its control socket (package control) and prints the answer.
//
// Exit status, through the returned error: nil is 0; a usageError is 2, for
// usage errors and for every failure to get an answer (no socket, refused,
// an answer that is not the protocol's), so that a deploy script can tell
// "could not ask" from "the upgrade failed"; any other error is 1: the
// upgrade or rollback was decided and it failed.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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

// printStatus writes the status as a compact table.
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
		fmt.Fprintf(w, "upgrade in progress: generation %d\n", st.Upgrade.Candidate)
	case st.Serving == 0:
		fmt.Fprintln(w, "no generation serving")
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPID\tREADY\tUPTIME\tRESTARTS\tEXECUTABLE\tSHA256")
	for _, g := range st.Generations {
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
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", g.ID, state, pids, ready, uptime, g.Restarts,
			orDash(g.Executable), orDash(g.SHA256[:min(12, len(g.SHA256))]))
	}
	_ = tw.Flush() // see above
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
	if err := ask(name, f.socket, req, timeout, func(r control.Response) {
		switch {
		case r.Type == control.TypeEvent && r.Event != nil:
			fmt.Fprintln(stdout, eventLine(r.Event))
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

// eventLine is the progress line of one event, e.g. "generation 3: ready
// after 12ms".
func eventLine(ev *control.EventJSON) string {
	what := ev.Kind
	switch ev.Kind {
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
	return fmt.Sprintf("generation %d: %s", ev.Generation, what)
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
