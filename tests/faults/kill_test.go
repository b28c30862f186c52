//go:build linux

package faults_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/internal/loadgen"
)

// faultBatonKilled: baton SIGKILLed while an upgrade is under way (two
// serving instances, each with a grandchild in its process group, and two
// candidate instances starting). Its children die with it
// (PR_SET_PDEATHSIG); the grandchildren, which no death signal reaches
// (and which inherited the listening socket: a new baton could not bind
// while they live), are killed by baton's guard, which then exits too.
// Without systemd nothing holds the socket meanwhile:
// a new baton on the same address (its control socket left behind by the
// killed one is stale and replaced) serves again.
func faultBatonKilled(t *testing.T) {
	s := newService(t)
	s.write(t, serviceConfig{instances: 2, fault: "grandchild"})
	b := s.start(t, nil)
	addr, _ := b.ready()
	b.readyAll(1, 2)
	guard := b.guard()

	s.write(t, serviceConfig{version: "2", instances: 2, fault: "never-ready", readiness: "30s"})
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	b.waitFor("both instances of generation 2 started", func(m map[string]any) bool {
		return msg("process started", 2)(m) && num(m["instance"]) == 1
	})
	procs := s.waitStarted(t, 6) // 2 instances with a grandchild each, 2 candidates: all running
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code := b.exit(); code != -int(syscall.SIGKILL) {
		t.Errorf("baton: exit %d, want killed", code)
	}
	waitGone(t, append(procs, guard)...)
	refused(t, addr)

	// Recovery without a service manager: a new baton binds the address
	// again (and takes over the stale control socket).
	s.write(t, serviceConfig{version: "3", address: addr})
	b2 := s.start(t, nil)
	if got, _ := b2.ready(); got != addr {
		t.Errorf("new baton listens on %s, want %s", got, addr)
	}
	answeredBy(t, addr, 1)
	b2.stop()
	s.nothingLeft(t, addr)
}

// faultBatonKilledFDStore: the same under systemd, reduced to what matters:
// NOTIFY_SOCKET is a datagram socket that keeps the fds baton stores
// (FDSTORE=1), as systemd's fd store does. baton is SIGKILLed in the middle
// of an upgrade; its processes die with it; clients that connect
// meanwhile wait in the stored socket's backlog (none is refused); a new
// baton, started as systemd restarts a unit (the stored fds from fd 3,
// LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), adopts the socket and the
// steering program and maps, and serves them. Only the requests in flight
// on the killed processes may fail (at most one per client); none fails
// once the new baton serves.
func faultBatonKilledFDStore(t *testing.T) {
	s := newService(t)
	store := newFDStore(t)
	s.write(t, serviceConfig{})
	b := s.start(t, nil, "NOTIFY_SOCKET="+store.path)
	addr, _ := b.ready()
	stored := store.wait(t, 5) // the socket, the program and its three maps

	load := loadgen.Run(context.Background(), loadgen.Options{URL: "http://" + addr, Clients: 8, SlowEvery: 10, SlowMS: 50, Timeout: 20 * time.Second})
	t.Cleanup(func() { load.Stop() })
	waitSent(t, load, 50)

	s.write(t, serviceConfig{version: "2", fault: "never-ready", readiness: "30s"})
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	b.waitFor(`"process started" of generation 2`, msg("process started", 2))
	s.waitStarted(t, 2) // generation 1's process and the candidate, running
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	b.exit()
	waitGone(t, s.started(t)...)
	time.Sleep(200 * time.Millisecond) // systemd's RestartSec: clients keep coming meanwhile

	// The operator's fix is in place when systemd restarts baton.
	s.write(t, serviceConfig{version: "3"})
	var files []*os.File
	var names []string
	for _, f := range stored {
		files, names = append(files, f.file), append(names, f.name)
	}
	args := []string{handoff.ShimArg, batonBin, "baton", "run", "-c", s.cfg, "--log-format", "json"}
	cmd := exec.Command(batonBin, args...)
	cmd.Env = append(cleanEnv(), "NOTIFY_SOCKET="+store.path,
		"LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.ExtraFiles = files
	b2 := s.startCmd(t, cmd)
	ready := b2.waitFor(`"listener ready"`, msg("listener ready", 0))
	if ready["passed_by_manager"] != true || ready["address"] != addr || !strings.Contains(str(ready["why"]), "program and maps passed along") {
		t.Errorf("new baton: %v; want the stored socket, steered with the stored program and maps", ready)
	}
	b2.waitFor(`"process ready" of the new baton's generation 1`, msg("process ready", 1))
	s.guards = append(s.guards, b2.guard())
	answeredBy(t, addr, 1)
	across := load.Stop()
	t.Logf("load across the kill and restart: sent %d, failed %d %v, by generation %v", across.Sent, across.Failed, across.Errors, across.Generations)
	if across.Failed > 8 {
		t.Errorf("%d requests failed; at most the 8 in flight on the killed processes may", across.Failed)
	}
	for reason := range across.Errors {
		if strings.Contains(reason, "refused") {
			t.Errorf("a client was refused while baton restarted: %v", across.Errors)
		}
	}

	load = startLoad(t, addr)
	s.write(t, serviceConfig{version: "4"})
	s.mustUpgrade(t)
	answeredBy(t, addr, 2)
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b2.stop()
	// systemd's copies: a stop (not a restart) empties the store.
	for _, f := range stored {
		f.file.Close()
	}
	store.empty()
	s.nothingLeft(t, addr)
}

// refused checks that nothing listens on addr.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s still listening", addr)
	}
}

// fdStore is NOTIFY_SOCKET for a baton "under systemd": it keeps the fds
// sent with FDSTORE=1, under their FDNAME, as systemd's fd store does.
type fdStore struct {
	path   string
	stored chan storedFD
}

type storedFD struct {
	name string
	file *os.File
}

func newFDStore(t *testing.T) *fdStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	st := &fdStore{path: path, stored: make(chan storedFD, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 64<<10), make([]byte, 4096)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return // closed
			}
			fields := map[string]string{}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					fields[k] = v
				}
			}
			var fds []int
			scms, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, scm := range scms {
				if rights, err := unix.ParseUnixRights(&scm); err == nil {
					fds = append(fds, rights...)
				}
			}
			for _, fd := range fds {
				if fields["FDSTORE"] != "1" || len(fds) != 1 {
					_ = unix.Close(fd) // not for the store: systemd closes it too
					continue
				}
				st.stored <- storedFD{name: fields["FDNAME"], file: os.NewFile(uintptr(fd), fields["FDNAME"])}
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		st.empty()
	})
	return st
}

// empty closes every fd stored and not taken by wait.
func (st *fdStore) empty() {
	for {
		select {
		case f := <-st.stored:
			f.file.Close()
		default:
			return
		}
	}
}

// wait returns the first n fds stored (bounded).
func (st *fdStore) wait(t *testing.T, n int) []storedFD {
	t.Helper()
	var out []storedFD
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case f := <-st.stored:
			out = append(out, f)
			t.Cleanup(func() { f.file.Close() })
		case <-deadline:
			t.Fatalf("%d fds stored, want %d", len(out), n)
		}
	}
	return out
}
