package handoff

import (
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ProgramFD and MapFD are the steering program's and socket array's fds,
// valid until Close: they are handed to a new baton (self-upgrade) or kept
// in systemd's fd store, so that a successor steers the same group with
// the same map instead of replacing the program.
func (s *Steering) ProgramFD() int { return s.prog.FD() }

// MapFD: see ProgramFD.
func (s *Steering) MapFD() int { return s.sockets.FD() }

// SteeringFromFDs takes over a steering program and its socket array that
// another baton made (see ProgramFD). The fds are duplicated; the caller
// keeps its own and may close them. The program stays attached to its
// group throughout: routing does not change until Select.
func SteeringFromFDs(progFD, mapFD int) (*Steering, error) {
	p, err := unix.FcntlInt(uintptr(progFD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("steering: take over program fd %d: %w", progFD, err)
	}
	prog, err := ebpf.NewProgramFromFD(p)
	if err != nil {
		_ = unix.Close(p)
		return nil, fmt.Errorf("steering: take over program fd %d: %w", progFD, err)
	}
	m, err := unix.FcntlInt(uintptr(mapFD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		_ = prog.Close()
		return nil, fmt.Errorf("steering: take over map fd %d: %w", mapFD, err)
	}
	sockets, err := ebpf.NewMapFromFD(m)
	if err != nil {
		_ = unix.Close(m)
		_ = prog.Close()
		return nil, fmt.Errorf("steering: take over map fd %d: %w", mapFD, err)
	}
	if sockets.Type() != ebpf.ReusePortSockArray {
		_ = sockets.Close()
		_ = prog.Close()
		return nil, fmt.Errorf("steering: fd %d is a %s map, not a socket array", mapFD, sockets.Type())
	}
	info, err := prog.Info()
	if err != nil || info.Type != ebpf.SkReuseport {
		_ = sockets.Close()
		_ = prog.Close()
		return nil, fmt.Errorf("steering: fd %d is not an SK_REUSEPORT program", progFD)
	}
	migrates, _ := kernelMigrates() // how the program was loaded is not recorded; the kernel's ability is what counts
	return &Steering{sockets: sockets, prog: prog, migrates: migrates}, nil
}
