package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func init() {
	helpers["weighted-takeover"] = weightedTakeoverHelper
}

// weightedTakeoverHelper is a new baton: it takes over the steering whose fds
// it inherited at 3-6, sets B's weight to $WEIGHT and prints the weight and
// the sum of the counters it sees.
func weightedTakeoverHelper() {
	w, err := WeightedSteeringFromFDs(WeightedFDs{Program: 3, Sockets: 4, State: 5, Counters: 6})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	weight, err := strconv.Atoi(os.Getenv("WEIGHT"))
	if err == nil {
		err = w.SetWeight(weight)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c, err := w.Counts()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%d %d\n", w.Weight(), weightedSum(c.A[:])+weightedSum(c.B[:]))
}

func cookiesOf(t *testing.T, socks ...*testSocket) []uint64 {
	t.Helper()
	cookies := make([]uint64, len(socks))
	for i, s := range socks {
		c, err := SocketCookie(s.fd)
		if err != nil {
			t.Fatal(err)
		}
		cookies[i] = c
	}
	return cookies
}

func checkSlots(t *testing.T, w *WeightedSteering, gen int, want ...*testSocket) {
	t.Helper()
	got, err := w.Slots(gen)
	if err != nil {
		t.Fatalf("Slots(%s): %v", generationName(gen), err)
	}
	if !slices.Equal(got, cookiesOf(t, want...)) {
		t.Fatalf("Slots(%s) = %v, want the cookies of its sockets %v", generationName(gen), got, cookiesOf(t, want...))
	}
}

// checkShare runs n connections through g and checks that B's sockets (the
// ones at bIdx in g.socks) took weight percent of them, within 3 points.
func checkShare(t *testing.T, g *weightedGroup, n, weight int, bIdx ...int) []int {
	t.Helper()
	got := g.mustTraffic(t, n)
	b := 0
	for _, i := range bIdx {
		b += got[i]
	}
	share := 100 * float64(b) / float64(n)
	t.Logf("weight %d: B took %d of %d (%.1f%%), per socket %v", weight, b, n, share, got)
	if share < float64(weight)-3 || share > float64(weight)+3 {
		t.Fatalf("weight %d: B's share %.1f%%, want within 3 points", weight, share)
	}
	return got
}

func TestWeightedTakeOverKeepsRouting(t *testing.T) {
	g := newWeightedGroup(t, 4)
	a, b := g.socks[:2], g.socks[2:]
	g.setGeneration(t, GenerationA, a...)
	g.setGeneration(t, GenerationB, b...)
	g.setWeight(t, 30)
	checkShare(t, g, 2000, 30, 2, 3)
	before := g.counts(t)

	old := g.w
	w, err := WeightedSteeringFromFDs(old.FDs())
	if err != nil {
		t.Fatalf("WeightedSteeringFromFDs: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	if err := old.Close(); err != nil {
		t.Fatalf("Close the original: %v", err)
	}
	g.w = w

	if got := w.Weight(); got != 30 {
		t.Fatalf("taken over: Weight() = %d, want 30", got)
	}
	if c := g.counts(t); c != before {
		t.Fatalf("taken over: counts %+v, want %+v", c, before)
	}
	if w.Migrates() != old.Migrates() {
		t.Fatalf("taken over: Migrates() = %v, the original's %v", w.Migrates(), old.Migrates())
	}
	checkSlots(t, w, GenerationA, a...)
	checkSlots(t, w, GenerationB, b...)

	// Routing and counting go on as they were.
	got := checkShare(t, g, 2000, 30, 2, 3)
	checkWeightedCounts(t, before, g.counts(t), got[:2], got[2:])

	// The new owner changes the weight, swaps and retires a socket.
	g.setWeight(t, 80)
	checkShare(t, g, 2000, 80, 2, 3)
	g.setWeight(t, 100)
	if err := w.Swap(); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	checkSlots(t, w, GenerationA, b...)
	checkSlots(t, w, GenerationB, a...)
	g.setGeneration(t, GenerationB, a[1])
	checkSlots(t, w, GenerationB, a[1])
	if got := g.mustTraffic(t, 500); got[2]+got[3] != 500 {
		t.Fatalf("after Swap at weight 0: accepted %v, want all on the new A", got)
	}
	g.setWeight(t, 50)
	before = g.counts(t)
	got = checkShare(t, g, 2000, 50, 1)
	if got[0] != 0 {
		t.Fatalf("retired socket accepted %d", got[0])
	}
	checkWeightedCounts(t, before, g.counts(t), got[2:], got[1:2])
}

// TestWeightedTakeOverInAnotherProcess hands the fds to a child, as a
// self-upgrade or systemd's fd store does: the child maps the same state
// word, so a weight it sets is the one the program and the first baton see.
func TestWeightedTakeOverInAnotherProcess(t *testing.T) {
	g := newWeightedGroup(t, 2)
	g.setGeneration(t, GenerationA, g.socks[0])
	g.setGeneration(t, GenerationB, g.socks[1])
	g.setWeight(t, 10)
	g.mustTraffic(t, 300)

	fds := g.w.FDs()
	var extra []*os.File
	for _, fd := range []int{fds.Program, fds.Sockets, fds.State, fds.Counters} {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(dup), "bpf")
		defer f.Close()
		extra = append(extra, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), steerWait)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), "HANDOFF_TEST_HELPER=weighted-takeover", "WEIGHT=70")
	cmd.ExtraFiles = extra
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	c := g.counts(t)
	if want := fmt.Sprintf("70 %d\n", weightedSum(c.A[:])+weightedSum(c.B[:])); stdout.String() != want {
		t.Fatalf("child reported %q, want %q", stdout.String(), want)
	}
	if got := g.w.Weight(); got != 70 {
		t.Fatalf("the child set weight 70; this process reads %d", got)
	}
	checkShare(t, g, 2000, 70, 1)
}

func TestWeightedFromFDsRefuses(t *testing.T) {
	g := newWeightedGroup(t, 1)
	g.setGeneration(t, GenerationA, g.socks[0])
	good := g.w.FDs()
	other := newWeightedSteering(t).FDs()
	bgProg, bgSockets := blueGreenSteering(t)
	plain := testMap(t, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	// A socket array sized for half as many instances per generation.
	smaller := testMap(t, &ebpf.MapSpec{Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: weightedSlots / 2})
	// A number far above any fd this test opens: a freshly closed low
	// number would be taken again by the duplicates WeightedSteeringFromFDs makes.
	const closed = 900
	if _, err := unix.FcntlInt(closed, unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("fd %d is open (%v): pick another", closed, err)
	}
	sock := g.socks[0].fd

	with := func(change func(f *WeightedFDs)) WeightedFDs {
		f := good
		change(&f)
		return f
	}
	for _, tc := range []struct {
		name string
		fds  WeightedFDs
		role string // the role of the wrong fd, as the error must name it
		fd   int
		want error
		// pair, if set, is the fd named with the program: the two do not
		// belong together, and either may be the wrong one.
		pair bool
	}{
		{"closed fd as the program", with(func(f *WeightedFDs) { f.Program = closed }), "program", closed, unix.EBADF, false},
		{"closed fd as the counters", with(func(f *WeightedFDs) { f.Counters = closed }), "counters map", closed, unix.EBADF, false},
		{"socket as the program", with(func(f *WeightedFDs) { f.Program = sock }), "program", sock, unix.EINVAL, false},
		{"a map as the program", with(func(f *WeightedFDs) { f.Program = good.Sockets }), "program", good.Sockets, unix.EINVAL, false},
		{"the program as a map", with(func(f *WeightedFDs) { f.Counters = good.Program }), "counters map", good.Program, unix.EINVAL, false},
		{"socket as the socket array", with(func(f *WeightedFDs) { f.Sockets = sock }), "socket array", sock, unix.EINVAL, false},
		{"blue-green program", with(func(f *WeightedFDs) { f.Program = bgProg.FD() }), "socket array", good.Sockets, unix.EINVAL, true},
		{"blue-green socket array", with(func(f *WeightedFDs) { f.Sockets = bgSockets.FD() }), "socket array", bgSockets.FD(), unix.EINVAL, true},
		{"blue-green socket array as the state", with(func(f *WeightedFDs) { f.State = bgSockets.FD() }), "state map", bgSockets.FD(), unix.EINVAL, false},
		{"socket array of another size", with(func(f *WeightedFDs) { f.Sockets = smaller.FD() }), "socket array", smaller.FD(), unix.EINVAL, false},
		{"state and counters swapped", with(func(f *WeightedFDs) { f.State, f.Counters = f.Counters, f.State }), "state map", good.Counters, unix.EINVAL, false},
		{"another steering's state", with(func(f *WeightedFDs) { f.State = other.State }), "state map", other.State, unix.EINVAL, true},
		{"another steering's program", with(func(f *WeightedFDs) { f.Program = other.Program }), "socket array", good.Sockets, unix.EINVAL, true},
		{"state not mmapable", with(func(f *WeightedFDs) { f.State = plain.FD() }), "state map", plain.FD(), unix.EINVAL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, mapped := countFDsAndMappings(t)
			w, err := WeightedSteeringFromFDs(tc.fds)
			if err == nil {
				_ = w.Close()
				t.Fatal("taken over")
			}
			t.Log(err)
			if !errors.Is(err, tc.want) {
				t.Errorf("error wraps no %v", tc.want)
			}
			names := []string{tc.role + " fd " + strconv.Itoa(tc.fd)}
			if tc.pair {
				names = append(names, "program fd "+strconv.Itoa(tc.fds.Program))
			}
			for _, name := range names {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error does not name the %s", name)
				}
			}
			if f, m := countFDsAndMappings(t); f != fds || m != mapped {
				t.Errorf("after the refusal: %d fds and %d mapped BPF maps, want %d and %d", f, m, fds, mapped)
			}
		})
	}
	// Refusals changed nothing: the steering still works.
	if got := g.mustTraffic(t, 100); got[0] != 100 {
		t.Fatalf("after refusals: accepted %v", got)
	}
}

// blueGreenSteering makes what the blue-green steering of earlier batons
// made: an SK_REUSEPORT program that selects slot 0 of its own socket array.
// The array has the shape of a WeightedSteering's, so that only the check of
// which maps the program uses can tell the two apart.
func blueGreenSteering(t *testing.T) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	sockets := testMap(t, &ebpf.MapSpec{
		Name: "test_bluegreen", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: weightedSlots,
	})
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "test_bluegreen",
		Type:       ebpf.SkReuseport,
		AttachType: ebpf.AttachSkReuseportSelect,
		License:    programLicense,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word), // key 0 (u32) at fp-4
			asm.LoadMapPtr(asm.R2, sockets.FD()),   // r2 = socket array
			asm.Mov.Reg(asm.R3, asm.R10),           // r3 = fp
			asm.Add.Imm(asm.R3, -4),                // r3 = &key
			asm.Mov.Imm(asm.R4, 0),                 // r4 = flags
			asm.FnSkSelectReuseport.Call(),         // select slot 0 (r1 is still ctx)
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load a blue-green program: %v", err)
	}
	t.Cleanup(func() { _ = prog.Close() })
	return prog, sockets
}

// testMap creates a BPF map closed at the end of the test.
func testMap(t *testing.T, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatalf("create %s map: %v", spec.Type, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func countFDsAndMappings(t *testing.T) (fds, bpfMaps int) {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatalf("read /proc/self/maps: %v", err)
	}
	return countFDs(t), strings.Count(string(maps), "bpf-map")
}

func TestWeightedSlots(t *testing.T) {
	g := newWeightedGroup(t, 3)
	checkSlots(t, g.w, GenerationA)
	g.setGeneration(t, GenerationA, g.socks[2], g.socks[0])
	g.setGeneration(t, GenerationB, g.socks[1])
	checkSlots(t, g.w, GenerationA, g.socks[2], g.socks[0])
	checkSlots(t, g.w, GenerationB, g.socks[1])
	if _, err := g.w.Slots(2); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Slots(2): %v, want EINVAL", err)
	}
	if _, err := SocketCookie(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("SocketCookie(-1): %v, want EBADF", err)
	}
	if err := g.w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.w.Slots(GenerationA); !errors.Is(err, unix.EBADF) {
		t.Fatalf("Slots after Close: %v, want EBADF", err)
	}
}

// TestWeightedNothingStaysAfterTakeOver: once both owners closed their fds and
// the group's sockets are closed, the program and maps are gone and the port
// is free for anyone.
func TestWeightedNothingStaysAfterTakeOver(t *testing.T) {
	g := newWeightedGroup(t, 2)
	g.setGeneration(t, GenerationA, g.socks[0])
	g.setGeneration(t, GenerationB, g.socks[1])
	g.setWeight(t, 50)
	g.mustTraffic(t, 200)

	w, err := WeightedSteeringFromFDs(g.w.FDs())
	if err != nil {
		t.Fatalf("WeightedSteeringFromFDs: %v", err)
	}
	info, err := w.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	// The program is recognised by its tag: Migrates is how it was loaded,
	// not a guess from the kernel's abilities.
	for _, migrates := range []bool{true, false} {
		same, err := isWeightedProgram(info, w.sockets, w.stateMap, w.counters, migrates)
		if err != nil || same != (migrates == w.Migrates()) {
			t.Fatalf("Migrates() = %v, but the program matches the one load() makes with migrates=%v: %v, %v", w.Migrates(), migrates, same, err)
		}
	}
	progID, _ := info.ID()
	mapIDs, _ := info.MapIDs()
	if err := g.w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The group still holds the program, the program its maps.
	if p, err := ebpf.NewProgramFromID(progID); err != nil {
		t.Fatalf("program gone while its group lives: %v", err)
	} else {
		_ = p.Close() // only looked at
	}
	for _, s := range g.socks {
		s.close()
	}

	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
	if err != nil {
		t.Fatalf("a plain listener on the freed port: %v", err)
	}
	_ = l.Close() // only bound to prove the port free

	// The kernel frees programs and maps after an RCU grace period.
	deadline := time.Now().Add(steerWait)
	for {
		var alive []string
		if p, err := ebpf.NewProgramFromID(progID); err == nil {
			_ = p.Close()
			alive = append(alive, fmt.Sprintf("program %d", progID))
		} else if !errors.Is(err, unix.ENOENT) {
			t.Fatalf("look up program %d: %v", progID, err)
		}
		for _, id := range mapIDs {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				_ = m.Close()
				alive = append(alive, fmt.Sprintf("map %d", id))
			} else if !errors.Is(err, unix.ENOENT) {
				t.Fatalf("look up map %d: %v", id, err)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still alive %v after every holder closed", alive)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
