//go:build linux

package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the module's root, seen from this package's directory (the
// working directory of its tests).
const repoRoot = ".."

// binDir holds the baton that baton() builds once for every test.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-packaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir) // a temp dir; nothing to report if it lingers
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// baton is a static baton built from this tree, as `make build` builds it.
func baton(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "baton")
	buildOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("building baton: %w", err)
			return
		}
		cmd := exec.Command(gobin, "build", "-trimpath", "-o", path, "./cmd/baton")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/baton: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}

// needTool is the path of a program the test needs; the test skips,
// naming the Debian package that has it, when it is missing.
func needTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: install the Debian package %s to run this test", name, debianPackage)
	}
	return path
}

// unitFile is a systemd unit file under packaging/, or a drop-in for one
// (a file in a NAME.d/ directory: *.conf, or *.conf.example, which is
// shipped as an example and verified as if installed).
type unitFile struct {
	path string // relative to this directory
	unit string // the unit it is or extends, e.g. "baton@.service"
	drop bool
}

func unitFiles(t *testing.T) (units, dropins []unitFile) {
	t.Helper()
	unitExt := map[string]bool{".service": true, ".socket": true, ".timer": true, ".path": true, ".target": true, ".mount": true}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		dir := filepath.Base(filepath.Dir(path))
		switch name := d.Name(); {
		case strings.HasSuffix(dir, ".d") && (strings.HasSuffix(name, ".conf") || strings.HasSuffix(name, ".conf.example")):
			dropins = append(dropins, unitFile{path: path, unit: strings.TrimSuffix(dir, ".d"), drop: true})
		case unitExt[filepath.Ext(name)]:
			units = append(units, unitFile{path: path, unit: name})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(units) == 0 {
		t.Fatal("no unit files under packaging/")
	}
	return units, dropins
}

// installUnits writes every unit (and the given drop-ins) into dir as the
// package would install them, with /usr/bin/baton replaced by bin:
// systemd-analyze verify checks that every Exec*= program exists.
func installUnits(t *testing.T, dir, bin string, units []unitFile, dropins ...unitFile) {
	t.Helper()
	seen := map[string]bool{}
	for _, u := range append(units, dropins...) {
		dst := filepath.Join(dir, u.unit)
		if u.drop {
			dst = filepath.Join(dir, u.unit+".d", strings.TrimSuffix(filepath.Base(u.path), ".example"))
		} else if seen[u.unit] {
			t.Fatalf("two unit files named %s under packaging/", u.unit)
		}
		seen[u.unit] = true
		b, err := os.ReadFile(u.path)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/bin/baton"), []byte(bin))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// verify runs systemd-analyze verify on one unit file and returns what it
// printed: it exits 0 after many findings (an unknown key, a unit that
// another one needs and that fails to load), so any output is a finding.
func verify(t *testing.T, analyze, unitPath string) (string, error) {
	t.Helper()
	out, err := exec.Command(analyze, "verify", "--man=no", "--generators=no", unitPath).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestUnitFilesVerify: systemd-analyze verify passes, silently, on every
// unit file in packaging/, alone and with each of its drop-ins.
func TestUnitFilesVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	bin := baton(t)
	units, dropins := unitFiles(t)

	for _, u := range units {
		t.Run(u.path, func(t *testing.T) {
			dir := t.TempDir()
			installUnits(t, dir, bin, units)
			if out, err := verify(t, analyze, filepath.Join(dir, u.unit)); err != nil || out != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u.path, err, out)
			}
		})
	}
	for _, d := range dropins {
		t.Run(d.path, func(t *testing.T) {
			dir := t.TempDir()
			installUnits(t, dir, bin, units, d)
			if out, err := verify(t, analyze, filepath.Join(dir, d.unit)); err != nil || out != "" {
				t.Errorf("systemd-analyze verify %s with %s: %v\n%s", d.unit, d.path, err, out)
			}
		})
	}

	// The checks above mean something only if verify reads a drop-in next
	// to the unit and reports what it does not know.
	t.Run("catches a bad drop-in", func(t *testing.T) {
		dir := t.TempDir()
		installUnits(t, dir, bin, units)
		bad := filepath.Join(dir, "baton@.service.d", "bad.conf")
		if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bad, []byte("[Service]\nNoSuchSetting=1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, _ := verify(t, analyze, filepath.Join(dir, "baton@.service")); !strings.Contains(out, "NoSuchSetting") {
			t.Errorf("systemd-analyze verify did not report an unknown key in a drop-in; output:\n%s", out)
		}
	})
}

// unitSettings reads the Key=Value lines of a unit file (the last value of
// a key wins, as for most of systemd's settings).
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a setting: %q", path, line)
		}
		m[k] = v
	}
	return m
}

// TestServiceUnitDecisions pins the settings that baton's behaviour depends
// on; the comments in baton@.service say why each is so.
func TestServiceUnitDecisions(t *testing.T) {
	s := unitSettings(t, "systemd/baton@.service")
	for k, want := range map[string]string{
		"Type":                     "notify", // not notify-reload: systemd 252 (Debian 12) lacks it
		"NotifyAccess":             "main",
		"ExecStart":                "/usr/bin/baton run -c /etc/baton/%i.toml",
		"KillMode":                 "mixed", // baton drains its children itself
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "2", // a bad config: restarting does not help
		"RuntimeDirectory":         "baton",
		"RuntimeDirectoryPreserve": "yes", // shared by every instance
		"FileDescriptorStoreMax":   "16",
		"WantedBy":                 "multi-user.target",
	} {
		if s[k] != want {
			t.Errorf("baton@.service: %s=%s, want %s", k, s[k], want)
		}
	}
	if u, ok := s["User"]; ok {
		t.Errorf("baton@.service: User=%s; the template runs baton as root, the drop-in example changes that", u)
	}
	// ExecReload waits for the upgrade, and gives up before systemd would
	// kill it (TimeoutStartSec bounds ExecReload= too).
	reload := strings.Fields(s["ExecReload"])
	if len(reload) < 2 || reload[0] != "/usr/bin/baton" || reload[1] != "upgrade" || !strings.Contains(s["ExecReload"], " --wait ") {
		t.Fatalf("baton@.service: ExecReload=%s, want /usr/bin/baton upgrade --wait ...", s["ExecReload"])
	}
	var waitFor string
	for i, a := range reload {
		if a == "--timeout" && i+1 < len(reload) {
			waitFor = reload[i+1]
		}
	}
	wait, err1 := time.ParseDuration(waitFor)
	start, err2 := time.ParseDuration(s["TimeoutStartSec"])
	if err := errors.Join(err1, err2); err != nil || wait >= start {
		t.Errorf("baton@.service: ExecReload --timeout %q must be below TimeoutStartSec=%s (%v)", waitFor, s["TimeoutStartSec"], err)
	}
	stop, err := time.ParseDuration(s["TimeoutStopSec"])
	if err != nil || stop <= 30*time.Second {
		t.Errorf("baton@.service: TimeoutStopSec=%s must exceed the default [drain] timeout (30s)", s["TimeoutStopSec"])
	}

	d := unitSettings(t, "systemd/baton@.service.d/unprivileged.conf.example")
	for k, want := range map[string]string{
		"User":                  "baton",
		"AmbientCapabilities":   "CAP_BPF CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet": "CAP_BPF CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
		"Environment":           "XDG_RUNTIME_DIR=%t",
	} {
		if d[k] != want {
			t.Errorf("unprivileged.conf.example: %s=%s, want %s", k, d[k], want)
		}
	}
}

// TestUnitCommandsDriveBaton runs the unit's own ExecStart= and ExecReload=
// command lines (with %i's config in a temp dir) against the baton of this
// tree: baton starts, `systemctl reload` upgrades and reports success, and
// KillSignal= ends it with exit 0 (a stop is not a failure to systemd).
func TestUnitCommandsDriveBaton(t *testing.T) {
	bin := baton(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "web.toml")
	conf := fmt.Sprintf(`[service]
command = ["/bin/sleep", "600"]
[[listener]]
name = "http"
address = "127.0.0.1:0"
[readiness]
check = "delay"
delay = "50ms"
[drain]
timeout = "5s"
grace = "0s"
[control]
socket = %q
`, filepath.Join(dir, "control.sock"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := unitSettings(t, "systemd/baton@.service")
	argv := func(key string) []string {
		line := strings.ReplaceAll(s[key], "/etc/baton/%i.toml", cfg)
		line = strings.ReplaceAll(line, "/usr/bin/baton", bin)
		if strings.ContainsAny(line, `%$"'\`) {
			t.Fatalf("%s=%s: quoting or specifiers this test does not expand", key, s[key])
		}
		return strings.Fields(line)
	}

	start := argv("ExecStart")
	run := exec.Command(start[0], start[1:]...)
	stderr, err := run.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once baton has exited and waitErr is set; log is
	// the scanner's until then.
	exited := make(chan struct{})
	var waitErr error
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "process ready") {
				once.Do(func() { close(ready) })
			}
		}
		waitErr = run.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = run.Process.Kill() // os.ErrProcessDone after a clean stop
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("ExecStart: baton exited before the service was ready: %v\n%s", waitErr, log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("ExecStart: the service was not ready within 30s")
	}

	reload := argv("ExecReload")
	out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "upgrade complete: generation 2 serving") {
		t.Errorf("ExecReload: %v\n%s", err, out)
	}

	sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT}[s["KillSignal"]]
	if sig == 0 {
		t.Fatalf("KillSignal=%s: not one baton stops on", s["KillSignal"])
	}
	if err := run.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("baton after %s: %v, want exit 0\n%s", s["KillSignal"], waitErr, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("baton did not exit within 20s of %s", s["KillSignal"])
	}
}

// TestManPage: the man page renders without a warning, and documents every
// command `baton help` lists and the sections a man page needs.
func TestManPage(t *testing.T) {
	groff := needTool(t, "groff", "groff-base")
	out, err := exec.Command(groff, "-man", "-ww", "-z", "baton.1").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("groff -man -ww -z baton.1: %v\n%s", err, out)
	}
	if man, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command(man, "--warnings", "-l", "baton.1")
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		rendered, err := cmd.Output()
		if err != nil || stderr.Len() > 0 || !bytes.Contains(rendered, []byte("EXIT STATUS")) {
			t.Errorf("man --warnings -l baton.1: %v\n%s", err, stderr.String())
		}
	} else {
		t.Log("man not found (Debian package man-db): checked with groff alone")
	}

	page, err := os.ReadFile("baton.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "CONFIGURATION", "SIGNALS", "EXIT STATUS", "FILES", "SEE ALSO"} {
		if !regexp.MustCompile(`(?m)^\.SH "?` + sec + `"?$`).Match(page) {
			t.Errorf("baton.1 has no %s section", sec)
		}
	}
	help, err := exec.Command(baton(t), "help").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmds := regexp.MustCompile(`(?m)^  baton (\w+)`).FindAllSubmatch(help, -1)
	if len(cmds) == 0 {
		t.Fatalf("no commands in `baton help`:\n%s", help)
	}
	for _, c := range cmds {
		if !bytes.Contains(page, append([]byte("\n.B baton "), c[1]...)) {
			t.Errorf("baton.1's SYNOPSIS lacks `baton %s`, which `baton help` lists", c[1])
		}
	}
}

// TestSampleConfig: the example config passes `baton check`, and names the
// listener the example socket unit passes.
func TestSampleConfig(t *testing.T) {
	out, err := exec.Command(baton(t), "check", "-c", "examples/web.toml").CombinedOutput()
	if err != nil {
		t.Errorf("baton check -c examples/web.toml: %v\n%s", err, out)
	}
	sock := unitSettings(t, "systemd/baton@.socket")
	cfg, err := os.ReadFile("examples/web.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\nname = %q\n", sock["FileDescriptorName"]); !strings.Contains(string(cfg), want) {
		t.Errorf("examples/web.toml has no listener named %q, the example socket's FileDescriptorName", sock["FileDescriptorName"])
	}
}

// TestPkgVersion: the package version of each kind of `git describe`
// output, in the form nfpm reads as semver.
func TestPkgVersion(t *testing.T) {
	for _, c := range []struct{ describe, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc.1", "1.2.3-rc.1"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+git4.gabc1234.dirty"},
		{"v1.2.3-rc.1-4-gabc1234", "1.2.3-rc.1+git4.gabc1234"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"abc1234", "0.0.0+abc1234"},
		{"abc1234-dirty", "0.0.0+abc1234.dirty"},
		{"dev", "0.0.0+dev"},
	} {
		out, err := exec.Command("sh", "pkgversion.sh", c.describe).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != c.want {
			t.Errorf("pkgversion.sh %s = %q (%v), want %q", c.describe, got, err, c.want)
		}
	}
}
