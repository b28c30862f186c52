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
	// Probation is the id of the promoted generation on probation (a
	// crash, liveness failure or failed analysis reverts it), 0 if none;
	// ProbationEnd is when its probation ends, in RFC 3339 format with
	// fractional seconds, "" if none.
	Probation    int    `json:"probation"`
	ProbationEnd string `json:"probation_end"`
	// Standby is the id of the generation the one on probation replaced,
	// kept running at weight 0 so that a revert is one change of weights;
	// 0 if none.
	Standby int `json:"standby"`
	// Failed says why the service is in the failed state (too many
	// reverts), where upgrades are refused unless forced; "" when it is
	// not.
	Failed string `json:"failed"`
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

// GenerationJSON is one generation: one version of the service, run as one
// or more instances (processes).
type GenerationJSON struct {
	// ID numbers generations from 1, in the order they were started.
	ID int `json:"id"`
	// State is "starting" (the candidate of an upgrade, before it takes
	// connections), "canary" (the candidate, taking part of them),
	// "serving", "standby" (replaced, kept running at weight 0 while its
	// successor is on probation), "draining" (replaced, its accept queues
	// emptying) or "stopping" (its stop signal was sent). New states may
	// be added.
	State string `json:"state"`
	// Strategy is how it is (or was) rolled out: "blue-green", "canary" or
	// "rolling", as [upgrade] strategy of its config says; "blue-green"
	// for the first generation and for rollbacks, which are promoted as
	// soon as they are ready.
	Strategy string `json:"strategy"`
	// PIDs are the main processes of its running instances, in instance
	// order; an empty array while every restart after a crash is pending,
	// or after giving up.
	PIDs []int `json:"pids"`
	// Started is when the generation was started, in RFC 3339 format with
	// fractional seconds.
	Started string `json:"started"`
	// Ready is true once every instance it should have runs a process
	// that passed its readiness check.
	Ready bool `json:"ready"`
	// TimeToReadyMS is how long the slowest instance took to become ready,
	// in milliseconds; 0 until all are.
	TimeToReadyMS int64 `json:"time_to_ready_ms"`
	// Executable is the path of the program started, as resolved when a
	// process last started.
	Executable string `json:"executable"`
	// SHA256 is the hex SHA-256 of that file then; "" if it could not be
	// read.
	SHA256 string `json:"sha256"`
	// Restarts counts the restarts after crashes of all its instances
	// since their counts were last reset.
	Restarts int `json:"restarts"`
	// GaveUp is true when it crashed more often than [restart] max_tries
	// allows: no process, no more restarts.
	GaveUp bool `json:"gave_up"`
	// Status is the last STATUS= its first process sent to NOTIFY_SOCKET,
	// or "".
	Status string `json:"status"`
	// Instances are its instances, in order.
	Instances []InstanceJSON `json:"instances"`
	// Weight is the percent of new connections the generation should get:
	// 100 for the serving generation outside an upgrade, the candidate's
	// step or share of instances during one (the serving generation has the
	// rest), 0 for the others.
	Weight int `json:"weight"`
	// Share is the percent of new connections it did get since the weights
	// last changed (one decimal), or null when that is not known: no
	// connection yet, no steered listener, or a generation that is neither
	// serving nor the candidate.
	Share *float64 `json:"share"`
	// ShareEstimated is true when some listener is in shared mode, where
	// the kernel spreads connections over every process that accepts: Share
	// is then the generation's part of the running processes, not a count.
	ShareEstimated bool `json:"share_estimated"`
	// Connections is how many new connections the steering programs gave it
	// since the weights last changed (steered listeners only; 0 otherwise).
	Connections uint64 `json:"connections"`
	// Step is the canary's current step, from 1; 0 before the first (while
	// its instances start), steps+1 once past the last (moving to 100%).
	// Steps is how many steps its config has. Both are 0 for other
	// strategies.
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Holding is true when the canary's current step lasts until `baton
	// promote` (a step without pause).
	Holding bool `json:"holding"`
	// Aborting says why the upgrade to this generation is being undone
	// (a failure, or `baton abort`); "" when it is not.
	Aborting string `json:"aborting"`
	// RevertOf is the generation this one was started to revert: a
	// generation reverted during its probation without a standby keeps
	// serving until the one it replaced, started again from its pinned
	// config and executable as this generation, is ready. 0 otherwise.
	RevertOf int `json:"revert_of"`
}

// InstanceJSON is one instance of a generation: one process, restarted
// after a crash.
type InstanceJSON struct {
	// Index numbers the generation's instances from 0, as in the log and
	// in events.
	Index int `json:"index"`
	// State is "running", "draining" (unrouted, its accept queue
	// emptying) or "stopping" (its stop signal was sent).
	State string `json:"state"`
	// PID is its process, 0 while a restart is pending.
	PID int `json:"pid"`
	// Ready is true once its process passed its readiness check.
	Ready bool `json:"ready"`
	// TimeToReadyMS is how long that took, in milliseconds; 0 until ready.
	TimeToReadyMS int64 `json:"time_to_ready_ms"`
	// Routed is true when it gets new connections.
	Routed bool `json:"routed"`
	// Restarts counts its restarts after crashes since the count was last
	// reset.
	Restarts int `json:"restarts"`
	// GaveUp is true when it crashed more often than [restart] max_tries
	// allows.
	GaveUp bool `json:"gave_up"`
	// Status is the last STATUS= its process sent, or "".
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
	// crashed, gave-up, step, unhealthy, confirmed, reverted, failed-state
	// or analysis (supervisor.Event* documents each); new kinds may be
	// added.
	Kind string `json:"kind"`
	// Generation is the generation it happened to.
	Generation int `json:"generation"`
	// Instance (spawned, ready, stopping, crashed, gave-up, unhealthy) is
	// the instance it happened to, from 0; 0 for the other kinds.
	Instance int `json:"instance"`
	// PID is the process involved, 0 where none is.
	PID int `json:"pid"`
	// Replaces is, for promoted, the generation replaced, and for
	// reverted, the generation that serves again (or whose config and
	// executable start again); 0 otherwise.
	Replaces int `json:"replaces"`
	// Rollback (promoted and failed) is true when the upgrade was a
	// rollback.
	Rollback bool `json:"rollback"`
	// Reason says why (failed, stopping, crashed, gave-up, unhealthy,
	// reverted, failed-state); for analysis, the measurement's outcome
	// ("pass", "fail" or "inconclusive") followed by ": " and its figures;
	// for flag, the change: "search_v2: 0% -> 10% (operator)". Meant for
	// people: Cause, Outcome and Flag say the same for programs.
	Reason string `json:"reason"`
	// DurationMS is, in milliseconds, the time to ready (ready), the time
	// since the generation was replaced (retired), the step's pause
	// (step; 0: the step holds until `baton promote`, or is one instance
	// of a rolling update), or the probation passed (confirmed); 0
	// otherwise.
	DurationMS int64 `json:"duration_ms"`
	// Weight is, for step, the percent of new connections the candidate
	// is to get from now on, and for flag, the flag's new value (0 off,
	// 100 on, else the percent of keys it is on for); 0 for the other
	// kinds.
	Weight int `json:"weight"`
	// Step and Steps (step, canary only) are the canary step begun, from
	// 1, and how many its config has; 0 for a rolling update's steps and
	// for the other kinds.
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Aborted (failed only) is true when the upgrade was undone by `baton
	// abort`, not by a failure.
	Aborted bool `json:"aborted"`
	// Flag (flag only) is the feature flag that changed; "" otherwise.
	Flag string `json:"flag"`
	// By (flag): who changed it: "operator", "config" or "analysis".
	By string `json:"by"`
	// Cause (reverted only) is what reverted the generation: "crash",
	// "liveness" (a health check or the watchdog), "analysis", "rollback"
	// or "abort"; more may be added. "" otherwise.
	Cause string `json:"cause"`
	// Outcome (analysis only) is the measurement's outcome: "pass", "fail"
	// or "inconclusive"; "" otherwise.
	Outcome string `json:"outcome"`
	// RevertOf (promoted only) is the generation whose revert this
	// promotion completes (it had no standby: the generation it replaced
	// was started again); 0 otherwise.
	RevertOf int `json:"revert_of"`
}

// FlagsJSON is the answer to flags: the feature flags baton serves to the
// service's processes.
type FlagsJSON struct {
	// Version is the flags file's version, one higher at every change; 0
	// when the config declares no flag (no file is written).
	Version int64 `json:"version"`
	// File is the flags file the processes read (its path is in their
	// BATON_FLAGS_FILE).
	File string `json:"file"`
	// Flags are the declared flags, by name; an empty array when none is.
	Flags []FlagJSON `json:"flags"`
}

// FlagJSON is one feature flag.
type FlagJSON struct {
	// Name is the flag's name, as [flags] declares it.
	Name string `json:"name"`
	// Percent is its value: 0 (off), 100 (on), or the percent of keys it
	// is on for.
	Percent int `json:"percent"`
	// Default is the value the config gives it.
	Default int `json:"default"`
	// Set is true when its value was set (by `baton flag set`, or turned
	// off by its analysis) and is kept across restarts of baton and new
	// configs until `baton flag reset`; false when it follows the config.
	Set bool `json:"set"`
	// Description is the config's description, or "".
	Description string `json:"description"`
	// OffOn is "analysis" when a failed analysis of the serving generation
	// turns the flag off while it is on; "" otherwise.
	OffOn string `json:"off_on"`
	// Changed is when its value last changed (or baton started), RFC 3339
	// with fractional seconds.
	Changed string `json:"changed"`
	// By is who changed it last: "config", "operator" or "analysis".
	By string `json:"by"`
}
