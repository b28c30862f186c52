//go:build linux

package supervisor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/baton-sh/baton/handoff/flagfile"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/supervisor"
)

const shoutFlag = "[flags]\nshout = { default = false, description = \"shout the greeting\" }"

func (h *harness) flag(name string) supervisor.FlagStatus {
	h.t.Helper()
	flags, _, _, err := h.sup.Flags(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range flags {
		if f.Name == name {
			return f
		}
	}
	h.t.Fatalf("no flag %q in %+v", name, flags)
	return supervisor.FlagStatus{}
}

// TestFlagFlipUnderLoad: a flag flipped under load reaches every process
// through the flags file without a restart, and every request after the
// flip sees it; nothing fails.
func TestFlagFlipUnderLoad(t *testing.T) {
	a := app{Version: "v1", Instances: 2, Env: map[string]string{"APP_FLAG": "shout"}, Extra: shoutFlag}
	h := start(t, a)
	pids := h.gen(h.status(), 1).PIDs
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	waitSent(t, load, 200)
	if body := freshBodies(t, h.url, 1, 8)[0]; !strings.Contains(body, "flag shout false") {
		t.Fatalf("before the flip: %q", body)
	}
	if err := h.sup.SetFlag(h.ctx, "shout", 100); err != nil {
		t.Fatal(err)
	}
	// The app reads the file at every request: the next fresh request
	// after SetFlag returned sees it, on every process.
	for _, body := range freshBodies(t, h.url, 200, 8) {
		if !strings.Contains(body, "flag shout true") {
			t.Fatalf("after the flip: %q", body)
		}
	}
	waitSent(t, load, load.Snapshot().Sent+200)
	res := load.Stop()
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Sent, res.Errors)
	}
	if now := h.gen(h.status(), 1).PIDs; !slices.Equal(now, pids) {
		t.Errorf("processes %v became %v: a flag must not restart anything", pids, now)
	}
	if f := h.flag("shout"); f.Percent != 100 || !f.Set || f.By != "operator" {
		t.Errorf("flag after set: %+v", f)
	}
	if err := h.sup.SetFlag(h.ctx, "nope", 100); !errors.Is(err, supervisor.ErrUnknownFlag) || !strings.Contains(err.Error(), "shout") {
		t.Errorf("set an unknown flag: %v; want ErrUnknownFlag naming the declared ones", err)
	}
	if err := h.sup.SetFlag(h.ctx, "shout", 101); err == nil {
		t.Error("set a flag to 101%: no error")
	}
	if err := h.sup.ResetFlag(h.ctx, "shout"); err != nil {
		t.Fatal(err)
	}
	if f := h.flag("shout"); f.Percent != 0 || f.Set {
		t.Errorf("flag after reset: %+v; want the default, not set", f)
	}
}

// TestFlagsSurviveRestart: an operator's values outlive baton; a corrupt
// state file is reported and replaced by the config's defaults.
func TestFlagsSurviveRestart(t *testing.T) {
	a := app{Version: "v1", Extra: shoutFlag}
	h := start(t, a)
	if err := h.sup.SetFlag(h.ctx, "shout", 30); err != nil {
		t.Fatal(err)
	}
	_, v1, path, _ := h.sup.Flags(h.ctx)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	h2 := restart(t, h)
	if f := h2.flag("shout"); f.Percent != 30 || !f.Set {
		t.Errorf("after a restart of baton: %+v; want 30%%, set", f)
	}
	if _, v2, _, _ := h2.sup.Flags(h2.ctx); v2 <= v1 {
		t.Errorf("version %d after the restart, was %d: versions must only grow", v2, v1)
	}
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	state := strings.TrimSuffix(path, ".flags.json") + ".flags-state.json"
	if err := os.WriteFile(state, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h3 := restart(t, h)
	if f := h3.flag("shout"); f.Percent != 0 || f.Set {
		t.Errorf("after a corrupt state file: %+v; want the default", f)
	}
	if !strings.Contains(h3.logs.String(), "flag state file unreadable") {
		t.Errorf("the corrupt state file was not reported")
	}
	if data, err := os.ReadFile(state); err != nil || !strings.HasPrefix(string(data), "{\"version\"") {
		t.Errorf("state file not replaced: %q, %v", data, err)
	}
}

// restart starts a new supervisor on h's config, as a restart of baton.
func restart(t *testing.T, h *harness) *harness {
	t.Helper()
	cfg, err := supervisor.LoadConfig(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h2 := &harness{t: t, cfgPath: h.cfgPath, done: make(chan error, 1), logs: &syncBuffer{}, ctx: h.ctx}
	h2.sup, err = supervisor.New(supervisor.Options{ConfigPath: h.cfgPath, Config: cfg, Logger: testLogger(h2.logs)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { h2.done <- h2.sup.Run(context.Background()) }()
	t.Cleanup(func() {
		h2.stop()
		if t.Failed() {
			t.Logf("log of the restarted supervisor:\n%s", h2.logs.String())
		}
	})
	st := h2.waitFor("first generation ready", func(st supervisor.Status) bool {
		return st.Serving != 0 && h2.gen(st, st.Serving).Ready
	})
	h2.url = "http://" + st.Listeners[0].Address
	return h2
}

// TestFlagsFileNeverTorn: a reader polling the flags file all the time
// while baton changes a flag 1,000 times never reads half a file, and sees
// versions only grow.
func TestFlagsFileNeverTorn(t *testing.T) {
	h := start(t, app{Version: "v1", Extra: shoutFlag})
	_, _, path, _ := h.sup.Flags(h.ctx)
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() {
		last, reads := 0, 0
		for !stop.Load() {
			f, err := flagfile.Read(path)
			if err != nil {
				done <- err
				return
			}
			if int(f.Version) < last {
				done <- errors.New("version went back")
				return
			}
			last = int(f.Version)
			reads++
		}
		if reads < 1000 {
			done <- errors.New("the reader read fewer times than the file changed: the test proved little")
			return
		}
		done <- nil
	}()
	for i := range 1000 {
		if err := h.sup.SetFlag(h.ctx, "shout", i%101); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// TestFlagOffOnAnalysis: a flag with off_on = "analysis" that makes the
// service fail 20% of its requests is turned off by baton, with the
// figures in the log; the generation is unchanged throughout.
func TestFlagOffOnAnalysis(t *testing.T) {
	extra := "[flags]\nrisky = { default = false, off_on = \"analysis\" }\n\n" +
		"[analysis]\ninterval = \"300ms\"\nmeasurements = 5\nmin_requests = 20\nrules = [\"error_ratio\"]"
	a := app{Version: "v1", Listeners: withAdmin, Extra: extra,
		Env: map[string]string{"APP_FLAG": "risky", "APP_FLAG_ERRORS": "20"}}
	h := start(t, a)
	load := loadgen.Run(context.Background(), loadOptions(h.url))
	defer load.Stop()
	// Let the sampler measure an interval without the flag: the baseline.
	h.waitFor("a baseline interval", func(supervisor.Status) bool {
		return strings.Contains(h.logs.String(), "flag baseline measured")
	})
	if err := h.sup.SetFlag(h.ctx, "risky", 100); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the flag turned off by the analysis", func(supervisor.Status) bool {
		f := h.flag("risky")
		return f.Percent == 0 && f.By == "analysis"
	})
	if log := h.logs.String(); !strings.Contains(log, "analysis failed while it was on") || !strings.Contains(log, "error ratio") {
		t.Errorf("the log does not give the figures behind the decision")
	}
	if st := h.status(); st.Serving != 1 || len(st.Generations) != 1 {
		t.Errorf("the generation changed: %+v", st)
	}
	load.Stop()
}
