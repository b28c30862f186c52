// Package child is what a Go service imports to run under baton. It speaks
// the service's side of systemd's protocols, so the same binary runs
// unchanged under baton, under plain systemd, and alone in tests:
//
//   - Socket activation: Listener, PacketConn, Listeners and Sockets give
//     the sockets passed from fd 3 (LISTEN_FDS, LISTEN_FDNAMES), by name.
//     They are taken from the environment once, on the first call, and only
//     when LISTEN_PID is this process (go-systemd's activation package),
//     which then removes LISTEN_* from the environment and makes the fds
//     close-on-exec, so that the service's own children never see them.
//   - Notification: Ready, Status and Stopping send READY=1, STATUS= and
//     STOPPING=1 to NOTIFY_SOCKET; without NOTIFY_SOCKET they do nothing.
//   - Stopping: StopContext is cancelled by SIGTERM or SIGINT.
//   - Watchdog: RunWatchdog sends WATCHDOG=1 at half the interval baton (or
//     systemd) asked for in WATCHDOG_USEC, when WATCHDOG_PID is this process.
//   - Feature flags: Flags answers "is this flag on for this key?" from the
//     defaults declared in code and the file baton names in
//     BATON_FLAGS_FILE (format: package handoff/flagfile), and follows the
//     file's changes while Flags.Watch runs.
//
// Nothing here starts a goroutine that outlives its caller's context:
// RunWatchdog and Flags.Watch run in the caller's goroutine until their
// context is done.
package child
