package probe

import (
	"context"
	"fmt"
	"net"
	"time"
)

// TCP is a check that passes when a TCP connection to Address is
// established, as Kubernetes' tcpSocket does. The connection is closed at
// once; nothing is sent. It says the listening socket accepts connections
// into its queue, not that a process is taking them from it.
type TCP struct {
	Address string // "host:port"; "127.0.0.1:8080", "[::1]:8080"
}

// Check connects once and returns the time the connection took.
func (t TCP) Check(ctx context.Context) (time.Duration, error) {
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", t.Address)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("tcp check: %w", err) // *net.OpError names the address
	}
	_ = c.Close() // nothing was sent; a close error says nothing of the instance
	return took, nil
}
