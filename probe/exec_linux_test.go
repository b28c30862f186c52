//go:build linux

package probe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExecSucceedsOnceTheCommandDoes(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Exec{Command: []string{"/bin/sh", "-c", `test -e "$FLAG"`}, Env: []string{"FLAG=" + flag},
			Interval: 10 * time.Millisecond}.Wait(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("ready before the flag existed: %v", err)
	case <-time.After(50 * time.Millisecond): // a few failed tries; not a handshake stand-in
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestExecGivesUpWithTheLastReason(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := Exec{Command: []string{"/bin/sh", "-c", "echo not yet >&2; exit 3"}, Interval: 20 * time.Millisecond}.Wait(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not yet") ||
		!strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("err = %v; want the deadline and the last try's output and status", err)
	}
}

// TestExecKillsAHangingCheck: a check that hangs is killed with its process
// group when the deadline passes, and Wait returns promptly.
func TestExecKillsAHangingCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Exec{Command: []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, Interval: time.Second}.Wait(ctx)
	if err == nil {
		t.Fatal("a hanging check passed")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Wait took %s after the deadline", took)
	}
}

func TestDelay(t *testing.T) {
	if err := Delay(context.Background(), 10*time.Millisecond); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Delay(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled delay: %v", err)
	}
}

// TestExecRunsAsTheGivenUser: with a credential, the check runs as that
// user, not as baton.
func TestExecRunsAsTheGivenUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if err := (Exec{Command: []string{"/bin/sh", "-c", `test "$(id -u)" = 65534`}, Interval: time.Second, Credential: nobody}).Wait(ctx); err != nil {
		t.Errorf("check as nobody: %v", err)
	}
}

func TestExecCheckRunsOnce(t *testing.T) {
	if _, err := (Exec{Command: []string{"/bin/sh", "-c", "exit 0"}}).Check(context.Background()); err != nil {
		t.Errorf("pass: %v", err)
	}
	_, err := Exec{Command: []string{"/bin/sh", "-c", "echo degraded; exit 1"}}.Check(context.Background())
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Kind != "exec check" || ce.Output != "degraded" {
		t.Errorf("fail: %v", err)
	}
	if _, err := (Exec{}).Check(context.Background()); err == nil {
		t.Error("no command: no error")
	}
}

// TestExecCheckAsAProbe: Once bounds an exec check by the probe's timeout
// and kills it.
func TestExecCheckAsAProbe(t *testing.T) {
	start := time.Now()
	_, err := Once(context.Background(), Exec{Command: []string{"/bin/sh", "-c", "sleep 30"}}, 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("err = %v; want ErrTimeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}
