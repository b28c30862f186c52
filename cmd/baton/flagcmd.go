//go:build linux

package main

// `baton flag list|set|reset`: the feature flags a running baton serves to
// its service through the flags file. A change is one request, decided at
// once: exit 0 when made, 1 when refused (a flag the config does not
// declare: the message lists those it does; a flags file that cannot be
// written), 2 on usage or connection errors.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-sh/baton/control"
)

const flagUsage = "flag: want `flag list [--json]`, `flag set NAME on|off|PERCENT` or `flag reset NAME`"

func flagCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New(flagUsage)}
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list":
		return flagListCmd(rest, stdout, stderr)
	case "set":
		return flagSetCmd(rest, stdout, stderr)
	case "reset":
		return flagResetCmd(rest, stdout, stderr)
	default:
		return usageError{fmt.Errorf("%s; not %q", flagUsage, sub)}
	}
}

func flagListCmd(args []string, stdout, stderr io.Writer) error {
	const name = "flag list"
	f, err := parseClientFlags(name, args, stderr)
	if err != nil {
		return err
	}
	var resp control.Response
	if err := ask(name, f.socket, control.Request{Command: control.CommandFlags}, clientTimeout,
		func(r control.Response) { resp = r }); err != nil {
		return err
	}
	if resp.Type != control.TypeFlags || resp.Flags == nil {
		return usageError{fmt.Errorf("%s: baton answered a %q instead of the flags", name, resp.Type)}
	}
	if f.json {
		// As received, so that fields newer than this client are kept.
		var line struct {
			Flags json.RawMessage `json:"flags"`
		}
		var out bytes.Buffer
		if err := json.Unmarshal(resp.Raw, &line); err != nil {
			return usageError{fmt.Errorf("%s: %w", name, err)}
		}
		if err := json.Indent(&out, line.Flags, "", "  "); err != nil {
			return usageError{fmt.Errorf("%s: %w", name, err)}
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	printFlags(stdout, resp.Flags, time.Now())
	return nil
}

// printFlags writes the flags file and its version, then one row per flag.
func printFlags(w io.Writer, fl *control.FlagsJSON, now time.Time) {
	if len(fl.Flags) == 0 {
		fmt.Fprintln(w, "no feature flags: the config declares none ([flags])")
		return
	}
	fmt.Fprintf(w, "flags file %s, version %d\n\n", fl.File, fl.Version)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE\tDEFAULT\tSET-BY\tCHANGED\tDESCRIPTION")
	for _, f := range fl.Flags {
		changed := "-"
		if t, err := time.Parse(time.RFC3339Nano, f.Changed); err == nil {
			changed = clock(t, now)
		}
		desc := f.Description
		if f.OffOn == "analysis" {
			desc = strings.TrimSpace(desc + " (turned off if the analysis fails while it is on)")
		}
		by := orDash(f.By)
		if f.By == "operator" && !f.Set {
			by += " (reset)" // it follows the config again
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, flagValue(f.Percent), flagValue(f.Default), by,
			changed, orDash(desc))
	}
	_ = tw.Flush() // the writes before report their own errors: none to act on
}

func flagSetCmd(args []string, stdout, stderr io.Writer) error {
	const name = "flag set"
	f, err := parseClientFlags(name, args, stderr, "NAME", "a value (on, off or a percent)")
	if err != nil {
		return err
	}
	percent, err := parseFlagValue(f.args[1])
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", name, err)}
	}
	return changeFlag(name, f, control.Request{Command: control.CommandFlag, Name: f.args[0], Percent: &percent}, stdout)
}

func flagResetCmd(args []string, stdout, stderr io.Writer) error {
	const name = "flag reset"
	f, err := parseClientFlags(name, args, stderr, "NAME")
	if err != nil {
		return err
	}
	return changeFlag(name, f, control.Request{Command: control.CommandFlag, Name: f.args[0], Reset: true}, stdout)
}

// changeFlag sends a flag request and says what the flag is now.
func changeFlag(name string, f clientFlags, req control.Request, stdout io.Writer) error {
	var result *control.ResultJSON
	if err := ask(name, f.socket, req, clientTimeout, func(r control.Response) { result = r.Result }); err != nil {
		return err
	}
	switch {
	case result == nil:
		return usageError{fmt.Errorf("%s: baton answered without a result", name)}
	case !result.OK:
		return fmt.Errorf("%s %w: %s", name, errDecided, result.Reason)
	case result.Flag != nil && req.Reset:
		fmt.Fprintf(stdout, "flag %s is back to its default: %s\n", req.Name, flagValue(result.Flag.Percent))
	case result.Flag != nil:
		fmt.Fprintf(stdout, "flag %s is now %s (default %s)\n", req.Name, flagValue(result.Flag.Percent), flagValue(result.Flag.Default))
	case req.Reset:
		fmt.Fprintf(stdout, "flag %s is back to its default\n", req.Name)
	default:
		fmt.Fprintf(stdout, "flag %s is now %s\n", req.Name, flagValue(*req.Percent))
	}
	return nil
}

// parseFlagValue reads a flag's value as `baton flag set` takes it: on,
// off, or a whole percent from 0 to 100, with or without "%".
func parseFlagValue(v string) (int, error) {
	switch strings.ToLower(v) {
	case "on":
		return 100, nil
	case "off":
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(v, "%"))
	if err != nil || n < 0 || n > 100 {
		return 0, fmt.Errorf("value %q: want on, off, or a whole percent from 0 to 100 (10 or 10%%)", v)
	}
	return n, nil
}

// flagValue writes a flag's value: on, off, or its percent.
func flagValue(percent int) string {
	switch percent {
	case 0:
		return "off"
	case 100:
		return "on"
	}
	return strconv.Itoa(percent) + "%"
}
