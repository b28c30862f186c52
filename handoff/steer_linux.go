package handoff

// Kernel steering, the mechanism WeightedSteering is built on.
//
// The sockets of one SO_REUSEPORT group (same address, same owner, each with
// SO_REUSEPORT set before bind) share the incoming connections of the
// address; by default the kernel picks one by a hash of the 4-tuple. A
// BPF_PROG_TYPE_SK_REUSEPORT program attached to the group with
// setsockopt(SO_ATTACH_REUSEPORT_EBPF) on any of its sockets picks instead:
// it runs for each new connection (each datagram for UDP) and calls
// bpf_sk_select_reuseport with a slot of a BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
// a map user space fills with the group's sockets by fd. Returning SK_PASS
// with no socket selected (an empty slot, a socket of another group) leaves
// the choice to the kernel's hash, so a program that finds nothing never
// drops a connection.
//
// A socket sits in at most one slot of one socket array (the kernel keeps
// the slot in its sk_user_data) and leaves it by itself when closed. The
// group keeps its program, and the program its maps, while any socket of the
// group lives, whoever holds their fds.
//
// On Linux 5.14+ a program loaded with the select-or-migrate attach type
// also runs when a socket of the group is closed with connections in its
// accept queue (ctx->migrating_sk set), and the socket it selects takes them
// over instead of their being reset.

import (
	"errors"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

const (
	// programLicense is a plain non-GPL string on purpose: the helpers the
	// program calls (bpf_sk_select_reuseport, bpf_map_lookup_elem) are
	// declared with gpl_only = false in the kernel (net/core/filter.c,
	// sk_select_reuseport_proto; kernel/bpf/helpers.c), so the verifier
	// accepts them from a program of any license. The string states the
	// license of this program, so it must follow the project's.
	programLicense = "MIT"

	skPass = 1 // SK_PASS: take reuse->selected_sk, or the kernel's hash choice when none was selected.

	// migratingSkOffset is offsetof(struct sk_reuseport_md, migrating_sk).
	// The field came with socket migration in Linux 5.14.
	migratingSkOffset = 48

	errnoENOTSUPP = unix.Errno(524) // kernel-internal ENOTSUPP; a REUSEPORT_SOCKARRAY returns it for MPTCP sockets
)

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
