// Package probe holds the readiness checks baton runs against a starting
// process, apart from sd_notify's READY=1, which arrives on the supervisor's
// notify socket. A check blocks until the process is judged ready or the
// context ends; it never decides on its own how long to wait: the caller's
// context carries the readiness timeout.
package probe
