package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// WeightedFDs are the fds of a WeightedSteering's program and maps: what a
// new baton (self-upgrade) or systemd's fd store needs to carry on steering
// the same group with the same weights and counters.
type WeightedFDs struct{ Program, Sockets, State, Counters int }

// FDs returns the fds of the program and the three maps. They belong to w
// and are valid until Close; pass them on (SCM_RIGHTS, FDSTORE=1, an
// inherited fd), do not close them.
func (w *WeightedSteering) FDs() WeightedFDs {
	return WeightedFDs{
		Program:  w.prog.FD(),
		Sockets:  w.sockets.FD(),
		State:    w.stateMap.FD(),
		Counters: w.counters.FD(),
	}
}

// WeightedSteeringFromFDs takes over a WeightedSteering that another baton
// made (see FDs). The fds are duplicated (close-on-exec): the caller keeps
// its own and may close them. Each is checked to be what NewWeightedSteering
// creates: an SK_REUSEPORT program that uses exactly the three maps given, a
// socket array of 2*WeightedInstances slots, and mmapable u64 arrays of the
// right length for the state word and the counters. The state word and the
// counters are mapped again, not copied: the program keeps running on the
// same memory and nothing is written, so routing does not change and the new
// owner sees the current weight, generations and counts. From then on only
// the new owner may call the Set methods and Swap; the old one should only
// Close.
//
// Taking over this baton version's program loads nothing into the kernel
// (see programMigrates). On error nothing is kept: every fd duplicated and
// every mapping made so far is released again.
func WeightedSteeringFromFDs(f WeightedFDs) (*WeightedSteering, error) {
	w := &WeightedSteering{}
	if err := w.takeOver(f); err != nil {
		_ = w.Close() // releases what takeOver got so far; its error is the one to report
		return nil, err
	}
	return w, nil
}

// takeOver fills w from f, leaving what it got in w for Close on error.
func (w *WeightedSteering) takeOver(f WeightedFDs) error {
	var err error
	if w.sockets, err = takeOverMap("socket array", f.Sockets, ebpf.ReusePortSockArray, weightedSlots, false); err != nil {
		return err
	}
	if w.stateMap, err = takeOverMap("state map", f.State, ebpf.Array, 1, true); err != nil {
		return err
	}
	if w.counters, err = takeOverMap("counters map", f.Counters, ebpf.Array, weightedCounters, true); err != nil {
		return err
	}
	if w.prog, err = takeOverProgram(f.Program); err != nil {
		return err
	}
	info, err := w.prog.Info()
	if err != nil {
		return fmt.Errorf("weighted steering: take over program fd %d: read its info: %w", f.Program, err)
	}
	if err := w.checkProgramMaps(f, info); err != nil {
		return err
	}
	if w.migrates, err = w.programMigrates(info); err != nil {
		return fmt.Errorf("weighted steering: take over program fd %d: %w", f.Program, err)
	}

	if w.stateMem, err = mmapValues(w.stateMap, 1); err != nil {
		return fmt.Errorf("weighted steering: take over state map fd %d: %w", f.State, err)
	}
	if w.countersMem, err = mmapValues(w.counters, weightedCounters); err != nil {
		return fmt.Errorf("weighted steering: take over counters map fd %d: %w", f.Counters, err)
	}
	w.word = (*uint64)(unsafe.Pointer(&w.stateMem[0]))
	w.counts = (*[weightedCounters]uint64)(unsafe.Pointer(&w.countersMem[0]))
	word := atomic.LoadUint64(w.word)
	if st := unpackState(word); st.word() != word || st.upperWeight > 100 || st.count[0] > WeightedInstances || st.count[1] > WeightedInstances {
		return fmt.Errorf("weighted steering: take over state map fd %d: state word %#x is not one baton writes: %w", f.State, word, unix.EINVAL)
	}
	return nil
}

// takeOverMap duplicates fd and checks that it is a map of type typ with u32
// keys, u64 values and entries entries, mmapable or not as asked.
func takeOverMap(what string, fd int, typ ebpf.MapType, entries uint32, mmapable bool) (*ebpf.Map, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("weighted steering: take over %s fd %d: "+format, append([]any{what, fd}, a...)...)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fail("%w", err)
	}
	if err := checkBPFObject(dup, "bpf-map"); err != nil {
		_ = unix.Close(dup) // refused: nothing refers to the duplicate
		return nil, fail("%w", err)
	}
	m, err := ebpf.NewMapFromFD(dup) // closes dup on error
	if err != nil {
		return nil, fail("%w", err)
	}
	switch {
	case m.Type() != typ:
		err = fail("is a %s map, want %s: %w", m.Type(), typ, unix.EINVAL)
	case m.KeySize() != 4 || m.ValueSize() != 8:
		err = fail("has %d-byte keys and %d-byte values, want 4 and 8: %w", m.KeySize(), m.ValueSize(), unix.EINVAL)
	case m.MaxEntries() != entries:
		err = fail("has %d entries, want %d: %w", m.MaxEntries(), entries, unix.EINVAL)
	case mmapable && m.Flags()&unix.BPF_F_MMAPABLE == 0:
		err = fail("is not mmapable: %w", unix.EINVAL)
	}
	if err != nil {
		_ = m.Close() // refused: nothing refers to the duplicate
		return nil, err
	}
	return m, nil
}

// takeOverProgram duplicates fd and checks that it is an SK_REUSEPORT program.
func takeOverProgram(fd int) (*ebpf.Program, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("weighted steering: take over program fd %d: %w", fd, err)
	}
	if err := checkBPFObject(dup, "bpf-prog"); err != nil {
		_ = unix.Close(dup) // refused: nothing refers to the duplicate
		return nil, fmt.Errorf("weighted steering: take over program fd %d: %w", fd, err)
	}
	p, err := ebpf.NewProgramFromFD(dup) // closes dup on error
	if err != nil {
		return nil, fmt.Errorf("weighted steering: take over program fd %d: %w", fd, err)
	}
	if p.Type() != ebpf.SkReuseport {
		_ = p.Close() // refused: nothing refers to the duplicate
		return nil, fmt.Errorf("weighted steering: take over program fd %d: is a %s program, want SK_REUSEPORT: %w", fd, p.Type(), unix.EINVAL)
	}
	return p, nil
}

// checkBPFObject checks that fd is a BPF object of the kind given: "bpf-map"
// or "bpf-prog", the names of their anonymous inodes. The kernel answers
// BPF_OBJ_GET_INFO_BY_FD for both kinds, so asking a map for program info
// succeeds and yields the map's type read as a program type.
func checkBPFObject(fd int, kind string) error {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Errorf("tell what the fd is: %w", err)
	}
	if link != "anon_inode:"+kind {
		want := map[string]string{"bpf-map": "a BPF map", "bpf-prog": "a BPF program"}[kind]
		return fmt.Errorf("is %s, not %s: %w", link, want, unix.EINVAL)
	}
	return nil
}

// checkProgramMaps checks that the program uses exactly the three maps taken
// over: a program and maps of two different steerings would make changes
// that the program never sees, and the shapes cannot tell them apart (the
// socket array of another program, such as the blue-green steering earlier
// batons used, may have the size of ours).
func (w *WeightedSteering) checkProgramMaps(f WeightedFDs, info *ebpf.ProgramInfo) error {
	used, ok := info.MapIDs()
	if !ok {
		return nil // the kernel does not tell (before 4.15): the shapes were checked
	}
	for _, m := range []struct {
		what string
		fd   int
		m    *ebpf.Map
	}{{"socket array", f.Sockets, w.sockets}, {"state map", f.State, w.stateMap}, {"counters map", f.Counters, w.counters}} {
		mi, err := m.m.Info()
		if err != nil {
			return fmt.Errorf("weighted steering: take over %s fd %d: read its info: %w", m.what, m.fd, err)
		}
		id, _ := mi.ID()
		found := false
		for _, u := range used {
			found = found || u == id
		}
		if !found {
			return fmt.Errorf("weighted steering: take over program fd %d and %s fd %d: not of one steering (the program uses maps %v, not map %d): %w", f.Program, m.what, m.fd, used, id, unix.EINVAL)
		}
	}
	if len(used) != 3 {
		return fmt.Errorf("weighted steering: take over program fd %d: it uses %d maps, want 3: %w", f.Program, len(used), unix.EINVAL)
	}
	return nil
}

// programMigrates tells how the program was loaded. The kernel does not
// report a program's expected attach type, but its tag is a hash of the
// instructions (map references left out), and load() builds one of two
// programs: the one matching the tag says. A program of another baton
// version matches neither; it was loaded on this same kernel, where load()
// chooses by kernelMigrates, so that answers instead.
func (w *WeightedSteering) programMigrates(info *ebpf.ProgramInfo) (bool, error) {
	for _, migrates := range []bool{true, false} {
		same, err := isWeightedProgram(info, w.sockets, w.stateMap, w.counters, migrates)
		if err != nil {
			break // no tag to compare (not expected on Linux): ask the kernel
		}
		if same {
			return migrates, nil
		}
	}
	migrates, err := kernelMigrates()
	if err != nil {
		return false, fmt.Errorf("probe socket migration: %w", err)
	}
	return migrates, nil
}

// isWeightedProgram reports whether the loaded program described by info
// has the instructions weightedProgram builds (the maps aside: the tag
// leaves map references out).
func isWeightedProgram(info *ebpf.ProgramInfo, sockets, state, counters *ebpf.Map, migrates bool) (bool, error) {
	spec := &ebpf.ProgramSpec{Type: ebpf.SkReuseport, Instructions: weightedProgram(sockets, state, counters, migrates)}
	// The jumps name their targets by label; Marshal resolves the labels
	// into offsets in place, as loading does, so that the hash sees what
	// the kernel hashed. The offsets do not depend on the byte order.
	if err := spec.Instructions.Marshal(io.Discard, binary.LittleEndian); err != nil {
		return false, fmt.Errorf("encode the program: %w", err)
	}
	err := spec.Compatible(info)
	if errors.Is(err, ebpf.ErrProgIncompatible) {
		return false, nil
	}
	return err == nil, err
}

// mmapValues maps the values of a BPF_F_MMAPABLE array of n u64.
func mmapValues(m *ebpf.Map, n int) ([]byte, error) {
	mem, err := unix.Mmap(m.FD(), 0, 8*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return mem, nil
}

// Slots returns the SO_COOKIE of the socket in each slot of generation gen
// (0 for an empty slot), in slot order, up to the generation's count: entry
// i is the socket whose connections WeightedCounts.A[i] (or B[i]) counts.
// Compare with SocketCookie of the sockets the caller holds. Like
// SetGeneration it must be called from the goroutine that owns the steering,
// so that the state and slots it reads belong together.
func (w *WeightedSteering) Slots(gen int) ([]uint64, error) {
	if gen != GenerationA && gen != GenerationB {
		return nil, fmt.Errorf("weighted steering: slots of generation %d: not A (0) or B (1): %w", gen, unix.EINVAL)
	}
	st, err := w.current()
	if err != nil {
		return nil, fmt.Errorf("weighted steering: slots of generation %s: %w", generationName(gen), err)
	}
	cur, err := w.slotCookies()
	if err != nil {
		return nil, fmt.Errorf("weighted steering: slots of generation %s: %w", generationName(gen), err)
	}
	half := st.half(gen)
	base := half * WeightedInstances
	return append([]uint64(nil), cur[base:base+st.count[half]]...), nil
}

// SocketCookie returns the socket's SO_COOKIE: a number the kernel gives each
// socket, unique while the system runs and the same in every process that
// holds the socket. A socket array reports its sockets by cookie.
func SocketCookie(fd int) (uint64, error) {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: getsockopt SO_COOKIE: %w", fd, err)
	}
	return c, nil
}
