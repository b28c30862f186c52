package child

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	conn := fakeNotify(t)
	for _, c := range []struct {
		name string
		send func() error
		want string
	}{
		{"Ready", Ready, "READY=1"},
		{"Stopping", Stopping, "STOPPING=1"},
		{"Status", func() error { return Status("serving 3 listeners") }, "STATUS=serving 3 listeners"},
		{"Status with newlines", func() error { return Status("line 1\nline 2\x00") }, "STATUS=line 1 line 2 "},
		{"long Status", func() error { return Status(strings.Repeat("é", 3000)) }, "STATUS=" + strings.Repeat("é", maxStatus/2)},
	} {
		if err := c.send(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := receive(t, conn); got != c.want {
			t.Errorf("%s sent %.60q, want %.60q", c.name, got, c.want)
		}
	}
}

// TestNotifyNoSocket: not under a supervisor, notifying does nothing.
func TestNotifyNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, send := range []func() error{Ready, Stopping, func() error { return Status("x") }} {
		if err := send(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v", err)
		}
	}
}

func TestNotifyFailure(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := Ready(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Ready to a missing socket = %v, want fs.ErrNotExist", err)
	}
}

// TestWatchdog: WATCHDOG=1 right away and then at half the interval, until
// the context is done.
func TestWatchdog(t *testing.T) {
	conn := fakeNotify(t)
	const interval = 200 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, err := WatchdogInterval(); d != interval || err != nil {
		t.Fatalf("WatchdogInterval = %v, %v; want %v", d, err, interval)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx) }()
	var at []time.Time
	for range 4 {
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
		at = append(at, time.Now())
	}
	cancel()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("RunWatchdog = %v", err)
	}
	// Half the interval apart (a ticker may catch up a late tick, so
	// only the average is checked), and well within the interval.
	if avg := at[3].Sub(at[0]) / 3; avg < interval/4 || avg > interval {
		t.Errorf("pings %v apart on average, want about %v", avg, interval/2)
	}
}

// TestWatchdogOff: without a watchdog for this process nothing is sent,
// and RunWatchdog waits for its context all the same.
func TestWatchdogOff(t *testing.T) {
	for _, c := range []struct{ name, usec, pid string }{
		{"no WATCHDOG_USEC", "", ""},
		{"another process's", "100000", strconv.Itoa(os.Getppid())},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := fakeNotify(t)
			t.Setenv("WATCHDOG_USEC", c.usec)
			t.Setenv("WATCHDOG_PID", c.pid)
			if d, err := WatchdogInterval(); d != 0 || err != nil {
				t.Fatalf("WatchdogInterval = %v, %v; want 0, nil", d, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- RunWatchdog(ctx) }()
			select {
			case err := <-done:
				t.Fatalf("RunWatchdog returned %v before its context was done", err)
			default:
			}
			cancel()
			if err := waitErr(t, done); err != nil {
				t.Fatalf("RunWatchdog = %v", err)
			}
			// It has returned: whatever it sent is queued by now.
			if err := conn.SetReadDeadline(time.Now()); err != nil {
				t.Fatal(err)
			}
			if n, err := conn.Read(make([]byte, 100)); err == nil {
				t.Fatalf("sent %d bytes without a watchdog", n)
			}
		})
	}
}

func TestWatchdogMalformed(t *testing.T) {
	for _, c := range []struct{ usec, pid string }{{"soon", ""}, {"-5", ""}, {"0", ""}, {"100000", "me"}} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if err := RunWatchdog(context.Background()); err == nil { // returns at once
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: no error", c.usec, c.pid)
		}
	}
}

// TestStopContext: SIGTERM and SIGINT cancel the context, with the signal
// as the cause; stop cancels it too.
func TestStopContext(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		ctx, stop := StopContext(context.Background())
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			stop()
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			stop()
			t.Fatalf("%v did not cancel the context in 5 s", sig)
		}
		stop()
		if cause := context.Cause(ctx); cause == context.Canceled || !errors.Is(cause, context.Canceled) {
			t.Errorf("%v: cause %v, want the signal's", sig, cause)
		}
	}
	ctx, stop := StopContext(context.Background())
	stop()
	if ctx.Err() == nil {
		t.Error("stop did not cancel the context")
	}
}
