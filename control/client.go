package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// maxResponseBytes bounds one response line; a status with many
// generations is a few kilobytes.
const maxResponseBytes = 1 << 20

// ConnectError is Do's error when the socket cannot be reached.
type ConnectError struct {
	Path string
	Err  error // usually a syscall.Errno
}

func (e *ConnectError) Error() string {
	msg := fmt.Sprintf("connect to %s: %v", e.Path, e.Err)
	switch {
	case errors.Is(e.Err, syscall.ENOENT), errors.Is(e.Err, syscall.ECONNREFUSED):
		msg += " (is baton running?)"
	case errors.Is(e.Err, syscall.EACCES):
		msg += " (the socket is for root, baton's user and its control group)"
	}
	return msg
}

func (e *ConnectError) Unwrap() error { return e.Err }

// RemoteError is an "error" response: the server refused or could not serve
// the request.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return "baton answered: " + e.Message }

// Do sends req to the server at socketPath and calls onResponse for each
// "status", "flags", "event" and "result" line of the answer. An "error"
// line ends it with a *RemoteError; an error from onResponse ends it with
// that error. ctx bounds the whole exchange. Other errors say what failed:
// connecting (a *ConnectError), sending, reading, or an answer that is not
// the protocol's or ends before its last line.
func Do(ctx context.Context, socketPath string, req Request, onResponse func(Response) error) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("connect to %s: %w", socketPath, ctx.Err())
		}
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return &ConnectError{Path: socketPath, Err: err}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Now()) // interrupts the exchange; the read reports it
	})
	defer stop()

	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	// A server that refuses the peer may close before reading the request;
	// its answer is still there to read, so a failed write is only
	// reported if no answer comes.
	_, writeErr := conn.Write(append(line, '\n'))

	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), maxResponseBytes)
	for sc.Scan() {
		raw := append(json.RawMessage(nil), sc.Bytes()...)
		var r Response
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: answer is not the control protocol: %w", socketPath, err)
		}
		if r.Version != ProtocolVersion {
			return fmt.Errorf("%s: answer in protocol version %d; this baton speaks version %d", socketPath, r.Version, ProtocolVersion)
		}
		r.Raw = raw
		switch r.Type {
		case TypeError:
			return &RemoteError{Message: r.Error}
		case TypeStatus, TypeResult, TypeFlags:
			if err := onResponse(r); err != nil {
				return err
			}
			// The last line. Whatever follows (a reset because the server
			// closed with our bytes unread, say) does not matter.
			return nil
		case TypeEvent:
			if err := onResponse(r); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: answer of unknown type %q", socketPath, r.Type)
		}
	}
	err = sc.Err()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", socketPath, ctx.Err())
	case err != nil:
		return fmt.Errorf("%s: read answer: %w", socketPath, err)
	case writeErr != nil:
		return fmt.Errorf("%s: send request: %w", socketPath, writeErr)
	default:
		return fmt.Errorf("%s: baton closed the connection before its answer was complete", socketPath)
	}
}
