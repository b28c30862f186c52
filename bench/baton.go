//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// batonTarget runs the real bin/baton on the hello example, with the
// listener on 127.0.0.1:0; an upgrade is SIGHUP, done at the "promoted" log
// line of the next generation.
type batonTarget struct {
	batonBin, helloBin, dir string
	steering                string // "bpf" (refuse to start without kernel steering) or "shared"
	// content, if set, is the config instead of the hello one; its
	// [control] socket must be controlPath().
	content string

	cmd    *exec.Cmd
	lines  chan map[string]any // baton's JSON log lines; closed when its stderr ends
	exited chan struct{}       // closed once cmd.Wait has returned
	gen    int
	logBuf *strings.Builder // the whole log, for errors; written by the reader goroutine only until lines is closed
	recs   []logRecord      // the JSON lines, for the timeline; the same goroutine writes them, in the same span

	sent []sentUpgrade // each upgrade asked for, in order
}

// sentUpgrade is an upgrade the harness asked for: when it sent SIGHUP, and
// which generation was serving then.
type sentUpgrade struct {
	at   time.Time
	from int
}

func (b *batonTarget) configPath() string  { return filepath.Join(b.dir, "baton.toml") }
func (b *batonTarget) controlPath() string { return filepath.Join(b.dir, "control.sock") }

func (b *batonTarget) start() (string, error) {
	cfg := b.configPath()
	content := b.content
	if content == "" {
		content = fmt.Sprintf(`[service]
name = "bench-%s"
command = [%q]
environment = { GREETING_VERSION = "1" }

[[listener]]
name = "http"
address = "127.0.0.1:0"

[readiness]
timeout = "10s"

[upgrade]
steering = %q

[drain]
timeout = "30s"

[control]
socket = %q
`, b.steering, b.helloBin, b.steering, b.controlPath())
	}
	if err := os.WriteFile(cfg, []byte(content), 0o644); err != nil {
		return "", err
	}
	b.cmd = exec.Command(b.batonBin, "run", "-c", cfg, "--log-format", "json")
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := b.cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s (run `make build` first?): %w", b.batonBin, err)
	}
	b.lines, b.exited, b.logBuf = make(chan map[string]any, 10000), make(chan struct{}), &strings.Builder{}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			arrived := time.Now()
			b.logBuf.WriteString(sc.Text() + "\n")
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				b.recs = append(b.recs, logRecord{arrived: arrived, fields: m})
				select {
				case b.lines <- m:
				default: // nobody is waiting for that many lines
				}
			}
		}
		close(b.lines)
		_ = b.cmd.Wait() // the exit status is read from cmd.ProcessState by stop
		close(b.exited)
	}()
	m, err := b.waitLog("listener ready", 0, 15*time.Second)
	if err != nil {
		return "", err
	}
	addr, _ := m["address"].(string)
	// Generation 1 replaces nobody: it serves once it is ready, without a
	// "promoted" line.
	if _, err := b.waitLog("process ready", 1, 15*time.Second); err != nil {
		return "", err
	}
	b.gen = 1
	return addr, nil
}

// waitLog waits (bounded) for the log line msg, for generation gen if gen > 0.
func (b *batonTarget) waitLog(msg string, gen int, timeout time.Duration) (map[string]any, error) {
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-b.lines:
			if !ok {
				return nil, fmt.Errorf("baton exited before logging %q", msg)
			}
			if m["msg"] == msg && (gen == 0 || genOf(m) == gen) {
				return m, nil
			}
		case <-deadline:
			return nil, fmt.Errorf("no %q (gen %d) in baton's log after %v", msg, gen, timeout)
		}
	}
}

func (b *batonTarget) upgrade() error {
	t0 := time.Now()
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal baton: %w", err)
	}
	b.sent = append(b.sent, sentUpgrade{at: t0, from: b.gen})
	if _, err := b.waitLog("promoted", b.gen+1, 30*time.Second); err != nil {
		return err
	}
	b.gen++
	return nil
}

// stop sends baton SIGTERM (it drains and stops every generation) and waits
// for it; after 40 s it kills baton's process group.
func (b *batonTarget) stop() error {
	if b.cmd == nil || b.cmd.Process == nil {
		return nil
	}
	select {
	case <-b.exited:
		return errors.New("baton exited before it was stopped")
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM) // if it has just exited, exited is closed below
	select {
	case <-b.exited:
		if !b.cmd.ProcessState.Success() {
			return fmt.Errorf("baton: %v", b.cmd.ProcessState)
		}
		return nil
	case <-time.After(40 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL) // its children die with it (PDEATHSIG)
		<-b.exited
		return errors.New("baton did not exit within 40s after SIGTERM; killed")
	}
}

func (b *batonTarget) log() string {
	select {
	case <-b.exited:
		return b.logBuf.String()
	default:
		return "" // still being written
	}
}
