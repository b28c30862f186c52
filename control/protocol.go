package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

const (
	// ProtocolVersion is the version this package speaks. Within a version,
	// fields may be added to requests and responses, never removed or changed.
	ProtocolVersion = 1
	// MaxRequestBytes bounds a request line, its newline included. A real
	// request is well under 200 bytes.
	MaxRequestBytes = 64 << 10
	// RequestTimeout is how long a client has to send its whole request
	// after connecting, and how long the server waits on one write of its
	// answer.
	RequestTimeout = 5 * time.Second
	// DefaultWaitTimeout bounds a wait when the request gives no timeout.
	DefaultWaitTimeout = 10 * time.Minute
	// MaxWaitTimeout is the longest timeout a request may ask for.
	MaxWaitTimeout = 24 * time.Hour
	// MaxFlagName bounds a feature flag's name, as [flags] in the config
	// does.
	MaxFlagName = 64
)

// Commands.
const (
	CommandStatus   = "status"   // answer a "status" response
	CommandUpgrade  = "upgrade"  // start an upgrade, as SIGHUP does ("force": even in the failed state)
	CommandRollback = "rollback" // start the previous generation's config again
	CommandPromote  = "promote"  // move the canary in progress to its next step now ("all": to 100%)
	CommandAbort    = "abort"    // undo the upgrade in progress, at whatever step it is
	CommandStop     = "stop"     // drain and exit, as SIGTERM does
	CommandFlags    = "flags"    // list the feature flags: a "flags" response
	CommandFlag     = "flag"     // set a feature flag ("name", "percent") or return it to its default ("name", "reset")
)

// Response types.
const (
	TypeStatus = "status" // Status is set; the last line
	TypeEvent  = "event"  // Event is set; more lines follow
	TypeResult = "result" // Result is set; the last line
	TypeError  = "error"  // Error is set; the last line
	TypeFlags  = "flags"  // Flags is set; the last line
)

// Request is the one line a client sends.
type Request struct {
	// Version must be ProtocolVersion.
	Version int `json:"version"`
	// Command is CommandStatus, CommandUpgrade, CommandRollback,
	// CommandPromote, CommandAbort, CommandStop, CommandFlags or
	// CommandFlag.
	Command string `json:"command"`
	// Wait (upgrade and rollback only) streams the upgrade's events and
	// answers its outcome; without it the answer only says it was started.
	Wait bool `json:"wait,omitempty"`
	// Timeout (with Wait only) is a Go duration bounding the wait, at most
	// MaxWaitTimeout; "" means DefaultWaitTimeout.
	Timeout string `json:"timeout,omitempty"`
	// All (promote only) skips the remaining canary steps: the candidate
	// goes straight to 100%.
	All bool `json:"all,omitempty"`
	// Force (upgrade only) upgrades even in the failed state, which it
	// ends; without it an upgrade in the failed state is refused.
	Force bool `json:"force,omitempty"`
	// Name (flag only) is the feature flag to change, as [flags] declares
	// it: 1 to MaxFlagName letters, digits, '_', '-' or '.'.
	Name string `json:"name,omitempty"`
	// Percent (flag only) is the flag's new value: 0 (off), 100 (on), or
	// the percent of keys it is on for. A pointer, so that 0 is sent.
	// Exactly one of Percent and Reset is given.
	Percent *int `json:"percent,omitempty"`
	// Reset (flag only) returns the flag to its config's default.
	Reset bool `json:"reset,omitempty"`
}

// WaitTimeout is the request's Timeout, or DefaultWaitTimeout. Call it on a
// request DecodeRequest accepted.
func (r Request) WaitTimeout() time.Duration {
	if d, err := time.ParseDuration(r.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultWaitTimeout
}

// Response is one line of the server's answer.
type Response struct {
	// Version is ProtocolVersion.
	Version int `json:"version"`
	// Type says which of the fields below is set: TypeStatus, TypeEvent,
	// TypeResult or TypeError.
	Type string `json:"type"`
	// Error says what went wrong with the request or while serving it.
	Error string `json:"error,omitempty"`
	// Status is the supervisor's state, for the status command.
	Status *StatusJSON `json:"status,omitempty"`
	// Event is one step of a generation's life, while a wait goes on.
	Event *EventJSON `json:"event,omitempty"`
	// Result is the outcome of upgrade, rollback, promote, abort, stop and
	// flag.
	Result *ResultJSON `json:"result,omitempty"`
	// Flags are the feature flags, for the flags command.
	Flags *FlagsJSON `json:"flags,omitempty"`

	// Raw is the line as received, set by Do, so that a client can pass on
	// fields newer than itself.
	Raw json.RawMessage `json:"-"`
}

// ResultJSON is the outcome of upgrade, rollback, promote, abort, stop and
// flag.
type ResultJSON struct {
	// OK is true when the command did what it was asked: stop and upgrade or
	// rollback without wait were started; with wait, the new generation
	// was promoted; promote moved the canary on, abort began undoing the
	// upgrade; flag changed the flag.
	OK bool `json:"ok"`
	// Generation is the promoted generation's id after a wait; 0 when the
	// command was only started, and when OK is false.
	Generation int `json:"generation"`
	// Reason says why OK is false (e.g. "generation 3: not ready within
	// 30s", or for promote and abort "no upgrade in progress: nothing to
	// promote or abort"); with OK true it may carry a note, e.g. that the
	// wait for the replaced generation to retire timed out.
	Reason string `json:"reason,omitempty"`
	// Flag (flag, when OK) is the flag as it is after the change; absent
	// when it could not be read back, and for the other commands.
	Flag *FlagJSON `json:"flag,omitempty"`
}

// DecodeRequest reads one request line (at most MaxRequestBytes, up to and
// including the first newline) from r and checks it. It may read past the
// newline. The error says what was wrong; it wraps r's error when reading
// failed (e.g. os.ErrDeadlineExceeded).
func DecodeRequest(r io.Reader) (Request, error) {
	line, err := readLine(r)
	if err != nil {
		return Request{}, err
	}
	req, err := parseRequest(line)
	if err != nil {
		return Request{}, err
	}
	return req, req.check()
}

// ErrRequestTooLarge is wrapped by DecodeRequest's error for a line longer
// than MaxRequestBytes.
var ErrRequestTooLarge = fmt.Errorf("request is longer than %d bytes", MaxRequestBytes)

func readLine(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxRequestBytes), 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) == MaxRequestBytes:
			return nil, fmt.Errorf("%w without a newline", ErrRequestTooLarge)
		case errors.Is(err, io.EOF) && len(line) == 0:
			return nil, errors.New("no request: the connection ended before any data")
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("incomplete request: the connection ended after %d bytes without a newline", len(line))
		default:
			return nil, fmt.Errorf("read request: %w (after %d bytes)", err, len(line))
		}
	}
}

// parseRequest decodes the fields one by one, so that every error names the
// field, keys are matched exactly (encoding/json alone matches them without
// regard to case) and a key given twice is refused rather than resolved.
func parseRequest(line []byte) (Request, error) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return req, fmt.Errorf("request is not a JSON object: %s", quoteStart(line))
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, fmt.Errorf("request is not valid JSON: %w", err)
		}
		key, _ := tok.(string) // More says a key comes, and keys are strings
		if seen[key] {
			return req, fmt.Errorf("field %q given twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return req, fmt.Errorf("request is not valid JSON: field %q: %w", key, err)
		}
		var dst any
		var want string
		switch key {
		case "version":
			dst, want = &req.Version, "an integer"
		case "command":
			dst, want = &req.Command, "a string"
		case "wait":
			dst, want = &req.Wait, "true or false"
		case "timeout":
			dst, want = &req.Timeout, "a string (a Go duration such as \"90s\")"
		case "all":
			dst, want = &req.All, "true or false"
		case "force":
			dst, want = &req.Force, "true or false"
		case "name":
			dst, want = &req.Name, "a string (a flag's name)"
		case "percent":
			dst, want = &req.Percent, "a whole number from 0 to 100"
		case "reset":
			dst, want = &req.Reset, "true or false"
		default:
			return req, fmt.Errorf("unknown field %q (want version, command, wait, timeout, all, force, name, percent or reset)", key)
		}
		if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, dst) != nil {
			return req, fmt.Errorf("field %q must be %s, not %s", key, want, raw)
		}
	}
	if _, err := dec.Token(); errors.Is(err, io.EOF) { // the closing brace
		return req, errors.New("request is not valid JSON: the line ends inside the object")
	} else if err != nil {
		return req, fmt.Errorf("request is not valid JSON: %w", err)
	}
	if rest := bytes.TrimSpace(line[dec.InputOffset():]); len(rest) > 0 {
		return req, fmt.Errorf("unexpected data after the request object: %s", quoteStart(rest))
	}
	if !seen["version"] {
		return req, fmt.Errorf("missing field \"version\" (want %d)", ProtocolVersion)
	}
	if !seen["command"] {
		return req, errors.New(`missing field "command"`)
	}
	if seen["timeout"] && req.Timeout == "" {
		return req, errors.New(`field "timeout" is empty: leave it out for the default`)
	}
	if seen["name"] && req.Name == "" {
		return req, errors.New(`field "name" is empty: give the flag's name`)
	}
	return req, nil
}

// check validates the values of a decoded request.
func (r Request) check() error {
	if r.Version != ProtocolVersion {
		return fmt.Errorf("unsupported protocol version %d (this baton speaks version %d)", r.Version, ProtocolVersion)
	}
	switch r.Command {
	case CommandStatus, CommandStop, CommandPromote, CommandAbort, CommandFlags, CommandFlag:
		if r.Wait {
			return fmt.Errorf(`"wait" applies to upgrade and rollback, not to %s`, r.Command)
		}
		if r.Timeout != "" {
			return fmt.Errorf(`"timeout" applies to upgrade and rollback, not to %s`, r.Command)
		}
	case CommandUpgrade, CommandRollback:
		if r.Timeout == "" {
			break
		}
		if !r.Wait {
			return errors.New(`"timeout" needs "wait": true`)
		}
		d, err := time.ParseDuration(r.Timeout)
		if err != nil {
			return fmt.Errorf("invalid timeout %q: want a Go duration such as \"90s\" or \"5m\"", r.Timeout)
		}
		if d <= 0 || d > MaxWaitTimeout {
			return fmt.Errorf("timeout %s is out of range (want more than 0, at most %s)", d, MaxWaitTimeout)
		}
	default:
		return fmt.Errorf("unknown command %q (want status, upgrade, rollback, promote, abort, stop, flags or flag)", r.Command)
	}
	if r.All && r.Command != CommandPromote {
		return fmt.Errorf(`"all" applies to promote, not to %s`, r.Command)
	}
	if r.Force && r.Command != CommandUpgrade {
		return fmt.Errorf(`"force" applies to upgrade, not to %s`, r.Command)
	}
	if r.Command == CommandFlag {
		return r.checkFlag()
	}
	for _, f := range []struct {
		field string
		given bool
	}{{"name", r.Name != ""}, {"percent", r.Percent != nil}, {"reset", r.Reset}} {
		if f.given {
			return fmt.Errorf("%q applies to flag, not to %s", f.field, r.Command)
		}
	}
	return nil
}

// checkFlag validates a flag request: a name [flags] could declare, and
// either a percent or a reset.
func (r Request) checkFlag() error {
	switch {
	case r.Name == "":
		return errors.New(`flag needs "name": the flag to change`)
	case len(r.Name) > MaxFlagName:
		return fmt.Errorf("flag name %s is %d bytes long; a flag's name is at most %d", quoteStart([]byte(r.Name)), len(r.Name), MaxFlagName)
	case strings.Trim(r.Name, flagNameChars) != "":
		return fmt.Errorf("invalid flag name %q: a flag's name is letters, digits, '_', '-' or '.'", r.Name)
	case r.Percent != nil && r.Reset:
		return errors.New(`flag takes "percent" or "reset": true, not both`)
	case r.Percent == nil && !r.Reset:
		return errors.New(`flag needs "percent" (0 off, 100 on, or the percent of keys) or "reset": true`)
	case r.Percent != nil && (*r.Percent < 0 || *r.Percent > 100):
		return fmt.Errorf("percent %d is out of range (want 0 (off) to 100 (on))", *r.Percent)
	}
	return nil
}

// flagNameChars are the characters of a flag's name, as [flags] allows.
const flagNameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."

// quoteStart quotes the start of b for an error message.
func quoteStart(b []byte) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) > 40 {
		return fmt.Sprintf("%q...", b[:40])
	}
	return fmt.Sprintf("%q", b)
}
