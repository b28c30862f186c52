package supervisor

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/probe"
)

func configFile(name string) string { return filepath.Join("testdata", "config", name) }

func TestLoadConfigValid(t *testing.T) {
	defaults := func(path string, listeners ...handoff.ListenerSpec) *Config {
		name := strings.TrimSuffix(filepath.Base(path), ".toml")
		return &Config{
			Path:      path,
			Service:   ServiceConfig{Name: name, Command: []string{"/srv/app/current/app"}, Instances: 1},
			Control:   ControlConfig{Socket: DefaultControlSocket(name), GID: -1},
			Log:       LogConfig{Format: "text"},
			Listeners: listeners,
			Readiness: ReadinessConfig{Check: "notify", Timeout: DefaultReadinessTimeout},
			Upgrade: UpgradeConfig{Steering: "auto", Strategy: StrategyBlueGreen,
				MaxReverts: DefaultMaxReverts, RevertWindow: DefaultRevertWindow},
			Analysis: AnalysisConfig{AnalysisConfig: probe.DefaultAnalysisConfig()},
			Hooks:    HooksConfig{Timeout: DefaultHookTimeout},
			Drain:    DrainConfig{Signal: syscall.SIGTERM, Timeout: DefaultDrainTimeout, Grace: DefaultDrainGrace},
			Restart: RestartConfig{
				MaxTries:   DefaultRestartMaxTries,
				Backoff:    DefaultRestartBackoff,
				MaxBackoff: DefaultRestartMaxBackoff,
				ResetAfter: DefaultRestartResetAfter,
			},
		}
	}
	http := handoff.ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:8080"}

	tests := []struct {
		file string
		want func(path string) *Config
	}{
		{"good-minimal.toml", func(path string) *Config { return defaults(path, http) }},
		{"good-full.toml", func(path string) *Config {
			return &Config{
				Path:    path,
				Control: ControlConfig{Socket: "/run/baton/web-control.sock", Group: "root", GID: 0},
				Log:     LogConfig{Format: "json"},
				Metrics: MetricsConfig{Address: "127.0.0.1:9100"},
				Service: ServiceConfig{
					Name:        "web",
					Credentials: &Credentials{User: "nobody", Home: "/nonexistent", UID: 65534, GID: 65534, Groups: []uint32{}},
					NoNewPrivs:  true,
					Instances:   4,
					Command:     []string{"/srv/app/current/app", "--flag", "two words"},
					Directory:   "/srv/app",
					Environment: map[string]string{"GREETING": "hello", "EMPTY": "", "LISTEN_FDS_EXTRA": "x"},
				},
				Listeners: []handoff.ListenerSpec{
					{Name: "http", Network: "tcp4", Address: "0.0.0.0:80"},
					{Name: "admin", Network: "unix", Address: "/run/app/admin.sock", Mode: 0o660},
					{Name: "dns", Network: "udp6", Address: "[::1]:5353"},
				},
				Readiness: ReadinessConfig{
					Check:    "exec",
					Timeout:  time.Minute,
					Command:  []string{"/usr/bin/curl", "-sf", "http://127.0.0.1:8080/health"},
					Interval: 250 * time.Millisecond,
				},
				Upgrade: UpgradeConfig{Steering: "bpf", Strategy: StrategyCanary, Steps: []CanaryStep{
					{Weight: 10, Pause: 30 * time.Second}, {Weight: 50}, {Weight: 90, Pause: time.Minute},
				}, MaxReverts: DefaultMaxReverts, RevertWindow: DefaultRevertWindow},
				Analysis: AnalysisConfig{AnalysisConfig: probe.DefaultAnalysisConfig()},
				Hooks:    HooksConfig{Timeout: DefaultHookTimeout},
				Drain:    DrainConfig{Signal: syscall.SIGQUIT, Timeout: 150 * time.Second, Grace: 0},
				Restart:  RestartConfig{MaxTries: 0, Backoff: time.Second, MaxBackoff: time.Minute, ResetAfter: 5 * time.Minute},
			}
		}},
		{"good-delay.toml", func(path string) *Config {
			c := defaults(path,
				handoff.ListenerSpec{Name: "http", Network: "tcp", Address: ":8080"},
				handoff.ListenerSpec{Name: "metrics", Network: "unix", Address: "@baton-metrics"},
				handoff.ListenerSpec{Name: "v6", Network: "tcp6", Address: "[::1]:9090"}, // canonical form
			)
			c.Service.Command = []string{"./bin/hello"}
			c.Readiness = ReadinessConfig{Check: "delay", Timeout: 10 * time.Second, Delay: 2 * time.Second}
			c.Upgrade.Steering = "shared"
			return c
		}},
		{"good-dotted.toml", func(path string) *Config {
			c := defaults(path,
				handoff.ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"},
				handoff.ListenerSpec{Name: "http-also", Network: "tcp", Address: "127.0.0.1:0"},
			)
			c.Service.Environment = map[string]string{"GREETING": "hello"}
			c.Drain.Signal = syscall.SIGINT
			return c
		}},
	}
	tests = append(tests, []struct {
		file string
		want func(path string) *Config
	}{
		{"good-health.toml", func(path string) *Config {
			c := defaults(path, http, handoff.ListenerSpec{Name: "admin", Network: "tcp", Address: "127.0.0.1:0", Private: true})
			target := ProbeTarget{Listener: "admin", Path: "/ready", Host: "app.internal", Body: "ok"}
			c.Readiness = ReadinessConfig{Check: "http", Timeout: DefaultReadinessTimeout, Interval: 100 * time.Millisecond,
				CheckTimeout: 2 * time.Second, Target: target}
			target.Path = "/healthz"
			c.Health = HealthConfig{Check: "http", Target: target, Watchdog: 20 * time.Second, Schedule: probe.Schedule{
				Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, SuccessThreshold: 2, FailureThreshold: 4,
				InitialDelay: time.Second, LatencySamples: probe.DefaultLatencySamples}}
			c.Upgrade.Probation, c.Upgrade.MaxReverts, c.Upgrade.RevertWindow = time.Minute, 1, 30*time.Minute
			a := probe.DefaultAnalysisConfig()
			a.Interval, a.Measurements, a.FailureLimit, a.MinRequests, a.MinChecks = 10*time.Second, 6, 1, 50, 3
			a.Rules = []string{"crashes", "error_ratio", "probe_failure_ratio", "latency_p99", "rss", "cpu"}
			a.MaxLatencyP99Factor, a.MaxLatencyP99Margin, a.MaxRSSMargin, a.MaxCPUMargin = 3, 100*time.Millisecond, 64*probe.MiB, 0.5
			c.Analysis = AnalysisConfig{Enabled: true, AnalysisConfig: a, Listener: "admin"}
			c.Hooks = HooksConfig{PreStart: []string{"/srv/app/current/migrate", "expand"},
				PostPromote: []string{"/srv/app/current/migrate", "contract"},
				PostRevert:  []string{"/usr/local/bin/page", "reverted"}, Timeout: 2 * time.Minute}
			return c
		}},
		{"good-flags.toml", func(path string) *Config {
			c := defaults(path, http)
			c.Flags = []FlagConfig{
				{Name: "dark_mode", Percent: 100},
				{Name: "new_checkout", Description: "the new checkout page"},
				{Name: "search_v2", Percent: 10, OffOn: "analysis"},
			}
			c.Analysis.Enabled, c.Analysis.Rules = true, []string{"crashes"}
			return c
		}},
		{"good-health-exec.toml", func(path string) *Config {
			c := defaults(path, http, handoff.ListenerSpec{Name: "probe", Network: "tcp6", Address: "[::1]:0", Private: true})
			c.Readiness = ReadinessConfig{Check: "tcp", Timeout: DefaultReadinessTimeout, Interval: DefaultExecInterval,
				CheckTimeout: DefaultCheckTimeout, Target: ProbeTarget{Listener: "probe", Path: "/"}}
			c.Health = HealthConfig{Check: "exec", Command: []string{"/usr/local/bin/healthcheck", "--quick"},
				Schedule: probe.Schedule{}.WithDefaults()}
			return c
		}},
	}...)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := configFile(tt.file)
			got, err := LoadConfig(path)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if want := tt.want(path); !reflect.DeepEqual(got, want) {
				t.Errorf("LoadConfig:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseConfigInvalid(t *testing.T) {
	tests := []struct {
		file string
		key  string // ConfigError.Key
		line int    // ConfigError.Line
		is   error  // if set, errors.Is(err, is)
	}{
		// TOML itself
		{"bad-syntax.toml", "[[listener]] address", 6, nil},
		// flags
		{"bad-flag-both.toml", "[flags] x.percent", 9, nil},
		{"bad-flag-percent.toml", "[flags] x.percent", 9, nil},
		{"bad-flag-type.toml", "[flags] x", 9, nil},
		{"bad-flag-off-on.toml", "[flags] x.off_on", 9, nil},
		{"bad-flag-key.toml", "[flags] x.defualt", 9, ErrUnknownKey},
		{"bad-flag-name.toml", "[flags] \"a b\"", 9, nil},
		// health, analysis, hooks
		{"bad-health-no-private.toml", "[health] check", 9, nil},
		{"bad-private-port.toml", "[[listener]] private", 7, nil},
		{"bad-health-not-private.toml", "[health] listener", 14, nil},
		{"bad-readiness-path-tcp.toml", "[readiness] path", 14, nil},
		{"bad-analysis-rule.toml", "[analysis]", 12, nil},
		{"bad-health-threshold.toml", "[health] failure_threshold", 14, nil},
		{"bad-hook-command.toml", "[hooks] pre_start", 9, nil},
		// instances and strategies
		{"bad-instances-zero.toml", "[service] instances", 3, nil},
		{"bad-instances-many.toml", "[service] instances", 3, nil},
		{"bad-instances-string.toml", "[service] instances", 3, nil},
		{"bad-strategy.toml", "[upgrade] strategy", 10, nil},
		{"bad-canary-no-steps.toml", "[upgrade] strategy", 10, nil},
		{"bad-steps-not-canary.toml", "[upgrade] steps", 11, nil},
		{"bad-steps-empty.toml", "[upgrade] steps", 11, nil},
		{"bad-step-weight-100.toml", "[upgrade] steps.weight", 11, nil},
		{"bad-step-no-weight.toml", "[upgrade] steps", 11, nil},
		{"bad-steps-down.toml", "[upgrade] steps.weight", 11, nil},
		{"bad-step-pause.toml", "[upgrade] steps.pause", 11, nil},
		{"bad-step-unknown-key.toml", "[upgrade] steps.wieght", 11, ErrUnknownKey},
		// unknown keys
		{"bad-unknown-top.toml", "[servce]", 8, ErrUnknownKey},
		{"bad-unknown-section-key.toml", "[service] comand", 3, ErrUnknownKey},
		{"bad-unknown-listener-key.toml", "[[listener]] tls", 11, ErrUnknownKey},
		{"bad-unknown-many.toml", "verbose", 1, ErrUnknownKey},
		{"bad-unknown-case.toml", "[drain] Timeout", 9, ErrUnknownKey},
		// wrong types
		{"bad-type-command-string.toml", "[service] command", 2, nil},
		{"bad-type-timeout-number.toml", "[readiness] timeout", 9, nil},
		{"bad-type-section.toml", "[drain]", 1, nil},
		{"bad-type-listener-table.toml", "[[listener]]", 4, nil},
		{"bad-type-env-value.toml", "[service] environment.PORT", 3, nil},
		{"bad-mode-number.toml", "[[listener]] mode", 8, nil},
		// durations and numbers
		{"bad-duration.toml", "[drain] timeout", 10, nil},
		{"bad-duration-negative.toml", "[restart] backoff", 9, nil},
		{"bad-duration-zero.toml", "[readiness] interval", 11, nil},
		{"bad-max-backoff.toml", "[restart] max_backoff", 10, nil},
		{"bad-max-tries.toml", "[restart] max_tries", 9, nil},
		// [service]
		{"bad-no-command.toml", "[service] command", 1, nil},
		{"bad-no-service.toml", "[service] command", 0, nil},
		{"bad-empty-command.toml", "[service] command", 2, nil},
		{"bad-empty-program.toml", "[service] command", 2, nil},
		{"bad-relative-directory.toml", "[service] directory", 3, nil},
		{"bad-env-reserved.toml", "[service] environment.LISTEN_FDS", 6, nil},
		{"bad-env-baton.toml", "[service] environment.BATON_GENERATION", 3, nil},
		{"bad-env-equals.toml", `[service] environment."A=B"`, 5, nil},
		{"bad-env-empty.toml", `[service] environment.""`, 3, nil},
		// [[listener]]
		{"bad-no-listener.toml", "[[listener]]", 0, nil},
		{"bad-listener-no-address.toml", "[[listener]] address", 8, nil},
		{"bad-address-no-port.toml", "[[listener]] address", 6, nil},
		{"bad-address-port-range.toml", "[[listener]] address", 10, nil},
		{"bad-address-hostname.toml", "[[listener]] address", 6, nil},
		{"bad-address-unix-relative.toml", "[[listener]] address", 7, nil},
		{"bad-address-family.toml", "[[listener]] address", 7, nil},
		{"bad-network.toml", "[[listener]] network", 7, nil},
		{"bad-mode-non-unix.toml", "[[listener]] mode", 7, nil},
		{"bad-mode-string.toml", "[[listener]] mode", 8, nil},
		{"bad-duplicate-name.toml", "[[listener]] name", 9, nil},
		{"bad-duplicate-address.toml", "[[listener]] address", 11, nil},
		{"bad-listener-name-colon.toml", "[[listener]] name", 5, nil},
		{"bad-listener-name-space.toml", "[[listener]] name", 5, nil},
		// [readiness]
		{"bad-readiness-check.toml", "[readiness] check", 9, nil},
		{"bad-exec-no-command.toml", "[readiness] command", 8, nil},
		{"bad-delay-no-delay.toml", "[readiness] delay", 8, nil},
		{"bad-delay-not-shorter.toml", "[readiness] delay", 11, nil},
		{"bad-command-for-notify.toml", "[readiness] command", 9, nil},
		{"bad-interval-for-delay.toml", "[readiness] interval", 11, nil},
		// [upgrade] and [drain]
		{"bad-steering.toml", "[upgrade] steering", 9, nil},
		{"bad-control-relative.toml", "[control] socket", 9, nil},
		{"bad-control-group.toml", "[control] group", 9, nil},
		{"bad-log-format.toml", "[log] format", 9, nil},
		{"bad-metrics-address.toml", "[metrics] address", 9, nil},
		{"bad-metrics-port.toml", "[metrics] address", 9, nil},
		{"bad-service-name.toml", "[service] name", 2, nil},
		{"bad-user-unknown.toml", "[service] user", 3, nil},
		{"bad-group-without-user.toml", "[service] group", 3, nil},
		{"bad-no-new-privs.toml", "[service] no_new_privs", 3, nil},
		{"bad-signal.toml", "[drain] signal", 9, nil},
		{"bad-signal-kill.toml", "[drain] signal", 9, nil},
		{"bad-signal-stop.toml", "[drain] signal", 9, nil},
	}
	seen := make(map[string]bool)
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			path := configFile(tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseConfig("/etc/baton/"+tt.file, data)
			if err == nil {
				t.Fatalf("ParseConfig succeeded: %+v", c)
			}
			t.Log(err)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
			}
			if ce.File != "/etc/baton/"+tt.file || ce.Key != tt.key || ce.Line != tt.line {
				t.Errorf("File, Key, Line = %q, %q, %d; want %q, %q, %d", ce.File, ce.Key, ce.Line, "/etc/baton/"+tt.file, tt.key, tt.line)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, ce.File+": ") || !strings.Contains(msg, tt.key) {
				t.Errorf("message %q does not start with the file or lacks the key %q", msg, tt.key)
			}
			if tt.line > 0 && !strings.Contains(msg, "line "+strconv.Itoa(tt.line)+":") {
				t.Errorf("message %q lacks line %d", msg, tt.line)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}

	// Every bad sample is in the table.
	files, err := filepath.Glob(configFile("bad-*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s has no test case", f)
		}
	}
}

func TestParseConfigSyntaxErrorKeepsPosition(t *testing.T) {
	_, err := LoadConfig(configFile("bad-syntax.toml"))
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v does not wrap a toml.ParseError", err)
	}
	if pe.Position.Line != 6 || pe.Position.Col != 11 {
		t.Errorf("position = line %d, column %d; want line 6, column 11", pe.Position.Line, pe.Position.Col)
	}
	if !strings.Contains(err.Error(), "column 11") {
		t.Errorf("message %q lacks the column", err)
	}
}

func TestParseConfigUnknownKeysAllListed(t *testing.T) {
	_, err := LoadConfig(configFile("bad-unknown-many.toml"))
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("error %v is not ErrUnknownKey", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"line 1: unknown key verbose",
		"[service] workdir (line 4)",
		"[[listener]] adress (line 8)",
		"[drain] sigal (line 11)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestParseConfigUnknownKeyHint(t *testing.T) {
	tests := []struct{ file, hint string }{
		{"bad-unknown-section-key.toml", `did you mean "command"?`},
		{"bad-unknown-case.toml", `did you mean "timeout"?`},
		{"bad-unknown-top.toml", `did you mean "service"?`},
	}
	for _, tt := range tests {
		_, err := LoadConfig(configFile(tt.file))
		if err == nil || !strings.Contains(err.Error(), tt.hint) {
			t.Errorf("%s: error %v lacks the hint %q", tt.file, err, tt.hint)
		}
	}
}

// Errors in a later [[listener]] point at its lines, not the first one's.
func TestParseConfigListenerLines(t *testing.T) {
	text := `[service]
command = ["app"]

[[listener]]
name = "a"
address = "127.0.0.1:1"

[[listener]]
name = "b"
address = "127.0.0.1:2"

[[listener]]
address = "127.0.0.1:3"
network = "tcp"
name = "c"
mode = "0600"
`
	_, err := ParseConfig("t.toml", []byte(text))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 16 || ce.Key != "[[listener]] mode" {
		t.Errorf("error %v; want line 16, key [[listener]] mode", err)
	}

	inline := `listener = [
  { name = "a", address = "127.0.0.1:1" },
  { name = "b", address = "127.0.0.1:2" },
  { name = "c", address = "127.0.0.1:3", mode = "0600" },
]
[service]
command = ["app"]
`
	_, err = ParseConfig("t.toml", []byte(inline))
	if !errors.As(err, &ce) || ce.Line != 4 || ce.Key != "[[listener]] mode" {
		t.Errorf("error %v; want line 4, key [[listener]] mode", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := LoadConfig(path)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != path {
		t.Fatalf("error %v is not a *ConfigError for %s", err, path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}
}

func TestConfigErrorFormat(t *testing.T) {
	inner := errors.New("boom")
	tests := []struct {
		err  *ConfigError
		want string
	}{
		{&ConfigError{File: "/etc/baton/web.toml", Line: 7, Key: "[drain] timeout", Err: inner}, "/etc/baton/web.toml: line 7: [drain] timeout: boom"},
		{&ConfigError{File: "/etc/baton/web.toml", Key: "[[listener]]", Err: inner}, "/etc/baton/web.toml: [[listener]]: boom"},
		{&ConfigError{File: "/etc/baton/web.toml", Line: 3, Key: "[service] comand", Err: &unknownKeyError{}}, "/etc/baton/web.toml: line 3: unknown key [service] comand"},
	}
	for _, tt := range tests {
		// The format is the contract for operators, so this one test does
		// compare whole strings.
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	if !errors.Is(tests[0].err, inner) {
		t.Error("ConfigError does not unwrap to Err")
	}
}

func TestConfigListenersEqual(t *testing.T) {
	cfg := func(specs ...handoff.ListenerSpec) *Config { return &Config{Listeners: specs} }
	http := handoff.ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:8080"}
	admin := handoff.ListenerSpec{Name: "admin", Network: "unix", Address: "/run/admin.sock", Mode: 0o660}
	with := func(s handoff.ListenerSpec, f func(*handoff.ListenerSpec)) handoff.ListenerSpec { f(&s); return s }

	equal := []struct {
		name string
		a, b *Config
	}{
		{"same", cfg(http, admin), cfg(http, admin)},
		{"both nil", nil, nil},
	}
	for _, tt := range equal {
		if err := ListenersEqual(tt.a, tt.b); err != nil {
			t.Errorf("%s: ListenersEqual = %v; want nil", tt.name, err)
		}
	}

	different := []struct {
		name string
		a, b *Config
		want string // part of the message
	}{
		{"address", cfg(http), cfg(with(http, func(s *handoff.ListenerSpec) { s.Address = "127.0.0.1:8081" })),
			`listener "http": address changed from "127.0.0.1:8080" to "127.0.0.1:8081"`},
		{"network", cfg(http), cfg(with(http, func(s *handoff.ListenerSpec) { s.Network = "tcp4" })),
			`listener "http": network changed from "tcp" to "tcp4"`},
		{"mode", cfg(admin), cfg(with(admin, func(s *handoff.ListenerSpec) { s.Mode = 0o600 })),
			`listener "admin": mode changed from 0660 to 0600`},
		{"added", cfg(http), cfg(http, admin), `listener "admin" added`},
		{"removed", cfg(http, admin), cfg(http), `listener "admin" removed`},
		{"renamed", cfg(http), cfg(with(http, func(s *handoff.ListenerSpec) { s.Name = "web" })), `listener "http" removed`},
		{"order", cfg(http, admin), cfg(admin, http), `listener "http" moved from position 1 to 2`},
		{"to none", cfg(http), nil, `listener "http" removed`},
	}
	for _, tt := range different {
		err := ListenersEqual(tt.a, tt.b)
		if !errors.Is(err, ErrListenersChanged) {
			t.Errorf("%s: ListenersEqual = %v; want ErrListenersChanged", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: message %q lacks %q", tt.name, err, tt.want)
		}
	}
}

// The key scanner finds every key the toml package reports, on a line that
// has the key's last part.
func TestConfigKeyLines(t *testing.T) {
	files, err := filepath.Glob(configFile("*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		md, err := toml.Decode(string(data), &v)
		if err != nil {
			continue
		}
		lines := strings.Split(string(data), "\n")
		kl := scanKeyLines(string(data))
		seen := make(map[string]int)
		for _, k := range md.Keys() {
			n := kl.nth(k.String(), seen[k.String()])
			seen[k.String()]++
			if n < 1 || n > len(lines) || !strings.Contains(lines[n-1], k[len(k)-1]) {
				t.Errorf("%s: key %s at line %d", f, k, n)
			}
		}
	}
}

// FuzzParseConfig checks that ParseConfig returns a valid Config or a
// *ConfigError for any text, and that the key scanner finds every key of any
// valid TOML on a line of the file.
//
// Most inputs the fuzzer makes are not TOML, and the fuzzer calls the target
// hundreds of thousands of times to minimize each new input that finds new
// code (while it shows "0/sec"), so the target does not decode such inputs
// a second time.
func FuzzParseConfig(f *testing.F) {
	files, err := filepath.Glob(configFile("*.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.toml", data)
		if err != nil {
			ce, ok := err.(*ConfigError)
			if !ok {
				t.Fatalf("error %v is a %T, not a *ConfigError", err, err)
			}
			if ce.File != "fuzz.toml" || ce.Err == nil || !strings.HasPrefix(err.Error(), "fuzz.toml: ") {
				t.Fatalf("bad ConfigError %#v", ce)
			}
			var pe toml.ParseError
			if errors.As(err, &pe) || errors.Is(err, errTooDeep) || len(data) > maxConfigSize {
				return // not TOML, or not for the toml package to decode
			}
		}

		// Keys are found on a line of the file whenever the text is TOML.
		var v map[string]any
		md, derr := toml.Decode(string(data), &v)
		if derr != nil {
			t.Fatalf("ParseConfig gave %v, not a syntax error, for text toml cannot decode: %v", err, derr)
		}
		kl := scanKeyLines(string(data))
		nlines := strings.Count(string(data), "\n") + 1
		seen := make(map[string]int)
		for _, k := range md.Keys() {
			n := kl.nth(k.String(), seen[k.String()])
			seen[k.String()]++
			if n < 1 || n > nlines {
				t.Errorf("key %s at line %d of %d", k, n, nlines)
			}
		}
		if err != nil {
			return
		}

		switch {
		case len(c.Service.Command) == 0 || c.Service.Command[0] == "":
			t.Fatalf("no program: %+v", c.Service)
		case len(c.Listeners) == 0:
			t.Fatal("no listeners")
		case c.Readiness.Timeout <= 0, c.Drain.Timeout <= 0, c.Drain.Grace < 0,
			c.Restart.Backoff <= 0, c.Restart.MaxBackoff < c.Restart.Backoff, c.Restart.ResetAfter <= 0:
			t.Fatalf("bad duration: %+v", c)
		case c.Drain.Signal == syscall.SIGKILL || c.Drain.Signal == syscall.SIGSTOP:
			t.Fatalf("signal %v", c.Drain.Signal)
		}
		if err := ListenersEqual(c, c); err != nil {
			t.Fatalf("ListenersEqual(c, c) = %v", err)
		}
	})
}

// Strings, arrays and inline tables that span lines or look like keys do not
// confuse the key scanner.
func TestConfigKeyLinesTricky(t *testing.T) {
	text := `a = """
b = "not a key"
[not.a.table]
"""
c = [ # comment with d = 1
  1979-05-27 07:32:00Z, '''lit''',
  { e = 1, "f\u0067" = '''
g = 2''' },
]
h = {i = [ "]", '}' ], j.k = 1}

[[x]]
"l.m" = 1
[[x]]
n = 1
`
	var v map[string]any
	md, err := toml.Decode(text, &v)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"a": 1, "c": 5, "c.e": 7, "c.fg": 7, "h": 10, "h.i": 10, "h.j.k": 10,
		"x": 12, `x."l.m"`: 13, "x.n": 15,
	}
	kl := scanKeyLines(text)
	for _, k := range md.Keys() {
		if _, ok := want[k.String()]; !ok {
			t.Errorf("toml has key %s, which the test does not expect", k)
		}
	}
	for k, line := range want {
		if got := kl.nth(k, 0); got != line {
			t.Errorf("line of %s = %d; want %d", k, got, line)
		}
	}
	if got := kl.nth("x", 1); got != 14 {
		t.Errorf("line of second x = %d; want 14", got)
	}
	if got := kl.line(1, "x", "n"); got != 15 {
		t.Errorf("line of x.n in element 1 = %d; want 15", got)
	}
	if got := kl.line(0, "x", "n"); got != 12 {
		t.Errorf("line of missing x.n in element 0 = %d; want 12 (its header)", got)
	}
}

// No text takes ParseConfig long: its time is linear in the size of the text,
// which is bounded, and it refuses the nesting that makes the toml package
// slow (seconds for 100 KB of one [a.a.a...] header) or run out of memory
// (100 KB of nested inline tables).
func TestParseConfigPathologicalInput(t *testing.T) {
	const size = 100 << 10
	head := "[service]\ncommand = [\"/srv/app\"]\n"
	listener := "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n"
	// repeat repeats unit, with %d for its number, to about size bytes.
	repeat := func(unit string) string {
		var b strings.Builder
		for i := 0; b.Len() < size; i++ {
			b.WriteString(strings.ReplaceAll(unit, "%d", strconv.Itoa(i)))
		}
		return b.String()
	}
	deep := func(open, inner, close string) string {
		n := size / (len(open) + len(close))
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}

	parses := []struct{ name, text string }{
		{"many listeners", head + repeat("[[listener]]\nname = \"l%d\"\naddress = \"127.0.0.1:0\"\n")},
		{"many inline listeners", "listener = [\n" + repeat("  { name = \"l%d\", address = \"127.0.0.1:0\" },\n") + "]\n" + head},
		{"many variables", listener + head + "[service.environment]\n" + repeat("V%d = \"%d\"\n")},
		{"long value", listener + head + "environment.LONG = \"" + strings.Repeat("x", size) + "\"\n"},
		{"long command", listener + "[service]\ncommand = [\"/srv/app\"" + repeat(", \"-v\"") + "]\n"},
		{"long multi-line string", listener + head + "environment.LONG = \"\"\"" + repeat("\"\"\\\"\n") + "\"\"\"\n"},
		{"comments", listener + head + repeat("# [[listener]] a = { b = [\n")},
	}
	fails := []struct {
		name, text string
		is         error // if set, errors.Is(err, is)
	}{
		{"deep table header", "[" + deep("a.", "b", "") + "]\n", errTooDeep},
		{"deep dotted key", deep("a.", "b", "") + " = 1\n", errTooDeep},
		{"deep inline tables", "a = " + deep("{ a = ", "1", " }") + "\n", errTooDeep},
		{"deep arrays", "a = " + deep("[", "", "]") + "\n", errTooDeep},
		{"deep arrays of inline tables", "a = " + deep("[{ a = ", "1", " }]") + "\n", errTooDeep},
		{"nested tables", repeat("[a%d.b.c.d.e.f.g]\nh = 1\n"), ErrUnknownKey},
		{"nested inline tables", repeat("a%d = { b = { c = { d = { e = { f = { g = 1 } } } } } }\n"), ErrUnknownKey},
		{"unknown keys", repeat("k%d = %d\n"), ErrUnknownKey},
		{"unknown keys in listeners", head + repeat("[[listener]]\nname = \"l%d\"\nk = %d\n"), ErrUnknownKey},
		{"long unknown key", strings.Repeat("k", size) + " = 1\n", ErrUnknownKey},
		{"long quoted key", "\"" + repeat("\\u0041") + "\" = 1\n", ErrUnknownKey},
		{"duplicate listener", head + listener + repeat("[[listener]]\nname = \"l%d\"\naddress = \"127.0.0.1:1\"\n"), nil},
		{"unterminated string", "a = \"" + strings.Repeat("x", size), nil},
		{"unterminated inline table", "a = {" + repeat("'"), nil},
		{"brackets", strings.Repeat("[", size), nil},
		{"too large", listener + head + "# " + strings.Repeat("x", maxConfigSize) + "\n", nil},
	}

	// Generous: a parse of any of these takes milliseconds (tens with -race).
	const limit = 2 * time.Second
	parse := func(t *testing.T, text string) (*Config, error) {
		t.Helper()
		type result struct {
			c   *Config
			err error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			c, err := ParseConfig("big.toml", []byte(text))
			done <- result{c, err}
		}()
		select {
		case r := <-done:
			t.Logf("%d bytes in %v", len(text), time.Since(start))
			return r.c, r.err
		case <-time.After(limit):
			t.Fatalf("ParseConfig of %d bytes took more than %v", len(text), limit)
			return nil, nil
		}
	}
	for _, tt := range parses {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parse(t, tt.text); err != nil {
				t.Errorf("ParseConfig: %.300v", err)
			}
		})
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.text)
			var ce *ConfigError
			switch {
			case !errors.As(err, &ce):
				t.Errorf("ParseConfig = %v; want a *ConfigError", err)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Errorf("ParseConfig = %.300v; want %v", err, tt.is)
			}
		})
	}
}

// Nesting is refused where it starts, before the text is decoded.
func TestParseConfigTooDeep(t *testing.T) {
	text := "[service]\ncommand = [\"/srv/app\"]\n\n[service.environment]\nA.b.c.d.e.f.g = \"x\"\n"
	_, err := ParseConfig("t.toml", []byte(text))
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, errTooDeep) || ce.Line != 5 {
		t.Errorf("error %v; want errTooDeep at line 5", err)
	}
}

// LoadConfig reads no more of a file than ParseConfig takes.
func TestLoadConfigTooLarge(t *testing.T) {
	_, err := LoadConfig("/dev/zero")
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != "/dev/zero" || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("error %v; want one for a file that is too large", err)
	}
}

// Keys are known only as the format spells them, whatever their value.
func TestParseConfigUnknownKeyWrongCase(t *testing.T) {
	for _, text := range []string{
		"drAin = \"SIGTERM\"\n",
		"[Listener]\nname = \"http\"\n",
		"[service]\nCommand = \"/srv/app\"\n",
	} {
		_, err := ParseConfig("t.toml", []byte(text))
		if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "case-sensitive") {
			t.Errorf("%q: error %v; want an unknown key, with a hint about case", text, err)
		}
	}
}

// A variable whose value is a table (written as a dotted name) is a value of
// the wrong type, not an unknown key.
func TestParseConfigEnvironmentTable(t *testing.T) {
	text := "[service]\ncommand = [\"/srv/app\"]\nenvironment.A.B = \"x\"\n\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n"
	_, err := ParseConfig("t.toml", []byte(text))
	var ce *ConfigError
	if !errors.As(err, &ce) || errors.Is(err, ErrUnknownKey) || ce.Key != "[service] environment.A" || ce.Line != 3 {
		t.Errorf("error %v; want a wrong type for [service] environment.A at line 3", err)
	}
}

// Every key of the format is in a good sample, so TestLoadConfigValid checks
// that the value checks read it.
func TestConfigKeysInSamples(t *testing.T) {
	files, err := filepath.Glob(configFile("good-*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	inSamples := make(map[string]bool)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		md, err := toml.Decode(string(data), &v)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range md.Keys() {
			inSamples[k.String()] = true
		}
	}
	for sec, keys := range configKeys {
		for _, k := range keys {
			if !inSamples[sec+"."+k] {
				t.Errorf("no good-*.toml has %s", displayKey([]string{sec, k}))
			}
		}
	}
}
