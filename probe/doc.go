// Package probe holds the checks baton runs against its generations and the
// figures it judges them by. It is a set of mechanisms with no knowledge of
// the supervisor: each takes what it measures as an argument (an address, a
// pid, a URL, figures) and gives a result back.
//
//   - Readiness: Exec.Wait, Delay and Until block until a starting process
//     is judged ready or the caller's context ends; they never decide on
//     their own how long to wait. READY=1 from sd_notify arrives on the
//     supervisor's notify socket and is not here.
//   - Single checks (Check): HTTP, TCP and Exec.Check test an instance once,
//     bounded by their context, and report how long it took.
//   - Health: a Prober runs a Check on a schedule with Kubernetes' semantics
//     (interval, timeout, success and failure thresholds, initial delay),
//     reports each change of state and keeps counters for Snapshot.
//   - Figures: TreeUsage sums the memory and CPU time of a process tree from
//     /proc; Scrape reads a request counter and its errors from a Prometheus
//     endpoint.
//   - Analysis: Evaluate compares a candidate's figures for one interval
//     with its baseline's, and Analysis turns successive evaluations into a
//     verdict with a failure limit. Both are pure: no clock, no I/O.
//   - Hooks: RunHook runs a command with a timeout, stopping its whole
//     process group, and says why it failed.
//
// Invariant: nothing here outlives its context. A call returns promptly
// once its context ends, and by then every child process it started, with
// its whole process group, has exited or been sent SIGKILL.
package probe
