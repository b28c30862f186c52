package handoff

import (
	"fmt"
	"os"
)

// ListenerSpec describes one listening socket baton holds for the service.
// Listeners are handed to children in the order of their specs, from fd 3,
// and Name is the listener's entry in LISTEN_FDNAMES.
type ListenerSpec struct {
	Name    string      // LISTEN_FDNAMES entry: printable, no ':' , at most 255 bytes
	Network string      // "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6" or "unix"
	Address string      // "host:port" (host an IP literal or empty) or a unix socket path
	Mode    os.FileMode // unix sockets only: permission bits of the socket file; 0 means 0666 minus umask
	// Private: every instance gets a socket of its own on this address
	// (TCP, port 0: a free port each), which no other process shares, so
	// that a probe reaches exactly the instance it judges.
	Private bool
}

// IsUnix reports whether the listener is a unix stream socket.
func (s ListenerSpec) IsUnix() bool { return s.Network == "unix" }

// IsPacket reports whether the listener is a datagram (UDP) socket.
func (s ListenerSpec) IsPacket() bool {
	return s.Network == "udp" || s.Network == "udp4" || s.Network == "udp6"
}

func (s ListenerSpec) String() string {
	return fmt.Sprintf("listener %q (%s %s)", s.Name, s.Network, s.Address)
}
