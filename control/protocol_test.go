package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeRequest(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		for in, want := range map[string]Request{
			`{"version":1,"command":"status"}` + "\n":                                          {Version: 1, Command: "status"},
			` { "command" : "stop" , "version" : 1 } ` + "\r\n":                                {Version: 1, Command: "stop"},
			`{"version":1,"command":"upgrade","wait":true,"timeout":"90s"}` + "\n":             {Version: 1, Command: "upgrade", Wait: true, Timeout: "90s"},
			`{"version":1,"command":"rollback","wait":false}` + "\n":                           {Version: 1, Command: "rollback"},
			`{"version":1,"command":"upgrade"}` + "\n" + `{"ignored":"next line"}`:             {Version: 1, Command: "upgrade"},
			`{"version":1,"command":"status","wait":false}` + "\n":                             {Version: 1, Command: "status"},
			`{"version":1,"command":"upgrade","wait":true,"timeout":"24h"}` + "\n":             {Version: 1, Command: "upgrade", Wait: true, Timeout: "24h"},
			`{"version":1,"command":"upgrade","wait":true}` + strings.Repeat(" ", 1000) + "\n": {Version: 1, Command: "upgrade", Wait: true},
			`{"version":1,"command":"promote"}` + "\n":                                         {Version: 1, Command: "promote"},
			`{"version":1,"command":"promote","all":true}` + "\n":                              {Version: 1, Command: "promote", All: true},
			`{"version":1,"command":"upgrade","force":true}` + "\n":                            {Version: 1, Command: "upgrade", Force: true},
			`{"version":1,"command":"upgrade","force":true,"wait":true}` + "\n":                {Version: 1, Command: "upgrade", Force: true, Wait: true},
			`{"version":1,"command":"rollback","force":false}` + "\n":                          {Version: 1, Command: "rollback"},
			`{"version":1,"command":"abort","all":false}` + "\n":                               {Version: 1, Command: "abort"},
			`{"version":1,"command":"abort"}` + "\n":                                           {Version: 1, Command: "abort"},
		} {
			got, err := DecodeRequest(strings.NewReader(in))
			if err != nil || got != want {
				t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
			}
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for in, want := range map[string]string{
			"":                                       "no request",
			"\n":                                     "request is not a JSON object",
			"null\n":                                 "request is not a JSON object",
			"[1]\n":                                  "request is not a JSON object",
			`{"version":1,"command":"status"}`:       "incomplete request",
			`{"version":1,"command":"status"` + "\n": "the line ends inside the object",
			`{"version":1 "command":"status"}` + "\n":                                        "not valid JSON",
			`{"version":"1","command":"status"}` + "\n":                                      `field "version" must be an integer, not "1"`,
			`{"version":1.5,"command":"status"}` + "\n":                                      `field "version" must be an integer, not 1.5`,
			`{"version":null,"command":"status"}` + "\n":                                     `field "version" must be an integer, not null`,
			`{"version":1,"command":3}` + "\n":                                               `field "command" must be a string, not 3`,
			`{"version":1,"command":"upgrade","wait":"yes"}` + "\n":                          `field "wait" must be true or false`,
			`{"command":"status"}` + "\n":                                                    `missing field "version" (want 1)`,
			`{"version":1}` + "\n":                                                           `missing field "command"`,
			`{"version":1,"command":"status","command":"stop"}` + "\n":                       `field "command" given twice`,
			`{"version":0,"command":"status"}` + "\n":                                        "unsupported protocol version 0",
			`{"version":1,"command":""}` + "\n":                                              `unknown command ""`,
			`{"version":1,"command":"STATUS"}` + "\n":                                        `unknown command "STATUS" (want status, upgrade, rollback, promote, abort or stop)`,
			`{"version":1,"command":"promote","all":"yes"}` + "\n":                           `field "all" must be true or false, not "yes"`,
			`{"version":1,"command":"abort","all":true}` + "\n":                              `"all" applies to promote, not to abort`,
			`{"version":1,"command":"upgrade","all":true}` + "\n":                            `"all" applies to promote, not to upgrade`,
			`{"version":1,"command":"status","all":true}` + "\n":                             `"all" applies to promote, not to status`,
			`{"version":1,"command":"upgrde","all":true}` + "\n":                             `unknown command "upgrde"`,
			`{"version":1,"command":"rollback","force":true}` + "\n":                         `"force" applies to upgrade, not to rollback`,
			`{"version":1,"command":"status","force":true}` + "\n":                           `"force" applies to upgrade, not to status`,
			`{"version":1,"command":"promote","force":true}` + "\n":                          `"force" applies to upgrade, not to promote`,
			`{"version":1,"command":"upgrade","force":"yes"}` + "\n":                         `field "force" must be true or false, not "yes"`,
			`{"version":1,"command":"upgrade","force":null}` + "\n":                          `field "force" must be true or false, not null`,
			`{"version":1,"command":"promote","wait":true}` + "\n":                           `"wait" applies to upgrade and rollback, not to promote`,
			`{"version":1,"command":"abort","wait":true,"timeout":"1s"}` + "\n":              `"wait" applies to upgrade and rollback, not to abort`,
			`{"version":1,"command":"promote","timeout":"1s"}` + "\n":                        `"timeout" applies to upgrade and rollback, not to promote`,
			`{"version":1,"command":"stop","wait":true}` + "\n":                              `"wait" applies to upgrade and rollback, not to stop`,
			`{"version":1,"command":"status","timeout":"1s"}` + "\n":                         `"timeout" applies to upgrade and rollback, not to status`,
			`{"version":1,"command":"upgrade","timeout":"1s"}` + "\n":                        `"timeout" needs "wait": true`,
			`{"version":1,"command":"upgrade","wait":true,"timeout":""}` + "\n":              `field "timeout" is empty`,
			`{"version":1,"command":"upgrade","wait":true,"timeout":"-1s"}` + "\n":           "timeout -1s is out of range",
			`{"version":1,"command":"upgrade","wait":true,"timeout":"25h"}` + "\n":           "timeout 25h0m0s is out of range",
			`{"version":1,"command":"upgrade","wait":true,"timeout":"10"}` + "\n":            `invalid timeout "10"`,
			strings.Repeat(" ", MaxRequestBytes) + `{"version":1,"command":"status"}` + "\n": "request is longer than 65536 bytes",
		} {
			_, err := DecodeRequest(strings.NewReader(in))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%.60q: got %v, want an error containing %q", in, err, want)
			}
		}
	})
	t.Run("exactly the limit", func(t *testing.T) {
		req := `{"version":1,"command":"status"}`
		in := req + strings.Repeat(" ", MaxRequestBytes-len(req)-1) + "\n"
		if _, err := DecodeRequest(strings.NewReader(in)); err != nil {
			t.Errorf("a request of exactly MaxRequestBytes: %v", err)
		}
		_, err := DecodeRequest(strings.NewReader(" " + in))
		if !errors.Is(err, ErrRequestTooLarge) {
			t.Errorf("one byte more: %v, want ErrRequestTooLarge", err)
		}
	})
}

func TestRequestWaitTimeout(t *testing.T) {
	if d := (Request{Timeout: "90s"}).WaitTimeout(); d != 90*time.Second {
		t.Errorf("90s: %s", d)
	}
	if d := (Request{}).WaitTimeout(); d != DefaultWaitTimeout {
		t.Errorf("default: %s", d)
	}
}

// FuzzDecodeRequest: no input panics, and an accepted request satisfies
// the checks and survives a round trip through the client's encoding.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"command":"status"}` + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := DecodeRequest(bytes.NewReader(in))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		nl := bytes.IndexByte(in, '\n')
		if nl < 0 || nl >= MaxRequestBytes {
			t.Fatalf("accepted a request without a newline within %d bytes", MaxRequestBytes)
		}
		if req.Version != ProtocolVersion {
			t.Fatalf("accepted version %d", req.Version)
		}
		if req.All && req.Command != CommandPromote {
			t.Fatalf("accepted all on %s", req.Command)
		}
		if req.Force && req.Command != CommandUpgrade {
			t.Fatalf("accepted force on %s", req.Command)
		}
		switch req.Command {
		case CommandStatus, CommandStop, CommandPromote, CommandAbort:
			if req.Wait || req.Timeout != "" {
				t.Fatalf("accepted wait or timeout on %s: %+v", req.Command, req)
			}
		case CommandUpgrade, CommandRollback:
			if req.Timeout != "" {
				d, err := time.ParseDuration(req.Timeout)
				if !req.Wait || err != nil || d <= 0 || d > MaxWaitTimeout || req.WaitTimeout() != d {
					t.Fatalf("accepted timeout %q (wait %v)", req.Timeout, req.Wait)
				}
			}
		default:
			t.Fatalf("accepted command %q", req.Command)
		}
		line, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeRequest(bytes.NewReader(append(line, '\n')))
		if err != nil || again != req {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
	})
}
