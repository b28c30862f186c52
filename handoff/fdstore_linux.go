package handoff

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// StoreFD asks the service manager that started baton to keep fd in its fd
// store under name (FDSTORE=1, sd_pid_notify_with_fds(3)), so that the
// socket outlives baton: after a restart, even one after a crash, it comes
// back in LISTEN_FDS with that name. It reports false, with no error, when
// baton runs without a manager (no NOTIFY_SOCKET). systemd keeps fds only
// where FileDescriptorStoreMax= allows; it ignores the rest and says so in
// its own log.
//
// poll false sends FDPOLL=0: systemd then does not watch the fd for errors,
// which it must not for a BPF map (it polls as EPOLLERR at once).
func StoreFD(name string, fd int, poll bool) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // unconnected, to send fds
	if err != nil {
		return false, fmt.Errorf("fd store: %w", err)
	}
	defer conn.Close()
	msg := fmt.Sprintf("FDSTORE=1\nFDNAME=%s", name)
	if !poll {
		msg += "\nFDPOLL=0"
	}
	to := &net.UnixAddr{Name: addr, Net: "unixgram"}
	if _, _, err := conn.WriteMsgUnix([]byte(msg), unix.UnixRights(fd), to); err != nil {
		return false, fmt.Errorf("fd store: send %q: %w", name, err)
	}
	return true, nil
}
