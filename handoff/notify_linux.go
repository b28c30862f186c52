package handoff

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// NotifySocket is baton's own NOTIFY_SOCKET: a datagram socket in the
// abstract namespace (no file to clean up, reachable after a child drops
// privileges) with SO_PASSCRED, so that the kernel stamps every message with
// the sender's pid and a child cannot speak for another.
type NotifySocket struct {
	conn *net.UnixConn
	addr string
}

// Notification is one message received on the notify socket.
type Notification struct {
	PID    int               // sender's pid, from the kernel's credentials
	PGID   int               // sender's process group, read on arrival; 0 if it had exited
	Fields map[string]string // parsed KEY=VALUE pairs; nil when Err is set
	Err    error             // why the message was rejected, wrapping ErrNotifyMessage
}

// ListenNotify opens a new notify socket with a random abstract name.
func ListenNotify() (*NotifySocket, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	name := fmt.Sprintf("@baton/%d/notify-%s", os.Getpid(), hex.EncodeToString(b[:]))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: %w", name, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: %w", name, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", name, errors.Join(err, serr))
	}
	return &NotifySocket{conn: conn, addr: name}, nil
}

// Addr is the value for a child's NOTIFY_SOCKET.
func (n *NotifySocket) Addr() string { return n.addr }

// Close closes the socket; a Receive in progress returns net.ErrClosed.
func (n *NotifySocket) Close() error { return n.conn.Close() }

// Receive waits for the next message. Malformed messages are returned with
// Err set (and must be ignored by the caller); file descriptors sent along
// are closed at once, since baton takes none from its children. The error
// result is reserved for the socket itself failing or being closed.
func (n *NotifySocket) Receive() (Notification, error) {
	buf := make([]byte, MaxNotifyMessage+1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	for {
		nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return Notification{}, err
		}
		pid, credOK := closeRightsAndGetPID(oob[:noob])
		if !credOK {
			continue // no credentials: cannot attribute the message; drop it
		}
		// Read the group now: a short-lived sender (systemd-notify run by
		// the service) may be gone by the time the message is handled.
		note := Notification{PID: pid}
		if pgid, err := unix.Getpgid(pid); err == nil {
			note.PGID = pgid
		}
		switch {
		case flags&unix.MSG_TRUNC != 0 || nb > MaxNotifyMessage:
			note.Err = fmt.Errorf("%w: longer than %d bytes", ErrNotifyMessage, MaxNotifyMessage)
		case flags&unix.MSG_CTRUNC != 0:
			note.Err = fmt.Errorf("%w: too many file descriptors attached", ErrNotifyMessage)
		default:
			note.Fields, note.Err = ParseNotify(buf[:nb])
		}
		return note, nil
	}
}

func closeRightsAndGetPID(oob []byte) (pid int, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				_ = unix.Close(fd) // not ours to keep: baton takes no fds from children
			}
			continue
		}
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			pid, ok = int(cred.Pid), true
		}
	}
	return pid, ok
}
