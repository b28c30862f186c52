package child

import (
	"context"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// maxStatus is the longest STATUS= text sent, in bytes: baton (like
// systemd) drops a notify datagram larger than 4096 bytes whole.
const maxStatus = 4000

// Ready tells the supervisor that the service is ready: READY=1. Send it
// once the listeners are being served, not before: under baton the new
// generation gets traffic from then on. Without NOTIFY_SOCKET (not under a
// supervisor) it does nothing and returns nil, as go-systemd's SdNotify
// documents.
func Ready() error {
	return notify(daemon.SdNotifyReady)
}

// Stopping tells the supervisor that the service is shutting down:
// STOPPING=1. It is informational (baton logs it); nothing waits for it.
func Stopping() error {
	return notify(daemon.SdNotifyStopping)
}

// Status sets the service's free-form status text: STATUS=text (shown by
// `baton status` and systemctl status). Newlines and NUL bytes, which would
// break the message, become spaces, and the text is cut to 4000 bytes.
func Status(text string) error {
	text = strings.NewReplacer("\n", " ", "\x00", " ").Replace(text)
	if len(text) > maxStatus {
		text = strings.ToValidUTF8(text[:maxStatus], "")
	}
	return notify("STATUS=" + text)
}

// notify sends one message to NOTIFY_SOCKET, if set. NOTIFY_SOCKET stays in
// the environment: later messages need it.
func notify(msg string) error {
	if _, err := daemon.SdNotify(false, msg); err != nil {
		return fmt.Errorf("child: notify %.40s: %w", msg, err)
	}
	return nil
}

// StopContext returns a copy of parent that is cancelled when the process
// gets SIGTERM (baton's and systemd's default stop signal) or SIGINT (^C),
// with context.Cause naming the signal. Until stop is called those signals
// no longer kill the process; calling stop (once the service has begun to
// shut down) restores their default action, so that a second signal kills
// it at once. A service whose stop signal is configured otherwise (baton's
// [drain] signal, systemd's KillSignal=) uses signal.NotifyContext with
// that signal.
func StopContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
}

// WatchdogInterval is the interval within which the supervisor expects
// WATCHDOG=1 (WATCHDOG_USEC), or 0 when no watchdog is set for this
// process: WATCHDOG_USEC unset, or WATCHDOG_PID naming another process
// (go-systemd's SdWatchdogEnabled). The error is for a malformed value.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false) // keep the variables: RunWatchdog may read them again
	if err != nil {
		return 0, fmt.Errorf("child: watchdog: %w", err)
	}
	return d, nil
}

// RunWatchdog sends WATCHDOG=1 now and then at half of WatchdogInterval
// until ctx is done, and returns nil then. Without a watchdog for this
// process it sends nothing and still waits for ctx, so that it can run
// beside the other parts of a service and stop with them. It returns at
// once only for a malformed WATCHDOG_USEC or WATCHDOG_PID.
//
// A ping that cannot be sent is not an error: the supervisor, missing it,
// is the one to act. Run it for the life of the process, not only while
// serving: a supervisor may keep watching while the service drains.
func RunWatchdog(ctx context.Context) error {
	interval, err := WatchdogInterval()
	if err != nil {
		return err
	}
	if interval == 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		_ = notify(daemon.SdNotifyWatchdog) // see above: a missed ping is the supervisor's to notice
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
