package handoff

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h, as reported in tcpi_state

// QueueLen returns how much waits on a socket that nobody has taken yet.
// For a listening TCP socket (packet false) it is the number of established
// connections in its accept queue (TCP_INFO tcpi_unacked on a listener); any
// other TCP state is an error. For a UDP socket (packet true) it is
// ioctl(SIOCINQ), which for UDP is the payload size of the next datagram, not
// the sum over the queue: 0 means the queue is empty (or holds an empty
// datagram first).
func QueueLen(fd int, packet bool) (int, error) {
	if packet {
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return 0, fmt.Errorf("queue length of socket fd %d: ioctl SIOCINQ: %w", fd, err)
		}
		return n, nil
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("queue length of socket fd %d: getsockopt TCP_INFO: %w", fd, err)
	}
	if info.State != tcpListen {
		return 0, fmt.Errorf("queue length of socket fd %d: socket is not listening (TCP state %d): %w", fd, info.State, unix.EINVAL)
	}
	return int(info.Unacked), nil
}
