//go:build linux

package faults_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// faultConfigInvalid: between two upgrades the config file turns invalid
// (a value that does not parse, an unknown key), or changes what only a
// restart of baton may change (a listener's address, the steering mode).
// Each upgrade is refused, by every way of asking (SIGHUP, `baton upgrade
// --wait` over the socket, and with -c, which reads the file itself),
// with a message naming the file, the line and the key; nothing starts,
// the serving generation serves on, and once the file is valid again the
// next upgrade works.
func faultConfigInvalid(t *testing.T) {
	s := newService(t)
	s.write(t, serviceConfig{})
	b := s.start(t, nil)
	addr, _ := b.ready()
	load := startLoad(t, addr)
	valid := s.content
	name := filepath.Base(s.cfg)

	for _, c := range []struct {
		what, from, to string
		want           []string // in every answer
		parse          bool     // a parse error: -c fails too, and `baton check`
	}{
		{"a bad duration", `grace = "20ms"`, `grace = "20 ms"`, []string{name, "line " + lineOf(valid, `grace = "20ms"`), "[drain] grace"}, true},
		{"an unknown key", `grace = "20ms"`, "grace = \"20ms\"\ngrase = \"1s\"", []string{name, "line " + fmt.Sprint(1+atoi(lineOf(valid, `grace = "20ms"`))), "grase"}, true},
		{"a listener's address", `address = "127.0.0.1:0"`, `address = "127.0.0.2:0"`, []string{`listener "http"`, "127.0.0.2:0"}, false},
		{"the steering mode", "[control]", "[upgrade]\nsteering = \"shared\"\n\n[control]", []string{"steering", "shared"}, false},
	} {
		s.writeRaw(t, strings.Replace(valid, c.from, c.to, 1))
		check := func(how, out string) {
			t.Helper()
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s, %s: %q does not say %q", c.what, how, out, w)
				}
			}
		}
		from := len(b.all(func(map[string]any) bool { return true }))
		if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		m, err := b.waitFrom(from, `"upgrade not started"`, logWait, msg("upgrade not started", 0))
		if err != nil {
			t.Fatal(err)
		}
		check("SIGHUP (log)", str(m["err"]))
		out, code := s.upgrade(t)
		if code != 1 {
			t.Errorf("%s: upgrade --wait --socket: exit %d, want 1", c.what, code)
		}
		check("upgrade --wait --socket", out)
		out, code = runBaton(t, "upgrade", "--wait", "-c", s.cfg)
		if c.parse {
			if code != 2 {
				t.Errorf("%s: upgrade --wait -c: exit %d, want 2 (it cannot read the file to find the socket)", c.what, code)
			}
			check("upgrade --wait -c", out)
			out, code = runBaton(t, "check", "-c", s.cfg)
			if code != 2 {
				t.Errorf("%s: check: exit %d, want 2", c.what, code)
			}
			check("check", out)
		} else if code != 1 {
			t.Errorf("%s: upgrade --wait -c: exit %d, want 1\n%s", c.what, code, out)
		}
		t.Logf("%s: %s", c.what, strings.TrimSpace(out))
	}
	if b.has(msg("process started", 0)) && len(b.all(msg("process started", 0))) != 1 {
		t.Errorf("processes started for refused upgrades: %v", b.all(msg("process started", 0)))
	}
	answeredBy(t, addr, 1)

	s.writeRaw(t, strings.Replace(valid, `GREETING_VERSION = "1"`, `GREETING_VERSION = "2"`, 1))
	s.mustUpgrade(t)
	if body := answeredBy(t, addr, 2); !strings.Contains(body, "(version 2)") {
		t.Errorf("after the valid upgrade: %q", body)
	}
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}

// lineOf is the line number (from 1) of the first line containing s.
func lineOf(content, s string) string {
	for i, line := range strings.Split(content, "\n") {
		if strings.Contains(line, s) {
			return fmt.Sprint(i + 1)
		}
	}
	return "?"
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
