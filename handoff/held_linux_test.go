package handoff

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestNotHeld: a socket this process holds is held; one only a child that
// closed it held is not.
func TestNotHeld(t *testing.T) {
	spec := ListenerSpec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}
	kept, err := Listen(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	other, err := Listen(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	keptIno, _ := kept.Inode()
	otherIno, _ := other.Inode()
	other.Close() // nobody holds it now (its inode is gone with it)
	missing, err := NotHeld(syscall.Getpgrp(), []uint64{keptIno, otherIno})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || missing[0] != otherIno {
		t.Errorf("missing %v, want only %d (closed); %d is held by this process", missing, otherIno, keptIno)
	}
	// A member of another group that holds nothing: everything missing.
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if missing, err := NotHeld(cmd.Process.Pid, []uint64{keptIno}); err != nil || len(missing) != 1 {
		t.Errorf("a group that holds nothing: missing %v, %v", missing, err)
	}
	_ = os.Getpid
}
