// Package handoff creates, holds and passes listening sockets, and speaks the
// child's side of systemd's protocols (socket activation and sd_notify).
//
// Every socket baton holds is a raw file descriptor that is close-on-exec and
// non-blocking. Descriptors are handed to children only through
// syscall.StartProcess, never through os.File.Fd (which would switch the
// shared open file description, and with it every holder, to blocking mode).
// A child receives fds 0, 1 and 2 and its listeners from fd 3 in listener
// order, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (set to the child's own
// pid by the exec shim, see RunShim), and nothing else of baton's.
package handoff
