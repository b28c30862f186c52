package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
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
			`{"version":1,"command":"flags"}` + "\n":                                           {Version: 1, Command: "flags"},
			`{"version":1,"command":"flag","name":"search_v2","percent":10}` + "\n":            {Version: 1, Command: "flag", Name: "search_v2", Percent: ptr(10)},
			`{"version":1,"command":"flag","name":"search_v2","percent":0}` + "\n":             {Version: 1, Command: "flag", Name: "search_v2", Percent: ptr(0)},
			`{"version":1,"command":"flag","name":"a.b-C_9","percent":100}` + "\n":             {Version: 1, Command: "flag", Name: "a.b-C_9", Percent: ptr(100)},
			`{"version":1,"command":"flag","name":"search_v2","reset":true}` + "\n":            {Version: 1, Command: "flag", Name: "search_v2", Reset: true},
			`{"version":1,"command":"flag","name":"x","percent":5,"reset":false}` + "\n":       {Version: 1, Command: "flag", Name: "x", Percent: ptr(5)},
			`{"version":1,"command":"flag","name":"` + strings.Repeat("x", MaxFlagName) + `","reset":true}` + "\n": {
				Version: 1, Command: "flag", Name: strings.Repeat("x", MaxFlagName), Reset: true},
			`{"version":1,"command":"status","reset":false}` + "\n": {Version: 1, Command: "status"},
		} {
			got, err := DecodeRequest(strings.NewReader(in))
			if err != nil || !reflect.DeepEqual(got, want) {
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
			`{"version":1,"command":"STATUS"}` + "\n":                                        `unknown command "STATUS" (want status, upgrade, rollback, promote, abort, stop, flags or flag)`,
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

			// Feature flags.
			`{"version":1,"command":"flag","percent":10}` + "\n":                                                     `flag needs "name": the flag to change`,
			`{"version":1,"command":"flag","name":"","percent":10}` + "\n":                                           `field "name" is empty`,
			`{"version":1,"command":"flag","name":"search_v2"}` + "\n":                                               `flag needs "percent" (0 off, 100 on, or the percent of keys) or "reset": true`,
			`{"version":1,"command":"flag","name":"search_v2","reset":false}` + "\n":                                 `flag needs "percent"`,
			`{"version":1,"command":"flag","name":"search_v2","percent":10,"reset":true}` + "\n":                     `flag takes "percent" or "reset": true, not both`,
			`{"version":1,"command":"flag","name":"search_v2","percent":101}` + "\n":                                 "percent 101 is out of range (want 0 (off) to 100 (on))",
			`{"version":1,"command":"flag","name":"search_v2","percent":-1}` + "\n":                                  "percent -1 is out of range",
			`{"version":1,"command":"flag","name":"search_v2","percent":10.5}` + "\n":                                `field "percent" must be a whole number from 0 to 100, not 10.5`,
			`{"version":1,"command":"flag","name":"search_v2","percent":"10%"}` + "\n":                               `field "percent" must be a whole number from 0 to 100, not "10%"`,
			`{"version":1,"command":"flag","name":"search_v2","percent":null}` + "\n":                                `field "percent" must be a whole number from 0 to 100, not null`,
			`{"version":1,"command":"flag","name":"search_v2","percent":1e2}` + "\n":                                 `field "percent" must be a whole number from 0 to 100, not 1e2`,
			`{"version":1,"command":"flag","name":"search_v2","percent":99999999999999999999}` + "\n":                `field "percent" must be a whole number`,
			`{"version":1,"command":"flag","name":"search_v2","reset":"yes"}` + "\n":                                 `field "reset" must be true or false, not "yes"`,
			`{"version":1,"command":"flag","name":7,"reset":true}` + "\n":                                            `field "name" must be a string (a flag's name), not 7`,
			`{"version":1,"command":"flag","name":"search v2","reset":true}` + "\n":                                  `invalid flag name "search v2": a flag's name is letters, digits, '_', '-' or '.'`,
			`{"version":1,"command":"flag","name":"a\nb","reset":true}` + "\n":                                       `invalid flag name "a\nb"`,
			`{"version":1,"command":"flag","name":"` + strings.Repeat("x", MaxFlagName+1) + `","reset":true}` + "\n": "is 65 bytes long; a flag's name is at most 64",
			`{"version":1,"command":"flag","name":"x","percent":1,"wait":true}` + "\n":                               `"wait" applies to upgrade and rollback, not to flag`,
			`{"version":1,"command":"flag","name":"x","percent":1,"all":true}` + "\n":                                `"all" applies to promote, not to flag`,
			`{"version":1,"command":"flag","name":"x","percent":1,"force":true}` + "\n":                              `"force" applies to upgrade, not to flag`,
			`{"version":1,"command":"flags","name":"search_v2"}` + "\n":                                              `"name" applies to flag, not to flags`,
			`{"version":1,"command":"flags","timeout":"1s"}` + "\n":                                                  `"timeout" applies to upgrade and rollback, not to flags`,
			`{"version":1,"command":"status","percent":10}` + "\n":                                                   `"percent" applies to flag, not to status`,
			`{"version":1,"command":"upgrade","reset":true}` + "\n":                                                  `"reset" applies to flag, not to upgrade`,
			`{"version":1,"command":"promote","name":"x","percent":0}` + "\n":                                        `"name" applies to flag, not to promote`,
			`{"version":1,"command":"flag","name":"x","percent":1,"percent":2}` + "\n":                               `field "percent" given twice`,
			`{"version":1,"command":"Flag","name":"x","reset":true}` + "\n":                                          `unknown command "Flag"`,
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

func ptr(n int) *int { return &n }

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
	f.Add([]byte(`{"version":1,"command":"flags"}` + "\n"))
	f.Add([]byte(`{"version":1,"command":"flag","name":"search_v2","percent":10}` + "\n"))
	f.Add([]byte(`{"version":1,"command":"flag","name":"search_v2","reset":true}` + "\n"))
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
		if req.Command == CommandFlag {
			p := req.Percent
			if req.Name == "" || len(req.Name) > MaxFlagName || strings.Trim(req.Name, flagNameChars) != "" ||
				(p == nil) == !req.Reset || (p != nil && (*p < 0 || *p > 100)) {
				t.Fatalf("accepted flag request %+v (percent %v)", req, p)
			}
		} else if req.Name != "" || req.Percent != nil || req.Reset {
			t.Fatalf("accepted name, percent or reset on %s", req.Command)
		}
		switch req.Command {
		case CommandStatus, CommandStop, CommandPromote, CommandAbort, CommandFlags, CommandFlag:
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
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
	})
}
