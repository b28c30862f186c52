// Package supervisor runs the generations of one service and moves traffic
// between them.
//
// A generation is one version of the service: one process started from one
// config, holding one socket per listener. One goroutine, the event loop in
// Run, owns every generation, timer and socket; everything else (signals,
// process exits, notify messages, readiness checks, timers, API calls) reaches
// it as an event on one channel, so no state is shared and nothing is locked.
//
// Invariants:
//   - At any time there is at most one serving generation (the one new
//     connections are routed to), at most one candidate (started, not yet
//     ready, receiving no traffic where steering is active), and any number
//     of retiring generations (draining or stopping).
//   - Listeners are created once, before the first generation, and held until
//     Run returns, so the address is never unlistened while baton runs: a
//     client that arrives while no process accepts waits in a backlog.
//   - Kernel-steered listeners: each generation has its own socket in one
//     SO_REUSEPORT group; the group's program routes every new connection to
//     the serving generation's socket. A retiring generation gets its stop
//     signal only after it is unrouted and its accept queue is empty.
//   - Shared listeners: every generation holds the same socket; a retiring
//     generation gets its stop signal as soon as its successor is promoted.
//   - An upgrade is decided (promoted or failed) before the next one starts;
//     upgrades asked for meanwhile are merged into one that follows it.
package supervisor
