//go:build !unix

package child

import "os"

// sockKind is what a passed descriptor is, as far as Socket cares.
type sockKind int

const (
	other sockKind = iota
	listening
	datagram
)

// classify: there is no socket activation here (go-systemd's activation
// passes nothing outside unix), so it is never called with a descriptor.
func classify(f *os.File) (sockKind, error) {
	return other, nil
}
