//go:build linux

package faults_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// faultUnrunnable: a deploy leaves the next version unrunnable: its
// executable deleted, not executable, or its working directory removed.
// Each upgrade fails with the cause, the serving generation (running its
// own pinned executable) serves on, and baton holds exactly the fds it
// held before: nothing opened for the failed generation is left behind.
// Once the deploy is repaired, the next upgrade works.
func faultUnrunnable(t *testing.T) {
	s := newService(t)
	app, wd := filepath.Join(s.dir, "app"), filepath.Join(s.dir, "wd")
	install := func() {
		t.Helper()
		data, err := os.ReadFile(appBin)
		if err != nil {
			t.Fatal(err)
		}
		// Written aside and renamed over, as a deploy does: the running
		// generation keeps its own (pinned) file.
		if err := os.WriteFile(app+".new", data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(app+".new", app); err != nil {
			t.Fatal(err)
		}
	}
	install()
	if err := os.Mkdir(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	s.write(t, serviceConfig{command: app, directory: wd})
	b := s.start(t, nil)
	addr, _ := b.ready()
	load := startLoad(t, addr)
	// One upgrade first, so that baton holds what it holds between
	// upgrades (the replaced generation's executable, pinned for a
	// rollback, among them).
	s.write(t, serviceConfig{command: app, directory: wd, version: "2"})
	s.mustUpgrade(t)
	pid := b.pid()
	baseline := fdKinds(fds(t, pid))

	for i, c := range []struct {
		what           string
		break_, repair func() error
		want           string
	}{
		{"executable deleted", func() error { return os.Remove(app) }, func() error { install(); return nil }, "no such file or directory"},
		{"executable not executable", func() error { return os.Chmod(app, 0o644) }, func() error { return os.Chmod(app, 0o755) }, "permission denied"},
		{"working directory removed", func() error { return os.Remove(wd) }, func() error { return os.Mkdir(wd, 0o755) }, "no such file or directory"},
	} {
		s.write(t, serviceConfig{command: app, directory: wd, version: fmt.Sprint(10 + i)})
		if err := c.break_(); err != nil {
			t.Fatal(err)
		}
		out, code := s.upgrade(t)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: upgrade: exit %d\n%s\nwant exit 1 and %q", c.what, code, out, c.want)
		}
		t.Logf("%s: %s", c.what, strings.TrimSpace(out))
		if body := answeredBy(t, addr, 2); !strings.Contains(body, "(version 2)") {
			t.Errorf("%s: %q; want generation 2 serving on", c.what, body)
		}
		baseline = settledFDs(t, pid, baseline, c.what)
		if err := c.repair(); err != nil {
			t.Fatal(err)
		}
	}

	s.write(t, serviceConfig{command: app, directory: wd, version: "20"})
	s.mustUpgrade(t)
	if body, err := answer(addr); err != nil || !strings.Contains(body, "(version 20)") {
		t.Errorf("after the repaired deploy: %q, %v", body, err)
	}
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}
