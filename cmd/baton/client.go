//go:build linux

package main

// The client subcommands: each sends one request to a running `baton run`
// over its control socket (package control) and prints the answer.
//
// Exit status, through the returned error: nil is 0; a usageError is 2, for
// usage errors and for every failure to get an answer (no socket, refused,
// an answer that is not the protocol's), so that a deploy script can tell
// "could not ask" from "the upgrade failed"; any other error is 1: the
// upgrade or rollback was decided and it failed or was reverted during its
// probation, an upgrade was refused in the failed state, promote or abort
// had nothing to act on, or a flag change was refused.
//
// status.go prints `baton status`, progress.go the lines of a wait,
// flagcmd.go runs `baton flag`.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"syscall"
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
	force   bool
	// args are the arguments that are not flags, in order: `baton flag
	// set NAME VALUE` has two.
	args []string
}

// parseClientFlags parses -c/--config or --socket (exactly one) and the
// flags the subcommand takes, and finds the socket. nargs is how many
// other arguments the subcommand takes; flags may come before, between and
// after them (`baton flag set search_v2 10 -c web.toml`), and everything
// after "--" is an argument.
func parseClientFlags(name string, args []string, stderr io.Writer, nargs ...string) (clientFlags, error) {
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
	case "flag list":
		fs.BoolVar(&f.json, "json", false, "print the flags as JSON (stable; see control/PROTOCOL.md)")
	case "upgrade", "rollback":
		fs.BoolVar(&f.wait, "wait", false, "follow the "+name+" until it is decided (with probation: until it ends); exit 0 if promoted, 1 if not")
		fs.DurationVar(&f.timeout, "timeout", 0, "with --wait: give up waiting after `D` (default "+control.DefaultWaitTimeout.String()+")")
		if name == "upgrade" {
			fs.BoolVar(&f.force, "force", false, "upgrade even in the failed state (after repeated reverts), which ends it")
		}
	case "promote":
		fs.BoolVar(&f.all, "all", false, "skip the remaining canary steps: straight to 100%")
	}
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return f, usageError{err}
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if len(rest) > len(left) && rest[len(rest)-len(left)-1] == "--" {
			f.args = append(f.args, left...) // fs.Parse stopped at "--"
			break
		}
		f.args, rest = append(f.args, left[0]), left[1:]
	}
	switch {
	case len(f.args) > len(nargs):
		return f, usageError{fmt.Errorf("%s: unexpected argument %q", name, f.args[len(nargs)])}
	case len(f.args) < len(nargs):
		return f, usageError{fmt.Errorf("%s: %s is required", name, nargs[len(f.args)])}
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
	switch {
	case f.wait:
		return usageError{errors.New("upgrade: --self cannot --wait; follow the self-upgrade in baton's log")}
	case f.force:
		return usageError{errors.New("upgrade: --self cannot --force: a self-upgrade replaces baton, not the service, and is never refused")}
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
// event and fails (exit 1) unless the new generation was promoted and, with
// probation, passed it. An upgrade refused in the failed state fails too,
// with or without --wait.
func startCmd(name string, args []string, stdout, stderr io.Writer) error {
	f, err := parseClientFlags(name, args, stderr)
	if err != nil {
		return err
	}
	req := control.Request{Command: name, Wait: f.wait, Force: f.force}
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
			fmt.Fprintln(stdout, p.line(r.Event, r.Raw))
		case r.Type == control.TypeResult:
			result = r.Result
		}
	}); err != nil {
		return err
	}
	switch {
	case result == nil:
		return usageError{fmt.Errorf("%s: baton answered without a result", name)}
	case !f.wait && result.OK && f.force:
		fmt.Fprintf(stdout, "%s started (forced: the failed state, if any, is over)\n", name)
		return nil
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
		fmt.Fprintln(stdout, "upgrade aborted: the previous generation gets every new connection back (during a probation, by a revert), the new one drains")
	case f.all:
		fmt.Fprintln(stdout, "the canary moves on to 100% once all its instances are ready")
	default:
		fmt.Fprintln(stdout, "the canary moves on to its next step (`baton status` shows it)")
	}
	return nil
}
