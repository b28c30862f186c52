//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// A client of baton's control socket, speaking the protocol as
// control/PROTOCOL.md documents it (one JSON request line, JSON answer
// lines), so that the benchmark depends on the protocol, not on the Go
// package, and starts no client process per upgrade.

// ctlEvent is one `event` line of an answer, stamped when it arrived.
type ctlEvent struct {
	Kind       string    `json:"kind"`
	Generation int       `json:"generation"`
	Instance   int       `json:"instance"`
	PID        int       `json:"pid"`
	Time       time.Time `json:"time"` // baton's clock
	Reason     string    `json:"reason"`
	arrived    time.Time
}

// ctlResult is the `result` line.
type ctlResult struct {
	OK         bool   `json:"ok"`
	Generation int    `json:"generation"`
	Reason     string `json:"reason"`
}

// ctlLine is any answer line.
type ctlLine struct {
	Type   string          `json:"type"`
	Event  *ctlEvent       `json:"event"`
	Result *ctlResult      `json:"result"`
	Status json.RawMessage `json:"status"`
	Error  string          `json:"error"`
}

// ctlDo sends req and calls on for every answer line until the last one
// (status, result or error), which it returns.
func ctlDo(ctx context.Context, sock string, req map[string]any, on func(ctlLine, time.Time)) (ctlLine, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return ctlLine{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl) // a unix socket takes any deadline
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	req["version"] = 1
	line, err := json.Marshal(req)
	if err != nil {
		return ctlLine{}, err
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return ctlLine{}, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a status of 64 instances is long
	for sc.Scan() {
		at := time.Now()
		var l ctlLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return ctlLine{}, fmt.Errorf("control answer %q: %w", truncate(sc.Text(), 80), err)
		}
		if on != nil {
			on(l, at)
		}
		switch l.Type {
		case "status", "result":
			return l, nil
		case "error":
			return l, fmt.Errorf("control: %s", l.Error)
		}
	}
	if err := sc.Err(); err != nil {
		return ctlLine{}, err
	}
	return ctlLine{}, errors.New("control: connection closed before the answer")
}

// ctlStatus is baton's status.
type ctlStatus struct {
	Listeners []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		Mode    string `json:"mode"`
	} `json:"listeners"`
	Generations []struct {
		ID            int    `json:"id"`
		State         string `json:"state"`
		PIDs          []int  `json:"pids"`
		Ready         bool   `json:"ready"`
		TimeToReadyMS int    `json:"time_to_ready_ms"`
	} `json:"generations"`
	Serving int `json:"serving"`
}

func getStatus(ctx context.Context, sock string) (ctlStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := ctlDo(ctx, sock, map[string]any{"command": "status"}, nil)
	if err != nil {
		return ctlStatus{}, err
	}
	var st ctlStatus
	if err := json.Unmarshal(l.Status, &st); err != nil {
		return ctlStatus{}, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// ctlUpgrade runs one upgrade with "wait": it returns when the new
// generation is promoted and the one it replaced has retired, or the
// upgrade failed; events are every event line received meanwhile.
func ctlUpgrade(ctx context.Context, sock string, timeout time.Duration) (events []ctlEvent, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	l, err := ctlDo(ctx, sock, map[string]any{"command": "upgrade", "wait": true, "timeout": timeout.String()}, func(l ctlLine, at time.Time) {
		if l.Event != nil {
			e := *l.Event
			e.arrived = at
			events = append(events, e)
		}
	})
	if err != nil {
		return events, err
	}
	if l.Result == nil || !l.Result.OK || l.Result.Reason != "" {
		return events, fmt.Errorf("upgrade: %+v", l.Result)
	}
	return events, nil
}

// firstEvent returns the first event of that kind (and generation, if gen > 0).
func firstEvent(events []ctlEvent, kind string, gen int) (ctlEvent, bool) {
	for _, e := range events {
		if e.Kind == kind && (gen == 0 || e.Generation == gen) {
			return e, true
		}
	}
	return ctlEvent{}, false
}

// lastEvent returns the last event of that kind (and generation, if gen > 0).
func lastEvent(events []ctlEvent, kind string, gen int) (ctlEvent, bool) {
	for i := len(events) - 1; i >= 0; i-- {
		if e := events[i]; e.Kind == kind && (gen == 0 || e.Generation == gen) {
			return e, true
		}
	}
	return ctlEvent{}, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
