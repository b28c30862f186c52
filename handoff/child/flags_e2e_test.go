package child

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFlagsProcess: a real process declares a flag, follows the file named
// in BATON_FLAGS_FILE as it changes, and stops cleanly on SIGTERM. Each
// step waits for the process to say which version it runs with.
func TestFlagsProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	writeFlags(t, path, 1, map[string]int{"shout": 100})
	h := startHelper(t, "flags", []string{FlagsFileEnv + "=" + path})
	if got := h.next(t); got != "version 1 shout=true other=true" {
		t.Fatalf("helper said %q", got)
	}
	writeFlags(t, path, 2, map[string]int{"shout": 0})
	if got := h.next(t); got != "version 2 shout=false other=true" { // other: its default, missing from the file
		t.Fatalf("helper said %q", got)
	}
	writeRaw(t, path, "{")
	if got := h.next(t); got != "version 2 error" {
		t.Fatalf("helper said %q", got)
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := h.rest(t); len(got) != 1 || got[0] != "stopped: terminated signal received" {
		t.Fatalf("helper said %q after SIGTERM", got)
	}
	if err := h.wait(); err != nil {
		t.Fatalf("helper: %v; stderr: %s", err, h.stderr.String())
	}
}

// flagsHelper prints the flags at each report of Watch until SIGTERM.
func flagsHelper() error {
	ctx, stop := StopContext(context.Background())
	defer stop()
	flags, err := NewFlags(map[string]int{"shout": 0, "other": 100})
	if err != nil {
		return err
	}
	err = flags.Watch(ctx, func(v int64, err error) {
		if err != nil {
			fmt.Printf("version %d error\n", v)
			return
		}
		fmt.Printf("version %d shout=%v other=%v\n", v, flags.Enabled("shout", "k"), flags.Enabled("other", "k"))
	})
	fmt.Printf("stopped: %v\n", context.Cause(ctx))
	return err
}
