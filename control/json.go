package control

// The JSON forms of the supervisor's status and events. They are part of the
// protocol (PROTOCOL.md): within a protocol version, fields may be added,
// never removed or changed. Every field is always present unless marked
// otherwise, so that a script can rely on it.

// StatusJSON is the state of a running baton.
type StatusJSON struct {
	// Service is the service's name ([service] name, or the config file's
	// base name).
	Service string `json:"service"`
	// Config is the path of the config file re-read at every upgrade.
	Config string `json:"config"`
	// BatonPID is the pid of `baton run`.
	BatonPID int `json:"baton_pid"`
	// Listeners are the sockets baton holds, in config order.
	Listeners []ListenerJSON `json:"listeners"`
	// Generations are the generations not yet retired, oldest first.
	Generations []GenerationJSON `json:"generations"`
	// Serving is the id of the generation new connections go to; 0 when
	// none does (before the first start, or after giving up).
	Serving int `json:"serving"`
	// Upgrade is the upgrade in progress, or null.
	Upgrade *UpgradeJSON `json:"upgrade"`
	// Stopping is true once baton was asked to stop (or gave up) and is
	// draining every generation.
	Stopping bool `json:"stopping"`
}

// ListenerJSON is one listening socket.
type ListenerJSON struct {
	// Name is the listener's name, as in LISTEN_FDNAMES.
	Name string `json:"name"`
	// Network is tcp, tcp4, tcp6, udp, udp4, udp6 or unix.
	Network string `json:"network"`
	// Address is the bound address (with the real port when the config
	// asked for port 0).
	Address string `json:"address"`
	// Mode is how new connections are routed: "steered" (a BPF program
	// picks the serving generation's socket) or "shared" (every generation
	// accepts on one socket).
	Mode string `json:"mode"`
	// Why says why this mode was chosen.
	Why string `json:"why"`
}

// GenerationJSON is one generation: one version of the service.
type GenerationJSON struct {
	// ID numbers generations from 1, in the order they were started.
	ID int `json:"id"`
	// State is "starting" (the candidate of an upgrade), "serving",
	// "draining" (replaced, its accept queues emptying) or "stopping" (its
	// stop signal was sent).
	State string `json:"state"`
	// PIDs are the generation's main processes: one, or none (an empty
	// array) while a restart after a crash is pending or after giving up.
	PIDs []int `json:"pids"`
	// Started is when the generation was started, in RFC 3339 format with
	// fractional seconds.
	Started string `json:"started"`
	// Ready is true once the current process passed its readiness check.
	Ready bool `json:"ready"`
	// TimeToReadyMS is how long the current process took to become ready,
	// in milliseconds; 0 until it is ready.
	TimeToReadyMS int64 `json:"time_to_ready_ms"`
	// Executable is the path of the program started, as resolved when its
	// process started.
	Executable string `json:"executable"`
	// SHA256 is the hex SHA-256 of that file when the process started; ""
	// if it could not be read.
	SHA256 string `json:"sha256"`
	// Restarts counts the restarts after crashes since the count was last
	// reset.
	Restarts int `json:"restarts"`
	// GaveUp is true when it crashed more often than [restart] max_tries
	// allows: no process, no more restarts.
	GaveUp bool `json:"gave_up"`
	// Status is the last STATUS= the process sent to NOTIFY_SOCKET, or "".
	Status string `json:"status"`
}

// UpgradeJSON is the upgrade in progress.
type UpgradeJSON struct {
	// Candidate is the id of the generation being started.
	Candidate int `json:"candidate"`
}

// EventJSON is one step of a generation's life.
type EventJSON struct {
	// Time is when it happened, in RFC 3339 format with fractional seconds.
	Time string `json:"time"`
	// Kind is spawned, ready, promoted, failed, draining, stopping, retired,
	// crashed or gave-up (supervisor.Event* documents each); new kinds may
	// be added.
	Kind string `json:"kind"`
	// Generation is the generation it happened to.
	Generation int `json:"generation"`
	// PID is the process involved, 0 where none is.
	PID int `json:"pid"`
	// Replaces (promoted only) is the generation replaced, 0 if none.
	Replaces int `json:"replaces"`
	// Rollback (promoted and failed) is true when the upgrade was a
	// rollback.
	Rollback bool `json:"rollback"`
	// Reason (failed, stopping, crashed, gave-up) says why.
	Reason string `json:"reason"`
	// DurationMS is, in milliseconds, the time to ready (ready) or the time
	// since the generation was replaced (retired); 0 otherwise.
	DurationMS int64 `json:"duration_ms"`
}
