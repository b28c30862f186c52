package handoff

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// The state word counts a half's sockets in 8 bits: a WeightedInstances
// above 255 does not compile.
const _ uint8 = WeightedInstances

const (
	weightedSlots    = 2 * WeightedInstances
	counterFallback  = weightedSlots     // counter slot for Fallback
	counterMigrated  = weightedSlots + 1 // counter slot for Migrated
	weightedCounters = weightedSlots + 2

	// Offsets in struct sk_reuseport_md (include/uapi/linux/bpf.h).
	dataOffset       = 0
	dataEndOffset    = 8
	ipProtocolOffset = 24
	hashOffset       = 32

	tcpFlagsOffset = 13 // offsetof(struct tcphdr, flags byte)
	tcpSYN         = 0x02
	tcpACK         = 0x10

	// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL: the kernel answers it
	// with synchronize_rcu(), which waits until every BPF program run that
	// started before the call has returned.
	membarrierCmdGlobal = 1
	// graceFallback bounds a program run where membarrier is unavailable
	// (nohz_full kernels, seccomp): a run takes microseconds.
	graceFallback = 50 * time.Millisecond
)

// weightedState is the state word the program reads, unpacked. The program
// knows only halves of the socket array, lower (slots 0 to N-1) and upper
// (N to 2N-1), N being WeightedInstances; which half is A is Go's business
// (see Swap). Packed into one u64:
//
//	bits  0-7   percent (0-100) of new connections that go to the upper half
//	bits  8-15  sockets in the lower half: slots 0 .. n-1 (0-N)
//	bits 16-23  sockets in the upper half: slots N .. N+n-1 (0-N)
//	bit  24     the upper half is generation A (set after an odd number of
//	            Swaps); the program ignores it
//	bits 25-63  zero
//
// Go writes the word with one atomic 8-byte store into the mmapped map and
// the program reads it with one 8-byte load, so a program run sees the whole
// of one write, never half of two. (A map update from user space copies the
// value with the kernel's memcpy, which promises no single 8-byte store.)
type weightedState struct {
	upperWeight int
	count       [2]int // by half: 0 lower, 1 upper
	upperIsA    bool
}

func unpackState(word uint64) weightedState {
	return weightedState{
		upperWeight: int(word & 0xff),
		count:       [2]int{int(word >> 8 & 0xff), int(word >> 16 & 0xff)},
		upperIsA:    word&(1<<24) != 0,
	}
}

func (s weightedState) word() uint64 {
	w := uint64(s.upperWeight) | uint64(s.count[0])<<8 | uint64(s.count[1])<<16
	if s.upperIsA {
		w |= 1 << 24
	}
	return w
}

// half is the half of the socket array that holds generation gen.
func (s weightedState) half(gen int) int {
	if s.upperIsA {
		return 1 - gen
	}
	return gen
}

func (s weightedState) weightB() int {
	if s.half(GenerationB) == 1 {
		return s.upperWeight
	}
	return 100 - s.upperWeight
}

func (s *weightedState) setWeightB(weightB int) {
	s.upperWeight = weightB
	if s.half(GenerationB) == 0 {
		s.upperWeight = 100 - weightB
	}
}

// check refuses a state that gives a share to a generation without sockets,
// unless neither has any (then the program places nothing and the kernel's
// hash decides, as before the first SetGeneration).
func (s weightedState) check() error {
	if s.count[0]+s.count[1] == 0 {
		return nil
	}
	for gen, share := range [2]int{100 - s.weightB(), s.weightB()} {
		if share > 0 && s.count[s.half(gen)] == 0 {
			return fmt.Errorf("generation %s would take %d%% of new connections with no sockets: %w", generationName(gen), share, ErrEmptyGeneration)
		}
	}
	return nil
}

func generationName(gen int) string { return string(rune('A' + gen)) }

// WeightedSteering is one SO_REUSEPORT group's BPF program and maps that split
// new connections between two generations by an exact weight, and spread each
// generation's share evenly over its sockets (one per instance).
//
// Invariant: every slot the state word counts as filled holds a socket of
// that generation, at every moment, so the program never picks an empty slot.
// Slots are filled before a count grows, and a count shrinks (and every
// program run that read the old count finishes) before slots are emptied.
// A weight never gives a share to a generation without sockets. Should a
// slot still be empty (its socket closed while in it), the program returns
// SK_PASS without a choice and the kernel's hash picks: nothing is dropped.
//
// The Set methods, Swap and Close must be called from one goroutine (the
// supervisor's loop, which owns the steering); Counts, Weight and Migrates
// from any goroutine until Close.
type WeightedSteering struct {
	sockets  *ebpf.Map     // REUSEPORT_SOCKARRAY, key u32 slot, value u64 socket fd (cookie on lookup)
	stateMap *ebpf.Map     // ARRAY of one u64, mmapped: the state word
	counters *ebpf.Map     // ARRAY of weightedCounters u64, mmapped: per-slot, fallback, migrated
	prog     *ebpf.Program // BPF_PROG_TYPE_SK_REUSEPORT
	migrates bool

	stateMem, countersMem []byte  // the mmaps of stateMap and counters
	word                  *uint64 // the state word; only the owner goroutine stores to it
	counts                *[weightedCounters]uint64
}

// NewWeightedSteering creates the maps and loads the program. Its error wraps
// ErrSteeringUnsupported without CAP_BPF (or CAP_SYS_ADMIN) or on a kernel
// before 5.5 (SK_REUSEPORT programs, mmapable arrays). Migrates reports
// whether closing sockets' queued connections go through the program (5.14+).
func NewWeightedSteering() (*WeightedSteering, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, weightedLoadError("raise RLIMIT_MEMLOCK", err)
	}
	w := &WeightedSteering{}
	if err := w.load(); err != nil {
		_ = w.Close() // undo what load made; its error is the one to report
		return nil, err
	}
	return w, nil
}

func (w *WeightedSteering) load() error {
	var err error
	w.sockets, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "baton_wsocks", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: weightedSlots,
	})
	if err != nil {
		return weightedLoadError("create socket array", err)
	}
	if w.stateMap, w.stateMem, err = mmapArray("baton_wstate", 1); err != nil {
		return weightedLoadError("create state map", err)
	}
	if w.counters, w.countersMem, err = mmapArray("baton_wcounts", weightedCounters); err != nil {
		return weightedLoadError("create counters map", err)
	}
	w.word = (*uint64)(unsafe.Pointer(&w.stateMem[0]))
	w.counts = (*[weightedCounters]uint64)(unsafe.Pointer(&w.countersMem[0]))
	if w.migrates, err = kernelMigrates(); err != nil {
		return weightedLoadError("probe socket migration", err)
	}
	attach := ebpf.AttachSkReuseportSelect
	if w.migrates {
		attach = ebpf.AttachSkReuseportSelectOrMigrate
	}
	w.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "baton_weighted",
		Type:         ebpf.SkReuseport,
		AttachType:   attach,
		License:      programLicense,
		Instructions: weightedProgram(w.sockets, w.stateMap, w.counters, w.migrates),
	})
	if err != nil {
		return weightedLoadError("load program", err)
	}
	return nil
}

// weightedProgram picks the upper half if hash%100 < its weight, else the
// lower, and within the half slot (hash/100) % count: the remainder and the
// quotient of one hash are independent, so the split between halves stays
// exact whatever the counts.
func weightedProgram(sockets, state, counters *ebpf.Map, migrates bool) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),                       // r6 = ctx (r1-r5 do not survive calls)
		asm.LoadMem(asm.R7, asm.R1, hashOffset, asm.Word), // r7 = h = ctx->hash, the kernel's 4-tuple hash
		asm.StoreImm(asm.R10, -4, 0, asm.Word),            // key 0 (u32) at fp-4
		asm.LoadMapPtr(asm.R1, state.FD()),                // r1 = state map
		asm.Mov.Reg(asm.R2, asm.R10),                      // r2 = fp
		asm.Add.Imm(asm.R2, -4),                           // r2 = &key
		asm.FnMapLookupElem.Call(),                        // r0 = &state[0]
		asm.JEq.Imm(asm.R0, 0, "pass"),                    // never (key 0 exists), but the verifier asks
		asm.LoadMem(asm.R8, asm.R0, 0, asm.DWord),         // r8 = state word: ONE load
		asm.Mov.Reg(asm.R2, asm.R7),                       // r2 = h
		asm.Mod.Imm(asm.R2, 100),                          // r2 = h % 100
		asm.Mov.Reg(asm.R3, asm.R8),                       // r3 = state
		asm.And.Imm(asm.R3, 0xff),                         // r3 = upper half's weight
		asm.Mov.Imm(asm.R4, 0),                            // r4 = base slot of the lower half
		asm.Mov.Reg(asm.R5, asm.R8),                       // r5 = state
		asm.RSh.Imm(asm.R5, 8),                            // r5 = lower count, in the low byte
		asm.JGE.Reg(asm.R2, asm.R3, "chosen"),             // h%100 >= weight: the lower half
		asm.Mov.Imm(asm.R4, WeightedInstances),            // r4 = base slot of the upper half
		asm.Mov.Reg(asm.R5, asm.R8),                       // r5 = state
		asm.RSh.Imm(asm.R5, 16),                           // r5 = upper count, in the low byte
		asm.And.Imm(asm.R5, 0xff).WithSymbol("chosen"),    // r5 = count of the chosen half
		asm.JEq.Imm(asm.R5, 0, "pass"),                    // empty half (none filled yet): the kernel's hash
		asm.Div.Imm(asm.R7, 100),                          // r7 = h / 100, independent of h % 100
		asm.Mod.Reg(asm.R7, asm.R5),                       // r7 = instance in the half
		asm.Add.Reg(asm.R7, asm.R4),                       // r7 = slot
		asm.StoreMem(asm.R10, -8, asm.R7, asm.Word),       // slot (u32) at fp-8
		asm.Mov.Reg(asm.R1, asm.R6),                       // r1 = ctx
		asm.LoadMapPtr(asm.R2, sockets.FD()),              // r2 = socket array
		asm.Mov.Reg(asm.R3, asm.R10),                      // r3 = fp
		asm.Add.Imm(asm.R3, -8),                           // r3 = &slot
		asm.Mov.Imm(asm.R4, 0),                            // r4 = flags
		asm.FnSkSelectReuseport.Call(),                    // r0 = 0, or an error (-ENOENT: empty slot)
	}
	if migrates {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R6, migratingSkOffset, asm.DWord), // r1 = ctx->migrating_sk
			asm.JEq.Imm(asm.R1, 0, "new"),                             // none: a packet arrived
			asm.StoreImm(asm.R10, -8, counterMigrated, asm.Word),      // a queued connection moves: key Migrated
			asm.Ja.Label("placed"),                                    // go count it
		)
	}
	insns = append(insns,
		// The program also runs for TCP segments that find no socket but
		// the listener (a FIN after the TIME_WAIT table overflowed, a late
		// ACK): only a SYN without ACK is a new connection.
		asm.LoadMem(asm.R1, asm.R6, ipProtocolOffset, asm.Word).WithSymbol("new"), // r1 = ctx->ip_protocol
		asm.JNE.Imm(asm.R1, unix.IPPROTO_TCP, "placed"),                           // UDP: every datagram counts
		asm.LoadMem(asm.R1, asm.R6, dataOffset, asm.DWord),                        // r1 = ctx->data: the TCP header
		asm.LoadMem(asm.R2, asm.R6, dataEndOffset, asm.DWord),                     // r2 = ctx->data_end
		asm.Mov.Reg(asm.R3, asm.R1),                                               // r3 = data
		asm.Add.Imm(asm.R3, tcpFlagsOffset+1),                                     // r3 = end of the flags byte
		asm.JGT.Reg(asm.R3, asm.R2, "pass"),                                       // not in the linear data: no count
		asm.LoadMem(asm.R1, asm.R1, tcpFlagsOffset, asm.Byte),                     // r1 = TCP flags
		asm.And.Imm(asm.R1, tcpSYN|tcpACK),                                        // r1 = SYN and ACK bits
		asm.JNE.Imm(asm.R1, tcpSYN, "pass"),                                       // not a bare SYN: no count
	)
	return append(insns,
		asm.JEq.Imm(asm.R0, 0, "count").WithSymbol("placed"),      // placed: the key is its slot (or Migrated)
		asm.StoreImm(asm.R10, -8, counterFallback, asm.Word),      // not placed: key Fallback
		asm.LoadMapPtr(asm.R1, counters.FD()).WithSymbol("count"), // r1 = counters map
		asm.Mov.Reg(asm.R2, asm.R10),                              // r2 = fp
		asm.Add.Imm(asm.R2, -8),                                   // r2 = &key
		asm.FnMapLookupElem.Call(),                                // r0 = &counters[key]
		asm.JEq.Imm(asm.R0, 0, "pass"),                            // never: every key exists
		asm.Mov.Imm(asm.R1, 1),                                    // r1 = 1
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),                  // counters[key] += 1, atomically: CPUs run this at once
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),            // SK_PASS: the selected socket, else the kernel's hash choice
		asm.Return(), // never SK_DROP: nothing is refused here
	)
}

// mmapArray creates a BPF_F_MMAPABLE array of n u64 and maps its values.
func mmapArray(name string, n int) (*ebpf.Map, []byte, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: uint32(n),
		Flags: unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, nil, err
	}
	mem, err := unix.Mmap(m.FD(), 0, 8*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = m.Close() // nothing refers to it yet
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return m, mem, nil
}

// weightedLoadError wraps err, adding ErrSteeringUnsupported when it means
// missing privilege or missing kernel support.
func weightedLoadError(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("weighted steering: %s: %w (needs CAP_BPF or CAP_SYS_ADMIN): %w", what, ErrSteeringUnsupported, err)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("weighted steering: %s: %w (needs SK_REUSEPORT programs and mmapable BPF arrays, Linux 5.5+): %w", what, ErrSteeringUnsupported, err)
	default:
		return fmt.Errorf("weighted steering: %s: %w", what, err)
	}
}

// Migrates reports whether the program also places the queued connections of
// a socket of the group being closed (Linux 5.14+), by the same weights.
func (w *WeightedSteering) Migrates() bool { return w.migrates }

// Attach attaches the program to the reuseport group of the socket fd,
// replacing any program the group had: a group runs one program. The group
// keeps the program and its maps while any of its sockets lives, even after
// Close.
func (w *WeightedSteering) Attach(fd int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, w.prog.FD())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("weighted steering: attach to socket fd %d: socket lacks SO_REUSEPORT: %w", fd, err)
	case errors.Is(err, errnoENOTSUPP):
		return fmt.Errorf("weighted steering: attach to socket fd %d: not a TCP or UDP socket (MPTCP?): %w", fd, err)
	default:
		return fmt.Errorf("weighted steering: attach to socket fd %d: %w", fd, err)
	}
}

// SetGeneration makes fds (listening sockets of the group, one per instance,
// at most WeightedInstances) the sockets of generation gen, and the others
// leave its slots. A socket already in the generation keeps its slot when it
// can, so replacing one socket leaves the others' slots and shares alone; new
// sockets take the free slots in the order given (into an empty generation,
// fds[i] goes to its slot i). Every fd must stay open until the call returns,
// and a socket that leaves must stay open until its queue is drained.
//
// Order: a shrinking count is stored first and every program run that read
// the old one is waited for; then slots beyond the new count are emptied,
// incoming sockets replace leaving ones (an atomic swap of the slot) or fill
// new slots, and a growing count is stored last. Every step keeps the
// invariant, so on an error the generation may be half changed but still
// steers only to its sockets, old or new; calling again with the same fds
// completes it.
//
// A generation that has a share cannot be emptied (ErrEmptyGeneration): set
// the weight first. A socket in the other generation's slots is refused
// (EBUSY): see Swap.
func (w *WeightedSteering) SetGeneration(gen int, fds []int) error {
	if gen != GenerationA && gen != GenerationB {
		return fmt.Errorf("weighted steering: set generation %d: not A (0) or B (1): %w", gen, unix.EINVAL)
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("weighted steering: set generation %s: "+format, append([]any{generationName(gen)}, a...)...)
	}
	if len(fds) > WeightedInstances {
		return fail("%d sockets, at most %d: %w", len(fds), WeightedInstances, unix.EINVAL)
	}
	st, err := w.current()
	if err != nil {
		return fail("%w", err)
	}
	half := st.half(gen)
	base, other := half*WeightedInstances, (1-half)*WeightedInstances
	cur, err := w.slotCookies()
	if err != nil {
		return fail("%w", err)
	}
	cookies := make([]uint64, len(fds))
	wanted := make(map[uint64]bool, len(fds))
	for i, fd := range fds {
		cookies[i], err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			return fail("socket fd %d: getsockopt SO_COOKIE: %w", fd, err)
		}
		if wanted[cookies[i]] {
			return fail("socket fd %d given twice (a socket can sit in one slot only): %w", fd, unix.EINVAL)
		}
		for j := range WeightedInstances {
			if cur[other+j] == cookies[i] {
				return fail("socket fd %d sits in generation %s's slot %d: %w", fd, generationName(1-gen), j, unix.EBUSY)
			}
		}
		wanted[cookies[i]] = true
	}
	next := st
	next.count[half] = len(fds)
	if err := next.check(); err != nil {
		return fail("%w", err)
	}

	// Sockets already in the half below the new count keep their slots; the
	// others take the remaining slots below it, in the order given.
	keep := make([]bool, len(fds))
	kept := make(map[uint64]bool, len(fds))
	for i := range keep {
		if c := cur[base+i]; c != 0 && wanted[c] {
			keep[i], kept[c] = true, true
		}
	}
	put := make([]int, len(fds)) // the fd for slot base+i, unless keep[i]
	free := 0
	for i, fd := range fds {
		if kept[cookies[i]] {
			continue
		}
		for keep[free] {
			free++
		}
		put[free] = fd
		free++
	}

	if next.count[half] < st.count[half] {
		w.store(next)
		w.waitForPrograms()
	}
	for i := len(fds); i < WeightedInstances; i++ {
		if cur[base+i] == 0 {
			continue
		}
		if err := w.sockets.Delete(uint32(base + i)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fail("empty slot %d: %w", i, err)
		}
	}
	for i, fd := range put {
		if keep[i] {
			continue
		}
		if err := w.sockets.Update(uint32(base+i), uint64(fd), ebpf.UpdateAny); err != nil {
			return fail("put socket fd %d in slot %d: %w", fd, i, sockarrayError(err))
		}
	}
	if next.count[half] > st.count[half] {
		w.store(next)
	}
	return nil
}

// sockarrayError explains what the socket array's update errors mean.
func sockarrayError(err error) error {
	switch {
	case errors.Is(err, errnoENOTSUPP):
		return fmt.Errorf("not a TCP or UDP socket (MPTCP sockets cannot be steered): %w", err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("socket is not listening (TCP) or bound (UDP) with SO_REUSEPORT: %w", err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("socket already sits in a slot of another socket array: %w", err)
	default:
		return err
	}
}

// slotCookies reads the socket array: the cookie of each slot's socket, 0
// for an empty slot (a lookup from user space returns cookies, not fds).
func (w *WeightedSteering) slotCookies() (*[weightedSlots]uint64, error) {
	var cookies [weightedSlots]uint64
	for i := range cookies {
		err := w.sockets.Lookup(uint32(i), &cookies[i])
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read slot %d: %w", i, err)
		}
	}
	return &cookies, nil
}

// current reads the state word; it is the only copy of the state.
func (w *WeightedSteering) current() (weightedState, error) {
	if w.word == nil {
		return weightedState{}, fmt.Errorf("steering is closed: %w", unix.EBADF)
	}
	return unpackState(atomic.LoadUint64(w.word)), nil
}

// store publishes s to the program with one atomic 8-byte store.
func (w *WeightedSteering) store(s weightedState) { atomic.StoreUint64(w.word, s.word()) }

// waitForPrograms returns once every program run that may have read an older
// state word has returned. Runs happen under rcu_read_lock, so an RCU grace
// period, which membarrier(MEMBARRIER_CMD_GLOBAL) waits for, is enough.
func (w *WeightedSteering) waitForPrograms() {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		time.Sleep(graceFallback)
	}
}

// SetWeight sets the percentage (0-100) of new connections that go to
// generation B, the rest going to A, with one atomic store. It refuses a
// share for a generation without sockets (ErrEmptyGeneration): fill B before
// raising its weight, and lower it to 0 before emptying B.
func (w *WeightedSteering) SetWeight(weightB int) error {
	if weightB < 0 || weightB > 100 {
		return fmt.Errorf("weighted steering: set weight of B to %d: not in 0-100: %w", weightB, unix.EINVAL)
	}
	next, err := w.current()
	if err != nil {
		return fmt.Errorf("weighted steering: set weight of B to %d: %w", weightB, err)
	}
	next.setWeightB(weightB)
	if err := next.check(); err != nil {
		return fmt.Errorf("weighted steering: set weight of B to %d: %w", weightB, err)
	}
	w.store(next)
	return nil
}

// Weight is the percentage of new connections that go to generation B.
// It is 0 after Close.
func (w *WeightedSteering) Weight() int {
	st, err := w.current()
	if err != nil {
		return 0
	}
	return st.weightB()
}

// Swap renames the generations: A's sockets become B's and B's become A's,
// and B's weight becomes 100 minus what it was, so the program places every
// connection exactly as before. Nothing moves in the kernel (a live socket
// cannot move between slots without emptying one): only the flag in the
// state word flips. After promoting B to 100, Swap makes the new generation A
// and the old one B at weight 0, ready to be emptied and the next upgrade to
// fill B.
func (w *WeightedSteering) Swap() error {
	next, err := w.current()
	if err != nil {
		return fmt.Errorf("weighted steering: swap: %w", err)
	}
	next.upperIsA = !next.upperIsA
	w.store(next)
	return nil
}

// Counts reads the program's counters. Each is read atomically, not all
// together: connections arriving meanwhile may be in some and not others.
func (w *WeightedSteering) Counts() (WeightedCounts, error) {
	st, err := w.current()
	if err != nil {
		return WeightedCounts{}, fmt.Errorf("weighted steering: read counters: %w", err)
	}
	var c WeightedCounts
	a, b := st.half(GenerationA)*WeightedInstances, st.half(GenerationB)*WeightedInstances
	for i := range WeightedInstances {
		c.A[i] = atomic.LoadUint64(&w.counts[a+i])
		c.B[i] = atomic.LoadUint64(&w.counts[b+i])
	}
	c.Fallback = atomic.LoadUint64(&w.counts[counterFallback])
	c.Migrated = atomic.LoadUint64(&w.counts[counterMigrated])
	return c, nil
}

// Close releases this process's hold on the program and the maps. A group the
// program is attached to keeps steering with the last state until its last
// socket is closed or another program is attached; nothing can change it then.
func (w *WeightedSteering) Close() error {
	var errs []error
	for _, mem := range [][]byte{w.stateMem, w.countersMem} {
		if mem != nil {
			errs = append(errs, unix.Munmap(mem))
		}
	}
	w.stateMem, w.countersMem, w.word, w.counts = nil, nil, nil, nil
	if w.prog != nil {
		errs = append(errs, w.prog.Close())
	}
	for _, m := range []*ebpf.Map{w.sockets, w.stateMap, w.counters} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("weighted steering: close: %w", err)
	}
	return nil
}
