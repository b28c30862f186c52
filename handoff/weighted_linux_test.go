package handoff

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// weightedBacklog keeps a batch of connections from overflowing an accept
// queue (the kernel clamps it to net.core.somaxconn, 4096 by default).
const weightedBacklog = 8192

// weightedBatch is how many connections are opened before they are accepted.
const weightedBatch = 500

func newWeightedSteering(t *testing.T) *WeightedSteering {
	t.Helper()
	w, err := NewWeightedSteering()
	if errors.Is(err, ErrSteeringUnsupported) {
		t.Skipf("kernel steering unavailable: %v", err)
	}
	if err != nil {
		t.Fatalf("NewWeightedSteering: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// weightedGroup is a reuseport group of n listening TCP sockets on one port
// of 127.0.0.1 with a WeightedSteering attached.
type weightedGroup struct {
	w     *WeightedSteering
	port  int
	socks []*testSocket
}

func newWeightedGroup(t *testing.T, n int) *weightedGroup {
	t.Helper()
	g := &weightedGroup{w: newWeightedSteering(t)}
	for i := range n {
		s, port := reuseportSocket(t, unix.SOCK_STREAM, 0, g.port, false)
		if err := unix.Listen(s.fd, weightedBacklog); err != nil {
			t.Fatalf("listen: %v", err)
		}
		if i == 0 {
			g.port = port
			if err := g.w.Attach(s.fd); err != nil {
				t.Fatalf("Attach: %v", err)
			}
		}
		g.socks = append(g.socks, s)
	}
	return g
}

func weightedFDs(socks ...*testSocket) []int {
	fds := make([]int, len(socks))
	for i, s := range socks {
		fds[i] = s.fd
	}
	return fds
}

func (g *weightedGroup) setGeneration(t *testing.T, gen int, socks ...*testSocket) {
	t.Helper()
	if err := g.w.SetGeneration(gen, weightedFDs(socks...)); err != nil {
		t.Fatalf("SetGeneration(%s, %d sockets): %v", generationName(gen), len(socks), err)
	}
}

func (g *weightedGroup) setWeight(t *testing.T, weightB int) {
	t.Helper()
	if err := g.w.SetWeight(weightB); err != nil {
		t.Fatalf("SetWeight(%d): %v", weightB, err)
	}
}

func (g *weightedGroup) counts(t *testing.T) WeightedCounts {
	t.Helper()
	c, err := g.w.Counts()
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return c
}

// traffic opens n connections from ephemeral ports in batches, accepts each
// batch on whichever sockets of the group got them, and returns how many
// each socket accepted. It may run on any goroutine.
func (g *weightedGroup) traffic(n int) ([]int, error) {
	got := make([]int, len(g.socks))
	for done := 0; done < n; {
		k := min(weightedBatch, n-done)
		clients := make([]int, 0, k)
		err := func() error {
			for range k {
				fd, err := weightedConnect(g.port)
				if err != nil {
					return err
				}
				clients = append(clients, fd)
			}
			return g.acceptN(k, got)
		}()
		for _, fd := range clients {
			_ = unix.Close(fd) // a client we are done with
		}
		if err != nil {
			return got, fmt.Errorf("after %d connections: %w", done, err)
		}
		done += k
	}
	return got, nil
}

// weightedConnect connects a TCP socket to 127.0.0.1:port within steerWait.
// The connect is non-blocking: a blocking one with a timeout fails with
// EINTR whenever the Go runtime signals the thread.
func weightedConnect(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := weightedFinishConnect(fd, port); err != nil {
		_ = unix.Close(fd) // failed before use
		return -1, fmt.Errorf("connect to 127.0.0.1:%d: %w", port, err)
	}
	return fd, nil
}

func weightedFinishConnect(fd, port int) error {
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	deadline := time.Now().Add(steerWait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		polls := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(polls, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fmt.Errorf("getsockopt SO_ERROR: %w", err)
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// acceptN accepts and closes exactly n connections from the group's open
// sockets, adding to got[i] for each one socket i accepted, within steerWait.
func (g *weightedGroup) acceptN(n int, got []int) error {
	deadline := time.Now().Add(steerWait)
	for total := 0; ; {
		var polls []unix.PollFd
		for i, s := range g.socks {
			if s.closed {
				continue
			}
			polls = append(polls, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
			for {
				fd, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
				if errors.Is(err, unix.EAGAIN) {
					break
				}
				if err != nil {
					return fmt.Errorf("accept: %w", err)
				}
				_ = unix.Close(fd) // the server side is not needed
				got[i]++
				total++
			}
		}
		if total == n {
			return nil
		}
		left := time.Until(deadline)
		if total > n || left <= 0 {
			return fmt.Errorf("accepted %d connections, want %d", total, n)
		}
		if _, err := unix.Poll(polls, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
	}
}

func (g *weightedGroup) mustTraffic(t *testing.T, n int) []int {
	t.Helper()
	got, err := g.traffic(n)
	if err != nil {
		t.Fatalf("traffic: %v", err)
	}
	return got
}

func weightedSum[T int | uint64](xs []T) T {
	var s T
	for _, x := range xs {
		s += x
	}
	return s
}

// checkWeightedCounts checks that the counters grew from before to after by exactly
// the connections accepted on A's sockets (in slot order) and B's, with
// nothing placed by the kernel's fallback and nothing migrated.
func checkWeightedCounts(t *testing.T, before, after WeightedCounts, acceptedA, acceptedB []int) {
	t.Helper()
	for gen, accepted := range [][]int{acceptedA, acceptedB} {
		b, a := before.A, after.A
		if gen == GenerationB {
			b, a = before.B, after.B
		}
		for i := range WeightedInstances {
			want := 0
			if i < len(accepted) {
				want = accepted[i]
			}
			if got := a[i] - b[i]; got != uint64(want) {
				t.Errorf("counter of %s's slot %d grew by %d, its socket accepted %d", generationName(gen), i, got, want)
			}
		}
	}
	if d := after.Fallback - before.Fallback; d != 0 {
		t.Errorf("%d connections fell back to the kernel's hash", d)
	}
	if d := after.Migrated - before.Migrated; d != 0 {
		t.Errorf("%d connections counted as migrated", d)
	}
}

func TestWeightedSteeringSplitsByWeight(t *testing.T) {
	g := newWeightedGroup(t, 8)
	a, b := g.socks[:4], g.socks[4:]
	g.setGeneration(t, GenerationA, a...)
	g.setGeneration(t, GenerationB, b...)

	for _, step := range []struct{ weight, conns int }{{10, 6000}, {50, 10000}, {90, 6000}} {
		g.setWeight(t, step.weight)
		before := g.counts(t)
		got := g.mustTraffic(t, step.conns)
		after := g.counts(t)

		gotA, gotB := got[:4], got[4:]
		share := 100 * float64(weightedSum(gotB)) / float64(step.conns)
		t.Logf("weight %d: B took %d of %d new connections (%.2f%%); per instance A %v, B %v",
			step.weight, weightedSum(gotB), step.conns, share, gotA, gotB)
		if share < float64(step.weight)-2 || share > float64(step.weight)+2 {
			t.Errorf("weight %d: B's share %.2f%%, want within 2 points", step.weight, share)
		}
		// A generation's instances share its connections evenly. Below
		// 4,000 connections a 3-point band is too narrow for chance.
		for gen, inst := range [][]int{gotA, gotB} {
			total := weightedSum(inst)
			if total < 4000 {
				continue
			}
			for i, n := range inst {
				if s := 100 * float64(n) / float64(total); s < 22 || s > 28 {
					t.Errorf("weight %d: %s's instance %d took %.2f%% of its generation's %d, want 25 ± 3", step.weight, generationName(gen), i, s, total)
				}
			}
		}
		checkWeightedCounts(t, before, after, gotA, gotB)
	}
}

func TestWeightedSteeringEndpoints(t *testing.T) {
	g := newWeightedGroup(t, 4)
	g.setGeneration(t, GenerationA, g.socks[:2]...)
	g.setGeneration(t, GenerationB, g.socks[2:]...)
	for _, weight := range []int{0, 100, 0} {
		g.setWeight(t, weight)
		before := g.counts(t)
		got := g.mustTraffic(t, 1000)
		checkWeightedCounts(t, before, g.counts(t), got[:2], got[2:])
		if weight == 0 && weightedSum(got[2:]) != 0 || weight == 100 && weightedSum(got[:2]) != 0 {
			t.Fatalf("weight %d: A accepted %v, B %v", weight, got[:2], got[2:])
		}
	}
}

// weightedQueueUp opens n connections to the group and waits until socks' accept
// queues hold all of them; it returns the clients by local address and the
// queue lengths.
func weightedQueueUp(t *testing.T, g *weightedGroup, n int, socks ...*testSocket) (map[string]int, []int) {
	t.Helper()
	conns := make(map[string]int, n)
	for range n {
		fd, err := weightedConnect(g.port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(fd) })
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatalf("getsockname: %v", err)
		}
		conns[fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)] = fd
	}
	return conns, waitQueues(t, n, socks...)
}

// weightedRoundTrip checks that an accepted connection and its client still talk
// both ways: it was moved, not reset.
func weightedRoundTrip(t *testing.T, server, client int) {
	t.Helper()
	for _, p := range [][2]int{{server, client}, {client, server}} {
		if _, err := unix.Write(p[0], []byte{'x'}); err != nil {
			t.Fatalf("write: %v", err)
		}
		fds := []unix.PollFd{{Fd: int32(p[1]), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int(steerWait.Milliseconds())); n != 1 || err != nil {
			t.Fatalf("poll: n=%d err=%v", n, err)
		}
		buf := make([]byte, 1)
		if n, err := unix.Read(p[1], buf); n != 1 || err != nil {
			t.Fatalf("read: n=%d err=%v", n, err)
		}
	}
}

func TestWeightedSteeringMigratesQueuedConnections(t *testing.T) {
	for _, tc := range []struct {
		name         string
		removeFirst  bool // SetGeneration without the socket before closing it
		wantMigrated bool // else the program's slot is empty and the kernel's hash places them
	}{
		{"removed from its generation, then closed", true, true},
		{"closed in its slot", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newWeightedGroup(t, 3)
			if !g.w.Migrates() {
				t.Skip("kernel cannot migrate queued connections (needs Linux 5.14)")
			}
			a0, a1, b0 := g.socks[0], g.socks[1], g.socks[2]
			g.setGeneration(t, GenerationA, a0, a1)
			g.setGeneration(t, GenerationB, b0)
			g.setWeight(t, 0)

			conns, lens := weightedQueueUp(t, g, 200, a0, a1)
			queued := uint64(lens[1])
			if queued == 0 {
				t.Fatalf("queues %v: nothing waits on the socket to close", lens)
			}
			before := g.counts(t)
			if tc.removeFirst {
				g.setGeneration(t, GenerationA, a0)
			}
			a1.close()
			lens = waitQueues(t, 200, a0, b0)
			after := g.counts(t)
			migrated, fallback := after.Migrated-before.Migrated, after.Fallback-before.Fallback
			t.Logf("%d connections queued on the closed socket; then A holds %d, B %d; counted %d migrated, %d fallback",
				queued, lens[0], lens[1], migrated, fallback)
			accepted := acceptAll(t, a0, lens[0])
			for addr, fd := range acceptAll(t, b0, lens[1]) {
				accepted[addr] = fd
			}
			for addr, client := range conns {
				server, ok := accepted[addr]
				if !ok {
					t.Fatalf("connection from %s was lost", addr)
				}
				weightedRoundTrip(t, server, client)
			}
			if tc.wantMigrated && (migrated != queued || fallback != 0 || lens[1] != 0) {
				t.Fatalf("want all %d moved by the program to A at weight 0", queued)
			}
			// Migration hashes a connection as it was hashed on arrival, so
			// the program picks the slot it picked then, now empty.
			if !tc.wantMigrated && (fallback != queued || migrated != 0) {
				t.Fatalf("want all %d left to the kernel's hash", queued)
			}
		})
	}
}

// weightedSlotsOf returns, for each slot of generation gen's half, the index in
// socks of the socket there, or -1 for an empty slot, up to the last filled.
func weightedSlotsOf(t *testing.T, g *weightedGroup, gen int, socks []*testSocket) []int {
	t.Helper()
	st, err := g.w.current()
	if err != nil {
		t.Fatal(err)
	}
	cur, err := g.w.slotCookies()
	if err != nil {
		t.Fatal(err)
	}
	byCookie := make(map[uint64]int)
	for i, s := range socks {
		c, err := unix.GetsockoptUint64(s.fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			t.Fatalf("SO_COOKIE: %v", err)
		}
		byCookie[c] = i
	}
	var slots []int
	base := st.half(gen) * WeightedInstances
	for i := range WeightedInstances {
		if c := cur[base+i]; c != 0 {
			idx, ok := byCookie[c]
			if !ok {
				t.Fatalf("slot %d holds a stranger", i)
			}
			for len(slots) < i {
				slots = append(slots, -1)
			}
			slots = append(slots, idx)
		}
	}
	if len(slots) != st.count[st.half(gen)] {
		t.Fatalf("%s's slots %v, counted %d in the state", generationName(gen), slots, st.count[st.half(gen)])
	}
	return slots
}

func TestWeightedSetGenerationKeepsSlots(t *testing.T) {
	g := newWeightedGroup(t, 6)
	s := g.socks
	for _, step := range []struct {
		name string
		set  []int // indexes into s, in the order given
		want []int // the socket in each slot afterwards
	}{
		{"fill", []int{0, 1, 2, 3}, []int{0, 1, 2, 3}},
		{"same again", []int{3, 2, 1, 0}, []int{0, 1, 2, 3}},
		{"replace one in place", []int{0, 4, 2, 3}, []int{0, 4, 2, 3}},
		{"remove from the middle: the last moves in", []int{0, 2, 3}, []int{0, 3, 2}},
		{"grow", []int{0, 3, 2, 5, 1}, []int{0, 3, 2, 5, 1}},
		{"shrink to one", []int{1}, []int{1}},
	} {
		var socks []*testSocket
		for _, i := range step.set {
			socks = append(socks, s[i])
		}
		g.setGeneration(t, GenerationA, socks...)
		if got := weightedSlotsOf(t, g, GenerationA, s); fmt.Sprint(got) != fmt.Sprint(step.want) {
			t.Fatalf("%s: slots hold %v, want %v", step.name, got, step.want)
		}
		got := g.mustTraffic(t, 200)
		for i, n := range got {
			if n > 0 && !slices.Contains(step.set, i) {
				t.Fatalf("%s: socket %d, not in A, accepted %d", step.name, i, n)
			}
		}
	}
}

func TestWeightedSteeringRefuses(t *testing.T) {
	g := newWeightedGroup(t, 3)
	a, b := g.socks[0], g.socks[1]
	notListening, _ := reuseportSocket(t, unix.SOCK_STREAM, 0, 0, false)
	noReuseport := plainListener(t)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatalf("pipe: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(pipe[0]); _ = unix.Close(pipe[1]) })
	many := make([]int, WeightedInstances+1)
	for i := range many {
		many[i] = a.fd
	}
	setGen := func(gen int, fds ...int) func() error {
		return func() error { return g.w.SetGeneration(gen, fds) }
	}
	setWeight := func(w int) func() error { return func() error { return g.w.SetWeight(w) } }

	type refusal struct {
		name  string
		setup func() error // run before, must succeed
		call  func() error
		want  error
	}
	refusals := []refusal{
		{"B before A", nil, setGen(GenerationB, b.fd), ErrEmptyGeneration},
		{"a weight for B while B is empty", setGen(GenerationA, a.fd), setWeight(10), ErrEmptyGeneration},
		{"emptying B while it has a weight", func() error {
			return errors.Join(g.w.SetGeneration(GenerationB, []int{b.fd}), g.w.SetWeight(10))
		}, setGen(GenerationB), ErrEmptyGeneration},
		{"emptying A while it has a weight", nil, setGen(GenerationA), ErrEmptyGeneration},
		{"generation 2", nil, setGen(2, a.fd), unix.EINVAL},
		{"weight 101", nil, setWeight(101), unix.EINVAL},
		{"weight -1", nil, setWeight(-1), unix.EINVAL},
		{"too many sockets", nil, setGen(GenerationA, many...), unix.EINVAL},
		{"one socket twice", nil, setGen(GenerationA, a.fd, a.fd), unix.EINVAL},
		{"A's socket into B", nil, setGen(GenerationB, b.fd, a.fd), unix.EBUSY},
		{"a socket not listening", nil, setGen(GenerationA, a.fd, notListening.fd), unix.EINVAL},
		{"listening without SO_REUSEPORT", nil, setGen(GenerationA, a.fd, noReuseport.fd), unix.EINVAL},
		{"not a socket", nil, setGen(GenerationA, pipe[0]), unix.ENOTSOCK},
	}
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP); err != nil {
		t.Logf("kernel refuses MPTCP sockets (%v): not trying one", err)
	} else {
		_ = unix.Close(fd) // only a probe
		mptcp, _ := reuseportSocket(t, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, 0, true)
		refusals = append(refusals, refusal{"an MPTCP listener", nil, setGen(GenerationA, a.fd, mptcp.fd), errnoENOTSUPP})
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				if err := tc.setup(); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			word := *g.w.word
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tc.want)
			}
			if errors.Is(err, ErrSteeringUnsupported) {
				t.Fatalf("%v: a refused change is not missing kernel support", err)
			}
			if *g.w.word != word {
				t.Fatalf("state word changed from %#x to %#x", word, *g.w.word)
			}
			t.Log(err)
		})
	}
	// After all that, A is still [a] and B [b] at weight 10.
	got := g.mustTraffic(t, 1000)
	if got[0]+got[1] != 1000 || got[1] < 50 || got[1] > 150 {
		t.Fatalf("after refusals: A accepted %d, B %d", got[0], got[1])
	}
}

// plainListener is a TCP socket listening on a free port of 127.0.0.1
// without SO_REUSEPORT.
func plainListener(t *testing.T) *testSocket {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	s := &testSocket{fd: fd}
	t.Cleanup(s.close)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatalf("listen: %v", err)
	}
	return s
}

// TestWeightedSteeringFullGenerations fills both generations with
// WeightedInstances sockets each: every one of them takes its even part of
// its generation's half, up to the last slot of the upper half, and one
// socket more is refused.
func TestWeightedSteeringFullGenerations(t *testing.T) {
	const n = WeightedInstances
	g := newWeightedGroup(t, 2*n+1)
	a, b, extra := g.socks[:n], g.socks[n:2*n], g.socks[2*n]
	g.setGeneration(t, GenerationA, a...)
	g.setGeneration(t, GenerationB, b...)
	g.setWeight(t, 50)
	checkSlots(t, g.w, GenerationA, a...)
	checkSlots(t, g.w, GenerationB, b...)

	const perSocket = 100 // expected at weight 50; chance keeps each within 40-160 (6 sigma)
	before := g.counts(t)
	got := g.mustTraffic(t, 2*n*perSocket)
	checkWeightedCounts(t, before, g.counts(t), got[:n], got[n:2*n])
	t.Logf("%d connections: A's sockets took %v, B's %v", 2*n*perSocket, got[:n], got[n:2*n])
	for i, k := range got[:2*n] {
		if k < perSocket*4/10 || k > perSocket*16/10 {
			t.Errorf("socket %d of %s took %d connections, want %d ± 60%%", i%n, generationName(i/n), k, perSocket)
		}
	}
	if got[2*n] != 0 {
		t.Errorf("the socket in no generation took %d connections", got[2*n])
	}

	for gen, socks := range [][]*testSocket{a, b} {
		word := *g.w.word
		err := g.w.SetGeneration(gen, weightedFDs(append(slices.Clone(socks), extra)...))
		if !errors.Is(err, unix.EINVAL) {
			t.Fatalf("SetGeneration(%s, %d sockets): %v, want an error wrapping EINVAL", generationName(gen), n+1, err)
		}
		t.Log(err)
		if *g.w.word != word {
			t.Fatalf("refused: state word changed from %#x to %#x", word, *g.w.word)
		}
		checkSlots(t, g.w, gen, socks...)
	}
}

// TestWeightedSteeringUnsetLeavesTheHash: attached, but before any
// generation is set, the program places nothing and counts nothing, and the
// kernel's hash spreads connections over the group as without a program.
func TestWeightedSteeringUnsetLeavesTheHash(t *testing.T) {
	g := newWeightedGroup(t, 2)
	got := g.mustTraffic(t, 200)
	t.Logf("hash spread with no generation set: %v", got)
	if got[0] == 0 || got[1] == 0 {
		t.Fatalf("accepted %v: the kernel's hash would use both sockets", got)
	}
	if c := g.counts(t); c != (WeightedCounts{}) {
		t.Fatalf("counters %+v, want all zero", c)
	}
}

func TestWeightedSteeringSwap(t *testing.T) {
	g := newWeightedGroup(t, 3)
	old, cur, next := g.socks[0], g.socks[1], g.socks[2]
	g.setGeneration(t, GenerationA, old)
	g.setGeneration(t, GenerationB, cur)
	g.setWeight(t, 100)
	if got := g.mustTraffic(t, 200); got[1] != 200 {
		t.Fatalf("weight 100: accepted %v", got)
	}

	// Full promotion done: the new generation becomes A, the old one B at weight 0.
	before := g.counts(t)
	if err := g.w.Swap(); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if w := g.w.Weight(); w != 0 {
		t.Fatalf("weight of B after Swap: %d, want 0", w)
	}
	if got := g.mustTraffic(t, 200); got[1] != 200 {
		t.Fatalf("after Swap: accepted %v", got)
	}
	after := g.counts(t)
	if d := after.A[0] - before.B[0]; d != 200 {
		t.Fatalf("after Swap: A's slot 0 counted %d more than B's did before, want 200", d)
	}
	g.setGeneration(t, GenerationB) // retire the old one: weight 0 allows it
	g.setGeneration(t, GenerationA, cur)
	if got := weightedSlotsOf(t, g, GenerationA, g.socks); fmt.Sprint(got) != "[1]" {
		t.Fatalf("A's slots after Swap: %v", got)
	}

	// The next upgrade fills B again.
	g.setGeneration(t, GenerationB, next)
	g.setWeight(t, 50)
	before = g.counts(t)
	got := g.mustTraffic(t, 2000)
	t.Logf("weight 50 after Swap: A accepted %d, B %d", got[1], got[2])
	if got[0] != 0 || got[2] < 900 || got[2] > 1100 {
		t.Fatalf("weight 50 after Swap: accepted %v", got)
	}
	checkWeightedCounts(t, before, g.counts(t), got[1:2], got[2:3])
}

// TestWeightedReshuffleNeverFallsBack changes generations and weights while
// connections arrive: with the ordering SetGeneration keeps, the program
// never finds an empty slot.
func TestWeightedReshuffleNeverFallsBack(t *testing.T) {
	const pool, changes = 5, 60
	g := newWeightedGroup(t, 2*pool)
	g.setGeneration(t, GenerationA, g.socks[:pool]...)
	g.setGeneration(t, GenerationB, g.socks[pool:]...)
	before := g.counts(t)

	stop := make(chan struct{})
	type result struct {
		accepted int
		err      error
	}
	done := make(chan result)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			got, err := g.traffic(weightedBatch)
			r.accepted += weightedSum(got)
			if err != nil {
				r.err = err
				done <- r
				return
			}
		}
	}()

	rng := rand.New(rand.NewPCG(1, 2))
	for range changes {
		gen := rng.IntN(2)
		socks := g.socks[gen*pool : (gen+1)*pool]
		perm := rng.Perm(pool)[:1+rng.IntN(pool)]
		var set []*testSocket
		for _, i := range perm {
			set = append(set, socks[i])
		}
		g.setGeneration(t, gen, set...)
		g.setWeight(t, rng.IntN(101))
		time.Sleep(2 * time.Millisecond) // let connections arrive in this state

	}
	close(stop)
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * steerWait):
		t.Fatal("traffic did not stop")
	}
	if r.err != nil {
		t.Fatalf("traffic: %v", r.err)
	}
	after := g.counts(t)
	placed := weightedSum(after.A[:]) + weightedSum(after.B[:]) - weightedSum(before.A[:]) - weightedSum(before.B[:])
	t.Logf("%d connections during %d changes: %d placed by the program, %d by the kernel's fallback",
		r.accepted, changes, placed, after.Fallback-before.Fallback)
	if after.Fallback != before.Fallback || placed != uint64(r.accepted) {
		t.Fatalf("%d connections accepted, %d placed by the program, %d fell back", r.accepted, placed, after.Fallback-before.Fallback)
	}
}

func TestWeightedStateWord(t *testing.T) {
	for _, tc := range []struct {
		st   weightedState
		word uint64
	}{
		{weightedState{}, 0},
		{weightedState{upperWeight: 10, count: [2]int{4, 3}}, 0x03_04_0a},
		{weightedState{upperWeight: 100, count: [2]int{WeightedInstances, WeightedInstances}, upperIsA: true}, 0x1_40_40_64},
	} {
		if w := tc.st.word(); w != tc.word {
			t.Errorf("%+v packs to %#x, want %#x", tc.st, w, tc.word)
		}
		if st := unpackState(tc.word); st != tc.st {
			t.Errorf("%#x unpacks to %+v, want %+v", tc.word, st, tc.st)
		}
	}
}

func TestWeightedSteeringCloseReleases(t *testing.T) {
	count := func() (fds, bpfMaps int) {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatalf("read /proc/self/fd: %v", err)
		}
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatalf("read /proc/self/maps: %v", err)
		}
		return len(entries), strings.Count(string(maps), "bpf-map")
	}
	fds, mapped := count()
	w, err := NewWeightedSteering()
	if errors.Is(err, ErrSteeringUnsupported) {
		t.Skipf("kernel steering unavailable: %v", err)
	}
	if err != nil {
		t.Fatalf("NewWeightedSteering: %v", err)
	}
	if _, m := count(); m != mapped+2 {
		t.Fatalf("%d BPF maps mapped after NewWeightedSteering, want %d", m, mapped+2)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if f, m := count(); f != fds || m != mapped {
		t.Fatalf("after Close: %d fds and %d mapped BPF maps, want %d and %d", f, m, fds, mapped)
	}
	if _, err := w.Counts(); !errors.Is(err, unix.EBADF) {
		t.Fatalf("Counts after Close: %v, want EBADF", err)
	}
	if err := w.SetWeight(0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("SetWeight after Close: %v, want EBADF", err)
	}
}

// TestWeightedCountsOnlyNewConnections sends the listeners TCP segments that
// belong to no connection (as a FIN does after the TIME_WAIT table
// overflowed): the program runs for them too, but must not count them.
func TestWeightedCountsOnlyNewConnections(t *testing.T) {
	g := newWeightedGroup(t, 2)
	g.setGeneration(t, GenerationA, g.socks[0])
	g.setGeneration(t, GenerationB, g.socks[1])
	g.setWeight(t, 50)
	raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Skipf("raw socket: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(raw) })

	before := g.counts(t)
	for i := range 100 {
		seg := weightedTCPSegment(uint16(40000+i), uint16(g.port), 0x11) // FIN|ACK
		if err := unix.Sendto(raw, seg, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatalf("send stray segment: %v", err)
		}
	}
	got := g.mustTraffic(t, 100)
	checkWeightedCounts(t, before, g.counts(t), got[:1], got[1:])
}

// weightedTCPSegment builds a 20-byte TCP header from and to 127.0.0.1 with a valid
// checksum.
func weightedTCPSegment(src, dst uint16, flags byte) []byte {
	seg := make([]byte, 20)
	seg[0], seg[1], seg[2], seg[3] = byte(src>>8), byte(src), byte(dst>>8), byte(dst)
	seg[4], seg[8] = 0x12, 0x34 // sequence and acknowledgement numbers: anything
	seg[12] = 5 << 4            // header length: 5 words
	seg[13] = flags
	seg[14] = 0x04 // window
	// Checksum over the pseudo-header (addresses, protocol, length) and the segment.
	sum := uint32(0x7f00+0x0001)*2 + unix.IPPROTO_TCP + uint32(len(seg))
	for i := 0; i < len(seg); i += 2 {
		sum += uint32(seg[i])<<8 | uint32(seg[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	seg[16], seg[17] = byte(^sum>>8), byte(^sum)
	return seg
}
