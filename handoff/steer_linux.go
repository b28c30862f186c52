package handoff

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ErrSteeringUnsupported is wrapped by every error that means "kernel steering
// cannot work here": no CAP_BPF/CAP_SYS_ADMIN, a kernel without the
// SK_REUSEPORT program type or socket array map, or not Linux.
var ErrSteeringUnsupported = errors.New("kernel steering unsupported")

const (
	// steeringSlots is the size of the socket array. Only slot 0 is used now:
	// it holds "the serving socket". The other slots are room for weights.
	steeringSlots = 64

	// programLicense is a plain non-GPL string on purpose: the only helper the
	// program calls, bpf_sk_select_reuseport, is declared with gpl_only = false
	// in the kernel (net/core/filter.c, sk_select_reuseport_proto), so the
	// verifier accepts it from a program of any license. The same holds for
	// what weights will need (ctx->hash, bpf_get_prandom_u32). The string
	// states the license of this program, so it must follow the project's.
	programLicense = "MIT"

	skPass = 1 // SK_PASS: take reuse->selected_sk, or the kernel's hash choice when none was selected.

	// migratingSkOffset is offsetof(struct sk_reuseport_md, migrating_sk).
	// The field came with socket migration in Linux 5.14.
	migratingSkOffset = 48

	errnoENOTSUPP = unix.Errno(524) // kernel-internal ENOTSUPP; a REUSEPORT_SOCKARRAY returns it for MPTCP sockets

	tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h, as reported in tcpi_state
)

// Steering is one SO_REUSEPORT group's BPF program and its REUSEPORT_SOCKARRAY map.
//
// The program selects the socket in map slot 0 for every new connection and,
// when Migrates reports true, also as the new home of the connections queued
// on a socket of the group that is being closed. If slot 0 is empty the helper
// fails and the program still returns SK_PASS, so the kernel falls back to its
// hash choice: an empty map never drops or resets a connection.
//
// A socket leaves the map by itself when it is closed. A socket can sit in at
// most one slot of one map at a time (the kernel keeps the slot in the socket's
// sk_user_data).
//
// Select may be called from several goroutines; Close must not race with the
// other methods.
type Steering struct {
	sockets  *ebpf.Map     // REUSEPORT_SOCKARRAY, key u32 slot, value u64 socket fd (cookie on lookup)
	prog     *ebpf.Program // BPF_PROG_TYPE_SK_REUSEPORT, selects slot 0
	migrates bool          // prog was loaded as BPF_SK_REUSEPORT_SELECT_OR_MIGRATE on a kernel that migrates
}

// NewSteering creates the socket array and loads the program. The error wraps
// ErrSteeringUnsupported when the process lacks the privilege (CAP_BPF, or
// CAP_SYS_ADMIN) or the kernel lacks the map or program type (before 4.19).
// On kernels before 5.11, RLIMIT_MEMLOCK must be raised first
// (rlimit.RemoveMemlock), or loading fails as if unprivileged.
//
// The program is loaded with the select-or-migrate attach type when the kernel
// can migrate (5.14+), else with plain select; Migrates reports which.
func NewSteering() (*Steering, error) {
	// Kernels before 5.11 charge BPF objects to RLIMIT_MEMLOCK; on newer
	// ones this does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, loadError("raise RLIMIT_MEMLOCK", err)
	}
	sockets, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "baton_steer",
		Type:       ebpf.ReusePortSockArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: steeringSlots,
	})
	if err != nil {
		return nil, loadError("create socket array", err)
	}
	migrates, err := kernelMigrates()
	if err != nil {
		_ = sockets.Close() // nothing refers to the map yet
		return nil, loadError("probe socket migration", err)
	}
	attach := ebpf.AttachSkReuseportSelect
	if migrates {
		attach = ebpf.AttachSkReuseportSelectOrMigrate
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "baton_steer",
		Type:       ebpf.SkReuseport,
		AttachType: attach,
		License:    programLicense,
		Instructions: asm.Instructions{
			// r1 holds the context on entry and is left alone for the helper.
			asm.StoreImm(asm.R10, -4, 0, asm.Word), // u32 key = 0 on the stack
			asm.LoadMapPtr(asm.R2, sockets.FD()),
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, -4),
			asm.Mov.Imm(asm.R4, 0),
			// bpf_sk_select_reuseport(ctx, map, &key, 0): an empty slot
			// makes it fail with ENOENT and leaves no socket selected.
			asm.FnSkSelectReuseport.Call(),
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return(),
		},
	})
	if err != nil {
		_ = sockets.Close() // nothing refers to the map yet
		return nil, loadError("load program", err)
	}
	return &Steering{sockets: sockets, prog: prog, migrates: migrates}, nil
}

// kernelMigrates reports whether the kernel migrates queued connections through
// a select-or-migrate program. The kernel never refuses an unknown expected
// attach type for SK_REUSEPORT programs, so loading with it proves nothing;
// instead this loads a probe that reads sk_reuseport_md.migrating_sk, which the
// verifier rejects (EACCES) on kernels before 5.14.
func kernelMigrates() (bool, error) {
	probe, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       ebpf.SkReuseport,
		AttachType: ebpf.AttachSkReuseportSelectOrMigrate,
		License:    programLicense,
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, migratingSkOffset, asm.DWord),
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return(),
		},
	}, ebpf.ProgramOptions{LogDisabled: true})
	if errors.Is(err, unix.EACCES) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_ = probe.Close() // the probe was never attached
	return true, nil
}

// loadError wraps err, adding ErrSteeringUnsupported when it means missing
// privilege (EPERM) or missing kernel support (EINVAL for an unknown map or
// program type, ENOSYS without the bpf syscall, ebpf.ErrNotSupported).
func loadError(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("steering: %s: %w (needs CAP_BPF or CAP_SYS_ADMIN): %w", what, ErrSteeringUnsupported, err)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("steering: %s: %w (kernel lacks SK_REUSEPORT programs, 4.19+): %w", what, ErrSteeringUnsupported, err)
	default:
		return fmt.Errorf("steering: %s: %w", what, err)
	}
}

// Migrates reports whether the program also picks the socket that takes over
// the queued connections of a socket of the group being closed (Linux 5.14+).
// When false, closing a socket resets the connections in its accept queue
// unless the net.ipv4.tcp_migrate_req sysctl is on.
func (s *Steering) Migrates() bool { return s.migrates }

// Attach attaches the program to the reuseport group of the socket fd, which
// must have SO_REUSEPORT set (bound or not). It replaces any program the group
// had. The group keeps the program while any of its sockets lives, even after
// Close.
func (s *Steering) Attach(fd int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("steering: attach to socket fd %d: socket lacks SO_REUSEPORT: %w", fd, err)
	case errors.Is(err, errnoENOTSUPP):
		return fmt.Errorf("steering: attach to socket fd %d: not a TCP or UDP socket (MPTCP?): %w", fd, err)
	default:
		return fmt.Errorf("steering: attach to socket fd %d: %w", fd, err)
	}
}

// Select puts the socket fd into slot 0 in one map update, replacing the
// socket that was there, so every new connection from now on goes to fd. fd
// must be a listening (TCP) or bound (UDP) SO_REUSEPORT socket of the group
// the program is attached to, and not MPTCP. Selecting the socket already in
// slot 0 is a no-op.
func (s *Steering) Select(fd int) error {
	if fd < 0 {
		return fmt.Errorf("steering: put socket fd %d in slot 0: %w", fd, unix.EBADF)
	}
	err := s.sockets.Update(uint32(0), uint64(fd), ebpf.UpdateAny)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errnoENOTSUPP):
		return fmt.Errorf("steering: put socket fd %d in slot 0: not a TCP or UDP socket (MPTCP sockets cannot be steered): %w", fd, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("steering: put socket fd %d in slot 0: socket is not listening (TCP) or bound (UDP) with SO_REUSEPORT: %w", fd, err)
	case errors.Is(err, unix.EBUSY):
		if s.inSlot0(fd) {
			return nil
		}
		return fmt.Errorf("steering: put socket fd %d in slot 0: socket already sits in a slot of a socket array: %w", fd, err)
	default:
		return fmt.Errorf("steering: put socket fd %d in slot 0: %w", fd, err)
	}
}

// inSlot0 reports whether slot 0 holds the socket fd. A lookup from user space
// returns the socket's cookie, not an fd.
func (s *Steering) inSlot0(fd int) bool {
	var cookie uint64
	if err := s.sockets.Lookup(uint32(0), &cookie); err != nil {
		return false
	}
	own, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	return err == nil && own == cookie
}

// Close releases this process's hold on the program and the map. A group the
// program is attached to keeps both, and keeps steering to the socket last put
// in slot 0, until the group's last socket is closed or another program is
// attached; slot 0 just can no longer be changed.
func (s *Steering) Close() error {
	errProg := s.prog.Close()
	errMap := s.sockets.Close()
	if err := errors.Join(errProg, errMap); err != nil {
		return fmt.Errorf("steering: close: %w", err)
	}
	return nil
}

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
