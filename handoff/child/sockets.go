package child

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
)

// ErrNoSocket is wrapped by the error for a socket that was not passed
// under the name and of the kind asked for.
var ErrNoSocket = errors.New("no such socket passed")

// Socket is one descriptor passed by socket activation. Exactly one of
// Listener, PacketConn and File is set.
type Socket struct {
	// Name is its LISTEN_FDNAMES entry, or "LISTEN_FD_<fd>" when it has
	// none (go-systemd's name for it). Names need not be unique.
	Name string
	// FD is the number it was passed as (3, 4, ...). A Listener or
	// PacketConn holds a close-on-exec duplicate of it, and FD itself is
	// then closed; a File is FD, made close-on-exec.
	FD int
	// Listener is set for a listening stream socket (TCP, unix stream).
	Listener net.Listener
	// PacketConn is set for a datagram socket (UDP, unixgram).
	PacketConn net.PacketConn
	// File is set for any other descriptor (a FIFO, a connected socket
	// from an fd store), as passed (only made close-on-exec).
	File *os.File
}

// taken is what socket activation passed, taken from the environment on
// the first call only: it is unset afterwards, and each fd can become a
// listener only once. Every later call returns the same values.
var taken = sync.OnceValues(take)

func take() ([]Socket, error) {
	files := activation.Files(true) // nil unless LISTEN_PID is ours; unsets LISTEN_* in any case
	socks := make([]Socket, 0, len(files))
	var errs []error
	for i, f := range files {
		s := Socket{Name: f.Name(), FD: 3 + i}
		if err := s.adopt(f); err != nil {
			errs = append(errs, fmt.Errorf("child: fd %d (%q), passed in LISTEN_FDS: %w", s.FD, s.Name, err))
			continue
		}
		socks = append(socks, s)
	}
	return socks, errors.Join(errs...)
}

// adopt makes f s's Listener, PacketConn or File. Only a socket that
// listens becomes a Listener and only a datagram socket a PacketConn (the
// conversion changes f's blocking mode); anything else is left as it was
// passed. It fails if f is not open, or if Go's net package cannot use a
// socket of its kind (an address family it does not know); f is closed then.
func (s *Socket) adopt(f *os.File) error {
	kind, err := classify(f)
	if err != nil {
		return err
	}
	switch kind {
	case listening:
		ln, err := net.FileListener(f)
		if err != nil {
			_ = f.Close() // unusable; the error is the one that counts
			return err
		}
		s.Listener = ln
	case datagram:
		pc, err := net.FilePacketConn(f)
		if err != nil {
			_ = f.Close() // unusable; the error is the one that counts
			return err
		}
		s.PacketConn = pc
	default:
		s.File = f
		return nil
	}
	_ = f.Close() // the listener or conn holds a duplicate; closing ours cannot fail in a way that matters
	return nil
}

// Sockets returns every descriptor passed by socket activation, in fd
// order. None (not started by socket activation, or LISTEN_PID is another
// process's) is not an error. The error names each passed fd that could
// not be taken (not open, or a socket Go cannot use); the others are
// returned all the same.
func Sockets() ([]Socket, error) {
	socks, err := taken()
	return append([]Socket(nil), socks...), err
}

// Listeners returns the passed listening sockets by name, each name's in fd
// order.
func Listeners() (map[string][]net.Listener, error) {
	socks, err := taken()
	ls := make(map[string][]net.Listener)
	for _, s := range socks {
		if s.Listener != nil {
			ls[s.Name] = append(ls[s.Name], s.Listener)
		}
	}
	return ls, err
}

// Listener returns the first listening socket passed under name. Every
// call returns the same listener. When there is none, the error wraps
// ErrNoSocket and lists what was passed.
func Listener(name string) (net.Listener, error) {
	socks, err := taken()
	for _, s := range socks {
		if s.Name == name && s.Listener != nil {
			return s.Listener, nil
		}
	}
	return nil, missing("listener", name, socks, err)
}

// PacketConn returns the first datagram socket passed under name. Every
// call returns the same conn. When there is none, the error wraps
// ErrNoSocket and lists what was passed.
func PacketConn(name string) (net.PacketConn, error) {
	socks, err := taken()
	for _, s := range socks {
		if s.Name == name && s.PacketConn != nil {
			return s.PacketConn, nil
		}
	}
	return nil, missing("datagram socket", name, socks, err)
}

// missing is the error for a socket of kind named name that is not among
// socks; takeErr is what taking them reported.
func missing(kind, name string, socks []Socket, takeErr error) error {
	if len(socks) == 0 {
		return errors.Join(fmt.Errorf("child: %s %q: %w: none at all (not started by socket activation with LISTEN_FDS, or LISTEN_PID is not this process)", kind, name, ErrNoSocket), takeErr)
	}
	passed := make([]string, len(socks))
	for i, s := range socks {
		passed[i] = fmt.Sprintf("%s (fd %d, %s)", s.Name, s.FD, s.kind())
	}
	return errors.Join(fmt.Errorf("child: %s %q: %w; passed: %s", kind, name, ErrNoSocket, strings.Join(passed, ", ")), takeErr)
}

// kind names what s is, for messages.
func (s Socket) kind() string {
	switch {
	case s.Listener != nil:
		return s.Listener.Addr().Network() + " listener"
	case s.PacketConn != nil:
		return s.PacketConn.LocalAddr().Network() + " datagram socket"
	default:
		return "other"
	}
}
