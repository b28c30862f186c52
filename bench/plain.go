//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

// plainTarget is what `systemctl restart` does to a service that binds its
// own port: stop the old process (SIGTERM, wait until it has exited), then
// bind and start the new one. The harness plays the service's bind: it
// binds the address, hands the socket to hello as systemd socket activation
// would (through baton's exec shim, which sets LISTEN_PID) and closes its
// own copy, so the socket lives exactly as long as the process. Between the
// old process closing it and the new bind nobody listens.
type plainTarget struct {
	batonBin, helloBin string

	addr     string
	cmd      *exec.Cmd
	done     chan struct{} // closed once cmd.Wait has returned
	exitedAt time.Time     // when cmd.Wait returned; written before done is closed
	gen      int
	ups      []window
}

func (p *plainTarget) start() (string, error) {
	p.addr = "127.0.0.1:0"
	if err := p.spawn(1); err != nil {
		return "", err
	}
	return p.addr, nil
}

// spawn binds p.addr and starts generation gen of hello on it, then waits
// (bounded) until it answers.
func (p *plainTarget) spawn(gen int) error {
	var ln net.Listener
	var err error
	// Go sets SO_REUSEADDR, so connections of the old process in TIME_WAIT
	// do not stand in the way; retry briefly all the same.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ln, err = net.Listen("tcp4", p.addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("bind %s: %w", p.addr, err)
	}
	p.addr = ln.Addr().String()
	f, err := ln.(*net.TCPListener).File()
	_ = ln.Close() // the dup in f (or nothing, on error) is what hello gets
	if err != nil {
		return fmt.Errorf("listener fd: %w", err)
	}
	cmd := exec.Command(p.batonBin, "__baton-exec", p.helloBin, "hello")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"LISTEN_FDS=1", "LISTEN_FDNAMES=http",
		"BATON_GENERATION=" + strconv.Itoa(gen), "GREETING_VERSION=1",
	}
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = f.Close() // hello holds the socket now; the harness must not keep it listening
	if err != nil {
		return fmt.Errorf("start hello: %w", err)
	}
	p.cmd, p.done, p.gen = cmd, make(chan struct{}), gen
	go func() { _ = cmd.Wait(); p.exitedAt = time.Now(); close(p.done) }() // the status is read from ProcessState
	_, err = loadgen.WaitFor(context.Background(), "http://"+p.addr+"/", func(body string) bool {
		return loadgen.Generation(body) == strconv.Itoa(gen)
	}, 15*time.Second)
	return err
}

// halt sends SIGTERM and waits (bounded) for the process to exit, as
// systemd's stop does; after 40 s it kills the process group.
func (p *plainTarget) halt() error {
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // if it has exited already, done is closed
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return errors.New("hello did not exit within 40s after SIGTERM; killed")
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // whatever is left of its group; ESRCH is the usual answer
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("hello: %v", p.cmd.ProcessState)
	}
	return nil
}

func (p *plainTarget) upgrade() error {
	w := window{signal: time.Now(), from: p.gen, to: p.gen + 1}
	if err := p.halt(); err != nil {
		return err
	}
	w.gone = p.exitedAt
	if err := p.spawn(p.gen + 1); err != nil {
		return err
	}
	w.ready = time.Now()
	p.ups = append(p.ups, w)
	return nil
}

// windows are the restarts: SIGTERM until the new process answers.
func (p *plainTarget) windows() []window { return p.ups }

func (p *plainTarget) stop() error { return p.halt() }

func (p *plainTarget) log() string { return "" }
