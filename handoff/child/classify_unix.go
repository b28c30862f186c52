//go:build unix

package child

import (
	"os"

	"golang.org/x/sys/unix"
)

// sockKind is what a passed descriptor is, as far as Socket cares.
type sockKind int

const (
	other     sockKind = iota // not a socket, or a socket that neither listens nor takes datagrams
	listening                 // a stream socket that listens (SO_ACCEPTCONN)
	datagram                  // SOCK_DGRAM
)

// classify asks the kernel what f is, without changing its blocking mode
// (f.Fd would). It fails only if f is not an open descriptor.
func classify(f *os.File) (sockKind, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return other, err
	}
	kind, serr := other, error(nil)
	err = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if serr = unix.Fstat(int(fd), &st); serr != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return
		}
		typ, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		switch {
		case err != nil:
		case typ == unix.SOCK_DGRAM:
			kind = datagram
		case typ == unix.SOCK_STREAM:
			if on, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && on != 0 {
				kind = listening
			}
		}
	})
	if err == nil {
		err = serr
	}
	return kind, err
}
