//go:build linux

package faults_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// faultAddressInUse: the second of two listeners is on an address another
// process holds, plainly or with SO_REUSEPORT (as another baton's socket,
// same user, would be: baton must not join its group and share its
// traffic). baton exits 1 (README: the service could not be started) with
// a message naming the listener, the address and the cause; it starts no
// process, and the listener it had bound is closed again.
func faultAddressInUse(t *testing.T) {
	for _, reuseport := range []bool{false, true} {
		t.Run(fmt.Sprintf("reuseport=%v", reuseport), func(t *testing.T) {
			lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					if reuseport {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
					}
				})
				if err != nil {
					return err
				}
				return serr
			}}
			lc.SetMultipathTCP(false)
			other, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			busy := other.Addr().String()

			s := newService(t)
			s.write(t, serviceConfig{extra: fmt.Sprintf("\n[[listener]]\nname = \"busy\"\naddress = %q\n", busy)})
			b := s.start(t, nil)
			code := b.exit()
			log := b.log()
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, want := range []string{`busy`, busy, "address already in use"} {
				if !strings.Contains(log, want) {
					t.Errorf("baton's log does not say %q", want)
				}
			}
			if procs := s.started(t); len(procs) != 0 {
				t.Errorf("processes started: %v", procs)
			}
			var addrs []string
			for _, m := range b.all(msg("listener ready", 0)) {
				addrs = append(addrs, str(m["address"]))
			}
			s.nothingLeft(t, addrs...)
			// The other process's socket is untouched (and baton did not
			// take part of its connections).
			c, err := net.DialTimeout("tcp", busy, time.Second)
			if err != nil {
				t.Fatalf("the other process's socket: %v", err)
			}
			c.Close()
		})
	}
}

// faultFDLimit: baton runs out of file descriptors during upgrades. Its
// soft RLIMIT_NOFILE is lowered (prlimit(2), as `prlimit --pid` does) to
// each value from "not one fd more" upwards, so that each upgrade fails at
// another step (reading the config, making the new generation's sockets,
// starting its processes, the processes' own start) until one succeeds.
// Each failure must be clean: logged with the cause, the serving
// generation untouched and serving, and baton holding exactly the fds it
// held before (nothing leaked). The control socket, out of fds to accept
// with, retries rather than giving up. At the end the limit is back, an
// upgrade works, and no request failed.
func faultFDLimit(t *testing.T) {
	s := newService(t)
	s.write(t, serviceConfig{instances: 2})
	b := s.start(t, nil)
	addr, _ := b.ready()
	load := startLoad(t, addr)
	// One upgrade first, so that baton holds what it holds between
	// upgrades (the replaced generation's executable, pinned for a
	// rollback, among them).
	s.write(t, serviceConfig{instances: 2, version: "2"})
	s.mustUpgrade(t)
	pid := b.pid()
	baseline := fdKinds(fds(t, pid))
	var limit unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &limit); err != nil {
		t.Fatal(err)
	}
	setLimit := func(soft uint64) error {
		return unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: soft, Max: limit.Max}, nil)
	}
	t.Cleanup(func() { _ = setLimit(limit.Cur) }) // after a failure; baton may be gone (ESRCH)
	serving := 2

	decisive := func(m map[string]any) bool {
		switch m["msg"] {
		case "upgrade not started", "upgrade failed", "promoted":
			return true
		}
		return false
	}
	var outcomes []string
	succeeded, successAt := false, -1
	for extra := 0; extra < 40 && !succeeded; extra++ {
		// The limit is counted from the lowest free fd (the limit at which
		// baton gets none), read anew each time: a leaked fd must not
		// shift the steps.
		lowest := 0
		for open := fds(t, pid); open[lowest] != ""; lowest++ {
		}
		soft := lowest + extra
		from := len(b.all(func(map[string]any) bool { return true }))
		if err := setLimit(uint64(soft)); err != nil {
			t.Fatal(err)
		}
		var status chan string
		if extra == 0 {
			// A client now: baton cannot accept it until the limit is back.
			status = make(chan string, 1)
			go func() {
				out, code := runBatonNoT("status", "--socket", s.sock)
				status <- fmt.Sprintf("exit %d: %s", code, out)
			}()
		}
		if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		m, err := b.waitFrom(from, "the upgrade's outcome", logWait, decisive)
		if status != nil {
			b.waitFor("the control socket's accept retry", msg("control socket: accept failed; retrying", 0))
		}
		if err := setLimit(limit.Cur); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("limit %d: %v", soft, err)
		}
		if status != nil {
			select {
			case st := <-status:
				if !strings.HasPrefix(st, "exit 0:") {
					t.Errorf("status once the limit is back: %s", st)
				}
			case <-time.After(10 * time.Second):
				t.Error("status did not answer within 10s once the limit was back")
			}
		}
		why := str(m["err"]) + str(m["reason"])
		switch m["msg"] {
		case "promoted":
			succeeded = true
			_, successAt, _, _ = b.find(from, decisive)
			b.waitFor(fmt.Sprintf(`"retired" of generation %d`, serving), msg("retired", serving))
			serving = num(m["gen"])
			why = fmt.Sprintf("generation %d promoted", serving)
		case "upgrade failed":
			b.waitFor(fmt.Sprintf(`"retired" of generation %d`, num(m["gen"])), msg("retired", num(m["gen"])))
		}
		outcomes = append(outcomes, fmt.Sprintf("lowest free fd + %d: %s: %s", extra, m["msg"], why))
		if !succeeded && !strings.Contains(why, "too many open files") && !strings.Contains(why, "exited before it was ready") {
			t.Errorf("limit %d: %s: %s; want too many open files, or the service's own failure to start", soft, m["msg"], why)
		}
		answeredBy(t, addr, serving)
		// Each leak is reported once: the next step compares with what is.
		baseline = settledFDs(t, pid, baseline, fmt.Sprintf("after the upgrade at a limit of the lowest free fd + %d (%s)", extra, why))
	}
	t.Logf("outcomes:\n  %s", strings.Join(outcomes, "\n  "))
	if !succeeded {
		t.Error("no upgrade succeeded up to a limit of the lowest free fd + 40")
	}
	if _, i, _, _ := b.find(0, msg("process exited", 2)); i >= 0 && (successAt < 0 || i < successAt) {
		t.Error("a process of the serving generation exited during the failed upgrades")
	}

	s.write(t, serviceConfig{instances: 2, version: "9"})
	s.mustUpgrade(t)
	answeredBy(t, addr, serving+1)
	waitSent(t, load, load.Snapshot().Sent+50)
	noFailures(t, load)
	b.stop()
	s.nothingLeft(t, addr)
}
