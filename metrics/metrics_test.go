//go:build linux

package metrics

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-sh/baton/supervisor"
)

const testWait = 5 * time.Second // bound of every wait in these tests

func noStatus(context.Context) (supervisor.Status, error) {
	return supervisor.Status{}, errors.New("no status in this test")
}

// runEvents feeds events to a Metrics through Run and returns once Run has
// counted them all and ended its subscription.
func runEvents(t *testing.T, evs ...supervisor.Event) *Metrics {
	t.Helper()
	return runSource(t, newFakeSource(noStatus), evs...)
}

// runSource is runEvents with the source given.
func runSource(t *testing.T, src *fakeSource, evs ...supervisor.Event) *Metrics {
	t.Helper()
	m := New(src)
	if src.buffer < 64 {
		t.Errorf("subscribed with a buffer of %d; a burst of events would be lost", src.buffer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	timeout := time.After(testWait)
	for _, ev := range evs {
		select {
		case src.events <- ev:
		case <-timeout:
			t.Fatalf("Run did not take event %+v", ev)
		}
	}
	cancel()
	select {
	case <-done:
	case <-timeout:
		t.Fatal("Run did not return after ctx ended")
	}
	select {
	case <-src.unsubscribed:
	default:
		t.Error("Run returned without ending its subscription")
	}
	return m
}

func TestRunCounts(t *testing.T) {
	ev := func(kind string, gen int) supervisor.Event {
		return supervisor.Event{Kind: kind, Gen: gen, PID: 100 + gen}
	}
	with := func(e supervisor.Event, f func(*supervisor.Event)) supervisor.Event { f(&e); return e }
	ready := func(gen int, d time.Duration) supervisor.Event {
		return with(ev(supervisor.EventReady, gen), func(e *supervisor.Event) { e.Duration = d })
	}
	promoted := func(gen, replaces int, rollback bool) supervisor.Event {
		return with(ev(supervisor.EventPromoted, gen), func(e *supervisor.Event) { e.Replaces, e.Rollback = replaces, rollback })
	}
	retired := func(gen int, d time.Duration) supervisor.Event {
		return with(ev(supervisor.EventRetired, gen), func(e *supervisor.Event) { e.Duration, e.PID = d, 0 })
	}

	reverted := func(gen, back int, cause string) supervisor.Event {
		return with(ev(supervisor.EventReverted, gen), func(e *supervisor.Event) {
			e.Replaces, e.Reason, e.Cause = back, "instance 0 crashed during probation: exit status 2", cause
		})
	}
	// The reason says the outcome too, for people: the count goes by the
	// Outcome field.
	analysis := func(gen int, outcome, reason string) supervisor.Event {
		return with(ev(supervisor.EventAnalysis, gen), func(e *supervisor.Event) { e.Outcome, e.Reason, e.PID = outcome, reason, 0 })
	}

	type want struct {
		promoted, failed, aborted, reverts, probationReverts float64
		steps, restarts, liveness                            float64
		pass, fail, inconclusive                             float64
		readyCount, drainCount                               uint64
		readySum, drainSum                                   float64
	}
	tests := []struct {
		name string
		evs  []supervisor.Event
		want want
	}{
		{"nothing yet", nil, want{}},
		{"first generation starts", []supervisor.Event{ev(supervisor.EventSpawned, 1), ready(1, 250*time.Millisecond)},
			want{readyCount: 1, readySum: 0.25}},
		{"upgrade promoted and old one drained", []supervisor.Event{
			ev(supervisor.EventSpawned, 2), ready(2, 2*time.Second), promoted(2, 1, false),
			ev(supervisor.EventDraining, 1), ev(supervisor.EventStopping, 1), retired(1, 1500*time.Millisecond),
		}, want{promoted: 1, readyCount: 1, readySum: 2, drainCount: 1, drainSum: 1.5}},
		{"upgrade failed", []supervisor.Event{
			ev(supervisor.EventSpawned, 2), with(ev(supervisor.EventFailed, 2), func(e *supervisor.Event) { e.Reason = "exited" }),
			ev(supervisor.EventStopping, 2), retired(2, 0),
		}, want{failed: 1}},
		{"rollback promoted", []supervisor.Event{ready(3, time.Second), promoted(3, 2, true), retired(2, 3*time.Second)},
			want{promoted: 1, reverts: 1, readyCount: 1, readySum: 1, drainCount: 1, drainSum: 3}},
		{"rollback failed", []supervisor.Event{with(ev(supervisor.EventFailed, 3), func(e *supervisor.Event) { e.Rollback = true })},
			want{failed: 1}},
		{"promoted replacing nothing", []supervisor.Event{promoted(2, 0, false)}, want{}},
		{"crash and restart", []supervisor.Event{
			ev(supervisor.EventCrashed, 1), ev(supervisor.EventSpawned, 1), ready(1, 100*time.Millisecond),
			ev(supervisor.EventCrashed, 1),
		}, want{restarts: 2, readyCount: 1, readySum: 0.1}},
		{"gave up", []supervisor.Event{ev(supervisor.EventGaveUp, 1)}, want{}},
		{"canary promoted after two steps", []supervisor.Event{
			ready(2, time.Second), ready(2, time.Second),
			with(ev(supervisor.EventStep, 2), func(e *supervisor.Event) { e.Weight, e.Duration = 10, 30*time.Second }),
			with(ev(supervisor.EventStep, 2), func(e *supervisor.Event) { e.Weight = 50 }),
			promoted(2, 1, false),
		}, want{promoted: 1, steps: 2, readyCount: 2, readySum: 2}},
		{"canary aborted at its first step", []supervisor.Event{
			with(ev(supervisor.EventStep, 2), func(e *supervisor.Event) { e.Weight, e.Step, e.Steps = 10, 1, 2 }),
			with(ev(supervisor.EventFailed, 2), func(e *supervisor.Event) { e.Reason, e.Aborted = "aborted by `baton abort`", true }),
		}, want{aborted: 1, steps: 1}},
		{"canary aborted by its analysis", []supervisor.Event{
			with(ev(supervisor.EventStep, 2), func(e *supervisor.Event) { e.Weight, e.Step, e.Steps = 10, 1, 2 }),
			analysis(2, "fail", "fail: error_ratio: error ratio 0.2 > 0.012"),
			with(ev(supervisor.EventFailed, 2), func(e *supervisor.Event) { e.Reason = "analysis failed: 1 of 1 measurements failed" }),
		}, want{failed: 1, steps: 1, fail: 1}},

		// Probation.
		{"probation passed", []supervisor.Event{
			ready(2, time.Second), promoted(2, 1, false),
			analysis(2, "pass", "pass: error_ratio: error ratio 0 <= 0.01"),
			analysis(2, "inconclusive", "inconclusive: error_ratio: error ratio inconclusive: 12 requests < min_requests 100"),
			analysis(2, "a-newer-outcome", "a-newer-outcome: figures"),
			analysis(2, "", "pass: an outcome in the reason only is not counted"),
			with(ev(supervisor.EventConfirmed, 2), func(e *supervisor.Event) { e.Duration = time.Minute }),
			retired(1, time.Minute),
		}, want{promoted: 1, pass: 1, inconclusive: 1, readyCount: 1, readySum: 1, drainCount: 1, drainSum: 60}},
		{"reverted to the standby", []supervisor.Event{
			promoted(2, 1, false),
			with(ev(supervisor.EventUnhealthy, 2), func(e *supervisor.Event) { e.Reason = "no WATCHDOG=1 for 10s" }),
			reverted(2, 1, supervisor.CauseLiveness), retired(2, 2*time.Second),
		}, want{promoted: 1, probationReverts: 1, liveness: 1, drainCount: 1, drainSum: 2}},
		// The replaced generation starts again as 3; its promotion is the
		// revert's, not an upgrade or a manual rollback. A rollback after
		// that is one.
		{"reverted without a standby", []supervisor.Event{
			promoted(2, 1, false), reverted(2, 1, supervisor.CauseCrash), ready(3, time.Second),
			with(promoted(3, 2, true), func(e *supervisor.Event) { e.RevertOf = 2 }), retired(2, 2*time.Second),
			promoted(4, 3, true),
		}, want{promoted: 2, reverts: 1, probationReverts: 1, readyCount: 1, readySum: 1, drainCount: 1, drainSum: 2}},
		{"liveness failure of a serving process", []supervisor.Event{
			with(ev(supervisor.EventUnhealthy, 1), func(e *supervisor.Event) { e.Reason = "health check failed 3 times in a row" }),
			ev(supervisor.EventCrashed, 1),
		}, want{liveness: 1, restarts: 1}},
		{"failed state", []supervisor.Event{ev(supervisor.EventFailedState, 2)}, want{}},
		{"unknown kind", []supervisor.Event{ev("future-kind", 1)}, want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := runEvents(t, tt.evs...)
			// The label values exist from the start, at 0 if nothing
			// happened, so that rate() has a beginning. (Checked first:
			// WithLabelValues below would create them.)
			if n := testutil.CollectAndCount(m.upgrades); n != 3 {
				t.Errorf("baton_upgrades_total has %d series, want 3 (promoted, failed, aborted)", n)
			}
			if n := testutil.CollectAndCount(m.reverts); n != 6 {
				t.Errorf("baton_reverts_total has %d series, want 6 (manual, and probation by each of 5 causes)", n)
			}
			if n := testutil.CollectAndCount(m.analysis); n != 3 {
				t.Errorf("baton_analysis_measurements_total has %d series, want 3 (pass, fail, inconclusive)", n)
			}
			var got want
			got.promoted = testutil.ToFloat64(m.upgrades.WithLabelValues(ResultPromoted))
			got.failed = testutil.ToFloat64(m.upgrades.WithLabelValues(ResultFailed))
			got.aborted = testutil.ToFloat64(m.upgrades.WithLabelValues(ResultAborted))
			got.reverts = testutil.ToFloat64(m.reverts.WithLabelValues(ReasonManual, supervisor.CauseRollback))
			for _, c := range probationCauses {
				got.probationReverts += testutil.ToFloat64(m.reverts.WithLabelValues(ReasonProbation, c))
			}
			got.steps = testutil.ToFloat64(m.steps)
			got.restarts = testutil.ToFloat64(m.restarts)
			got.liveness = testutil.ToFloat64(m.liveness)
			got.pass = testutil.ToFloat64(m.analysis.WithLabelValues(OutcomePass))
			got.fail = testutil.ToFloat64(m.analysis.WithLabelValues(OutcomeFail))
			got.inconclusive = testutil.ToFloat64(m.analysis.WithLabelValues(OutcomeInconclusive))
			got.readyCount, got.readySum = histogram(t, m.reg, "baton_readiness_seconds")
			got.drainCount, got.drainSum = histogram(t, m.reg, "baton_drain_seconds")
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// histogram returns the sample count and sum of the histogram name.
func histogram(t *testing.T, g prometheus.Gatherer, name string) (uint64, float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), math.Round(h.GetSampleSum()*1e6) / 1e6
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0, 0
}

// series returns the values of family name, keyed by its labels as
// `k="v",k="v"` in label-name order.
func series(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+strconv.Quote(lp.GetValue()))
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// pidMax is one more than the largest pid the kernel hands out: a process
// that is certainly not there.
func pidMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fullStatus has one generation in each interesting case: serving (this
// test process and a helper tree, two instances), draining (another helper
// tree), a canary (its one instance not started yet), and stopping with a
// process that is gone. The share is measured, as a steered listener does.
func fullStatus(t *testing.T) supervisor.Status {
	tr, other := startTree(t), startTree(t)
	inst := func(pids ...int) []supervisor.InstanceStatus {
		var out []supervisor.InstanceStatus
		for i, p := range pids {
			out = append(out, supervisor.InstanceStatus{Index: i, State: "running", PID: p, Ready: p != 0})
		}
		return out
	}
	return supervisor.Status{
		Service: "web", PID: os.Getpid(), Serving: 2, Candidate: 3,
		Listeners: []supervisor.ListenerStatus{
			{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: supervisor.ModeSteered},
			{Name: "admin", Network: "unix", Address: "/run/web.sock", Mode: supervisor.ModeShared},
		},
		Generations: []supervisor.GenerationStatus{
			{ID: 1, State: "draining", PID: tr.parent, PIDs: []int{tr.parent}, Share: -1, Instances: inst(tr.parent)},
			{ID: 2, State: "serving", PID: os.Getpid(), PIDs: []int{os.Getpid(), other.parent}, Ready: true,
				Weight: 90, Share: 91.5, Connections: 183, Instances: inst(os.Getpid(), other.parent)},
			{ID: 3, State: "canary", Weight: 10, Share: 8.5, Connections: 17, Instances: inst(0)},
			{ID: 4, State: "stopping", PID: pidMax(t), PIDs: []int{pidMax(t)}, Share: -1, Instances: inst(pidMax(t))},
		},
	}
}

func TestStatusMetrics(t *testing.T) {
	st := fullStatus(t)
	m := New(newFakeSource(func(context.Context) (supervisor.Status, error) { return st, nil }))

	if got := series(t, m.reg, "baton_serving_generation"); got[""] != 2 || len(got) != 1 {
		t.Errorf("baton_serving_generation = %v, want 2", got)
	}
	for _, name := range []string{"baton_probation_generation", "baton_failed_state"} {
		if got := series(t, m.reg, name); got[""] != 0 || len(got) != 1 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	wantGens := map[string]float64{`state="starting"`: 0, `state="canary"`: 1, `state="serving"`: 1, `state="standby"`: 0,
		`state="draining"`: 1, `state="stopping"`: 1}
	if got := series(t, m.reg, "baton_generations"); !maps.Equal(got, wantGens) {
		t.Errorf("baton_generations = %v, want %v", got, wantGens)
	}
	wantListeners := map[string]float64{
		`address="127.0.0.1:8080",listener="http",mode="steered",network="tcp"`: 1,
		`address="/run/web.sock",listener="admin",mode="shared",network="unix"`: 1,
	}
	if got := series(t, m.reg, "baton_listener_info"); !maps.Equal(got, wantListeners) {
		t.Errorf("baton_listener_info = %v, want %v", got, wantListeners)
	}

	// Usage only for the generations with a live process: 1 and 2.
	for _, name := range []string{"baton_generation_resident_memory_bytes", "baton_generation_cpu_seconds_total"} {
		got := series(t, m.reg, name)
		keys := slices.Sorted(maps.Keys(got))
		want := []string{`generation="1",state="draining"`, `generation="2",state="serving"`}
		if !slices.Equal(keys, want) {
			t.Errorf("%s has series %q, want %q", name, keys, want)
		}
	}
	if rss := series(t, m.reg, "baton_generation_resident_memory_bytes")[`generation="2",state="serving"`]; rss < 1<<20 {
		t.Errorf("resident memory of this test process: %v bytes, want at least 1 MiB", rss)
	}

	for name, want := range map[string]map[string]float64{
		"baton_generation_instances": {`generation="1"`: 1, `generation="2"`: 2, `generation="3"`: 1, `generation="4"`: 1},
		"baton_generation_weight_percent": {`generation="1"`: 0, `generation="2"`: 90, `generation="3"`: 10,
			`generation="4"`: 0},
		// Known for the serving generation and the candidate only.
		"baton_generation_share_percent":       {`basis="connections",generation="2"`: 91.5, `basis="connections",generation="3"`: 8.5},
		"baton_generation_steered_connections": {`generation="2"`: 183, `generation="3"`: 17},
	} {
		if got := series(t, m.reg, name); !maps.Equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestProbationMetrics: the generation on probation, its standby and the
// failed state, read at scrape time.
func TestProbationMetrics(t *testing.T) {
	st := supervisor.Status{Serving: 3, Probation: 3, ProbationEnd: time.Now().Add(time.Minute), Standby: 2,
		Failed: "3 reverts within 1h0m0s; the last: generation 5: instance 0 crashed during probation: exit status 2",
		Generations: []supervisor.GenerationStatus{
			{ID: 2, State: "standby", Share: -1},
			{ID: 3, State: "serving", Weight: 100, Share: -1},
		}}
	m := New(newFakeSource(func(context.Context) (supervisor.Status, error) { return st, nil }))
	for name, want := range map[string]map[string]float64{
		"baton_probation_generation": {"": 3},
		"baton_failed_state":         {"": 1},
		"baton_generations": {`state="starting"`: 0, `state="canary"`: 0, `state="serving"`: 1, `state="standby"`: 1,
			`state="draining"`: 0, `state="stopping"`: 0},
		"baton_generation_weight_percent": {`generation="2"`: 0, `generation="3"`: 100},
	} {
		if got := series(t, m.reg, name); !maps.Equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestGenerationUsageSumsInstances: a generation's resident memory and CPU
// are those of all its instances' process trees together.
func TestGenerationUsageSumsInstances(t *testing.T) {
	a, b := startTree(t), startTree(t)
	st := supervisor.Status{Serving: 1, Generations: []supervisor.GenerationStatus{
		{ID: 1, State: "serving", PIDs: []int{a.parent}, Share: -1},
		{ID: 2, State: "serving", PIDs: []int{a.parent, b.parent}, Share: -1},
		{ID: 3, State: "serving", PIDs: []int{b.parent}, Share: -1},
	}}
	m := New(newFakeSource(func(context.Context) (supervisor.Status, error) { return st, nil }))
	// The helpers are idle, but their memory is read once per
	// generation: allow for a page or two changing between the reads.
	rss := series(t, m.reg, "baton_generation_resident_memory_bytes")
	one, two, three := rss[`generation="1",state="serving"`], rss[`generation="2",state="serving"`], rss[`generation="3",state="serving"`]
	if one == 0 || three == 0 || math.Abs(two-(one+three)) > 0.05*(one+three) {
		t.Errorf("resident memory: instance a %v, b %v, both %v; want both = a + b", one, three, two)
	}
}

// TestShareInSharedMode: without a steered listener the share is the
// estimate by instance count, and no connections are counted.
func TestShareInSharedMode(t *testing.T) {
	st := supervisor.Status{Serving: 1, Candidate: 2,
		Listeners: []supervisor.ListenerStatus{{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Mode: supervisor.ModeShared}},
		Generations: []supervisor.GenerationStatus{
			{ID: 1, State: "serving", Weight: 67, Share: 100.0 * 2 / 3, ShareEstimated: true},
			{ID: 2, State: "canary", Weight: 33, Share: 100.0 / 3, ShareEstimated: true},
		}}
	m := New(newFakeSource(func(context.Context) (supervisor.Status, error) { return st, nil }))
	want := map[string]float64{`basis="instances",generation="1"`: 100.0 * 2 / 3, `basis="instances",generation="2"`: 100.0 / 3}
	if got := series(t, m.reg, "baton_generation_share_percent"); !maps.Equal(got, want) {
		t.Errorf("baton_generation_share_percent = %v, want %v", got, want)
	}
	if got := series(t, m.reg, "baton_generation_steered_connections"); len(got) != 0 {
		t.Errorf("baton_generation_steered_connections in shared mode: %v, want none", got)
	}
}

// documented returns the metric names in the package comment of metrics.go,
// each with its label names, sorted.
func documented(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "metrics.go", nil, parser.PackageClauseOnly|parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(baton_[a-z_]+)(?:\{([^}]*)\})?`)
	out := map[string][]string{}
	for _, m := range re.FindAllStringSubmatch(f.Doc.Text(), -1) {
		var labels []string
		if m[2] != "" {
			for l := range strings.SplitSeq(m[2], ",") {
				name, _, _ := strings.Cut(l, "=")
				labels = append(labels, strings.TrimSpace(name))
			}
		}
		slices.Sort(labels)
		out[m[1]] = labels
	}
	if len(out) == 0 {
		t.Fatal("no metric documented in the package comment of metrics.go")
	}
	return out
}

// TestHandlerServesDocumented checks that the /metrics output has exactly
// the metrics the package comment lists (which the README copies), with
// the documented labels, next to the Go and process metrics of baton.
func TestHandlerServesDocumented(t *testing.T) {
	st := fullStatus(t)
	src := newFakeSource(func(context.Context) (supervisor.Status, error) { return st, nil })
	src.flags = func(context.Context) ([]supervisor.FlagStatus, error) { return declaredFlags(), nil }
	m := New(src)
	m.declareFlags(context.Background()) // as Run does first: the flags' change counters exist
	body := scrape(t, m.Handler())

	doc := documented(t)
	served := map[string]bool{}
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			served[strings.Fields(rest)[0]] = true
		}
	}
	for name := range doc {
		if !served[name] {
			t.Errorf("documented metric %s is not served", name)
		}
		if !strings.Contains(body, "# HELP "+name+" ") {
			t.Errorf("metric %s has no HELP text", name)
		}
	}
	for name := range served {
		if _, ok := doc[name]; strings.HasPrefix(name, "baton_") && !ok {
			t.Errorf("served metric %s is not documented in metrics.go", name)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !served[name] {
			t.Errorf("baton's own %s is not served", name)
		}
	}

	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		want, ok := doc[mf.GetName()]
		if !ok {
			continue
		}
		for _, s := range mf.GetMetric() {
			var got []string
			for _, lp := range s.GetLabel() {
				got = append(got, lp.GetName())
			}
			if !slices.Equal(got, want) { // both sorted: the registry sorts labels
				t.Errorf("%s has labels %q, documented %q", mf.GetName(), got, want)
				break
			}
		}
	}

	problems, err := testutil.GatherAndLint(m.reg, slices.Collect(maps.Keys(doc))...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// scrape serves one GET /metrics from h, bounded by testWait.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil)); close(done) }()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("scrape did not finish")
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestScrapeWithoutStatus: when the supervisor does not answer, the
// scrape-time metrics are left out and the rest is still served.
func TestScrapeWithoutStatus(t *testing.T) {
	tests := []struct {
		name   string
		status func(context.Context) (supervisor.Status, error)
	}{
		{"stopped", func(context.Context) (supervisor.Status, error) {
			return supervisor.Status{}, supervisor.ErrStopped
		}},
		{"too slow", func(ctx context.Context) (supervisor.Status, error) {
			if _, ok := ctx.Deadline(); !ok {
				return supervisor.Status{}, errors.New("status asked without a deadline")
			}
			<-ctx.Done()
			return supervisor.Status{}, ctx.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(newFakeSource(tt.status))
			m.status.timeout = 50 * time.Millisecond
			body := scrape(t, m.Handler())
			for _, name := range []string{"baton_upgrades_total", "baton_readiness_seconds", "go_goroutines"} {
				if !strings.Contains(body, "# TYPE "+name+" ") {
					t.Errorf("%s missing from a scrape without status", name)
				}
			}
			for _, name := range []string{"baton_serving_generation", "baton_probation_generation", "baton_failed_state", "baton_flag_percent",
				"baton_generations", "baton_listener_info",
				"baton_generation_resident_memory_bytes", "baton_generation_cpu_seconds_total", "baton_generation_instances",
				"baton_generation_weight_percent", "baton_generation_share_percent", "baton_generation_steered_connections"} {
				if strings.Contains(body, name+" ") || strings.Contains(body, name+"{") {
					t.Errorf("%s served without a status", name)
				}
			}
		})
	}
}
