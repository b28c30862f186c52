//go:build linux

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// readAll reads response lines until the server closes the connection.
func readAll(t *testing.T, c net.Conn) []Response {
	t.Helper()
	var got []Response
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var r Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("answer %q: %v", sc.Bytes(), err)
		}
		r.Raw = append(json.RawMessage(nil), sc.Bytes()...)
		got = append(got, r)
	}
	return got
}

// TestBadRequests: each bad request gets an error answer that says what
// was wrong, and the server goes on answering the next request.
func TestBadRequests(t *testing.T) {
	f := newFake()
	var reached atomic.Bool
	f.promote = func(context.Context, bool) error { reached.Store(true); return nil }
	f.abort = func(context.Context) error { reached.Store(true); return nil }
	f.setFlag = func(context.Context, string, int, bool) error { reached.Store(true); return nil }
	o := options(t)
	o.RequestTimeout = 300 * time.Millisecond
	s := startServer(t, f, o)
	big := `{"version":1,"command":"status","x":"` + strings.Repeat("a", MaxRequestBytes) + `"}` + "\n"
	for _, tc := range []struct {
		name, send string
		halfClose  bool // shut down the writing half after sending
		want       string
	}{
		{"garbage", "GET / HTTP/1.0\r\n\r\n", false, `request is not a JSON object: "GET / HTTP/1.0\r"`},
		{"binary", "\x00\xff\xfe\n", false, "request is not a JSON object"},
		{"oversized", big, false, "request is longer than 65536 bytes without a newline"},
		{"half-written", `{"version":1,"comm`, false, "incomplete request: no newline within 300ms"},
		{"half-written then EOF", `{"version":1,"comm`, true, "incomplete request: the connection ended after 18 bytes without a newline"},
		{"nothing then EOF", ``, true, "no request: the connection ended before any data"},
		{"unknown field", `{"version":1,"command":"status","verbose":true}` + "\n", false, `unknown field "verbose" (want version, command, wait, timeout, all, force, name, percent or reset)`},
		{"field of another case", `{"version":1,"Command":"status"}` + "\n", false, `unknown field "Command"`},
		{"unknown command", `{"version":1,"command":"upgrde"}` + "\n", false, `unknown command "upgrde" (want status, upgrade, rollback, promote, abort, stop, flags or flag)`},
		{"wrong version", `{"version":2,"command":"status"}` + "\n", false, "unsupported protocol version 2 (this baton speaks version 1)"},
		{"trailing garbage", `{"version":1,"command":"status"} x` + "\n", false, `unexpected data after the request object: "x"`},
		{"two requests on a line", `{"version":1,"command":"status"}{"version":1,"command":"stop"}` + "\n", false, "unexpected data after the request object"},
		{"wait on status", `{"version":1,"command":"status","wait":true}` + "\n", false, `"wait" applies to upgrade and rollback, not to status`},
		{"all on abort", `{"version":1,"command":"abort","all":true}` + "\n", false, `"all" applies to promote, not to abort`},
		{"force on rollback", `{"version":1,"command":"rollback","force":true}` + "\n", false, `"force" applies to upgrade, not to rollback`},
		{"wait on promote", `{"version":1,"command":"promote","wait":true}` + "\n", false, `"wait" applies to upgrade and rollback, not to promote`},
		{"bad timeout", `{"version":1,"command":"upgrade","wait":true,"timeout":"soon"}` + "\n", false, `invalid timeout "soon"`},
		{"flag out of range", `{"version":1,"command":"flag","name":"search_v2","percent":150}` + "\n", false, "percent 150 is out of range"},
		{"flag without a value", `{"version":1,"command":"flag","name":"search_v2"}` + "\n", false, `flag needs "percent"`},
		{"flag with both", `{"version":1,"command":"flag","name":"search_v2","percent":1,"reset":true}` + "\n", false, "not both"},
		{"flag without a name", `{"version":1,"command":"flag","reset":true}` + "\n", false, `flag needs "name"`},
		{"percent on status", `{"version":1,"command":"status","percent":5}` + "\n", false, `"percent" applies to flag, not to status`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.Path(), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			// Written concurrently: the server stops reading an oversized
			// request, and the rest of it would fill the socket buffer.
			go func() {
				c.Write([]byte(tc.send))
				if tc.halfClose {
					c.CloseWrite()
				}
			}()
			// The slow client does not hold up anyone else: a status
			// request is served while this one is pending.
			if got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus}); len(got) != 1 || got[0].Type != TypeStatus {
				t.Errorf("status while a bad request is pending: %s", kinds(got))
			}
			got := readAll(t, c)
			if len(got) != 1 || got[0].Type != TypeError || !strings.Contains(got[0].Error, tc.want) {
				t.Fatalf("got %+v, want one error containing %q", got, tc.want)
			}
			if got := exchange(t, s.Path(), Request{Version: 1, Command: CommandStatus}); len(got) != 1 || got[0].Type != TypeStatus {
				t.Errorf("status after a bad request: %s", kinds(got))
			}
		})
	}
	if len(f.stopped) > 0 || reached.Load() {
		t.Error("a bad request reached the backend")
	}
}
