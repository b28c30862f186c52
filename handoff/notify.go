package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// MaxNotifyMessage is the largest notify datagram accepted, as systemd's
// own limit for sd_notify messages.
const MaxNotifyMessage = 4096

// ErrNotifyMessage is wrapped by every error about a malformed message.
var ErrNotifyMessage = errors.New("malformed notify message")

// ParseNotify parses one sd_notify datagram: newline-separated KEY=VALUE
// assignments. Empty lines are skipped. A line without '=', an empty or
// invalid key, or a NUL byte makes the whole message invalid, so that a
// half-understood message never changes anything. When a key repeats, the
// last value wins, as in systemd.
func ParseNotify(msg []byte) (map[string]string, error) {
	if len(msg) > MaxNotifyMessage {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrNotifyMessage, len(msg), MaxNotifyMessage)
	}
	if bytes.IndexByte(msg, 0) >= 0 {
		return nil, fmt.Errorf("%w: contains a NUL byte", ErrNotifyMessage)
	}
	fields := make(map[string]string)
	for i, line := range strings.Split(string(msg), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d %.40q has no '='", ErrNotifyMessage, i+1, line)
		}
		if !validNotifyKey(k) {
			return nil, fmt.Errorf("%w: line %d: invalid key %.40q", ErrNotifyMessage, i+1, k)
		}
		fields[k] = v
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrNotifyMessage)
	}
	return fields, nil
}

// validNotifyKey accepts what systemd's env-var rules accept: letters,
// digits and '_', not starting with a digit.
func validNotifyKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
