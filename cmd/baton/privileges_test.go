//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// TestServiceRunsUnprivileged: baton (root) binds a port below 1024 and
// runs the service as nobody with no_new_privs; the service serves on the
// privileged port, through an upgrade.
func TestServiceRunsUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind a port below 1024 and to switch users")
	}
	port := freeLowPort(t)
	dir := t.TempDir()
	write := func(version string) string {
		cfg := writeHelloConfig(t, dir, version, "")
		content, _ := os.ReadFile(cfg)
		text := strings.Replace(string(content), "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", port), 1)
		text = strings.Replace(text, "[service]\n", "[service]\nuser = \"nobody\"\nno_new_privs = true\n", 1)
		os.WriteFile(cfg, []byte(text), 0o644)
		return cfg
	}
	cfg := write("1")
	b := startBaton(t, cfg)
	pid := int(b.waitLog("process ready")["pid"].(float64))
	checkIdentity(t, pid)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if _, err := loadgen.WaitFor(context.Background(), url, func(body string) bool { return strings.Contains(body, "generation 1 ") }, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	write("2")
	if out, code := runBaton(t, "upgrade", "--wait", "-c", cfg); code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", code, out)
	}
	body, err := loadgen.WaitFor(context.Background(), url, func(body string) bool { return strings.Contains(body, "generation 2 ") }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(body) // hello from generation 2 pid P (version 2)
	pid2, _ := strconv.Atoi(f[5])
	checkIdentity(t, pid2)
}

// checkIdentity: the process runs as nobody (65534), with no supplementary
// group but nobody's own, and with no_new_privs set.
func checkIdentity(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	if fields["Uid"] != "65534 65534 65534 65534" || fields["Gid"] != "65534 65534 65534 65534" {
		t.Errorf("pid %d: Uid %q Gid %q, want nobody's", pid, fields["Uid"], fields["Gid"])
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("pid %d: NoNewPrivs %q, want 1", pid, fields["NoNewPrivs"])
	}
	if fields["Groups"] != "" && fields["Groups"] != "65534" {
		t.Errorf("pid %d: supplementary groups %q, want nobody's own", pid, fields["Groups"])
	}
}

// freeLowPort finds a port below 1024 that nobody listens on, on 127.0.0.1.
func freeLowPort(t *testing.T) int {
	for port := 700; port < 1000; port++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Skip("no free port below 1024")
	return 0
}

// TestCommandNotExecutableByServiceUser: a command only root may execute
// is refused before anything starts, naming the user, instead of failing
// later in the exec shim.
func TestCommandNotExecutableByServiceUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	private := dir + "/hello-private"
	data, err := os.ReadFile(helloBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(private, data, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeHelloConfig(t, dir, "1", "")
	content, _ := os.ReadFile(cfg)
	text := strings.Replace(string(content), fmt.Sprintf("%q", helloBin), fmt.Sprintf("%q", private), 1)
	text = strings.Replace(text, "[service]\n", "[service]\nuser = \"nobody\"\n", 1)
	os.WriteFile(cfg, []byte(text), 0o644)
	out, code := runBaton(t, "run", "-c", cfg)
	if code != 1 || !strings.Contains(out, "not executable by user nobody") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}
