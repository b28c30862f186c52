//go:build !linux

package probe

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestNotSupported: where the mechanisms do not exist, each says so with
// ErrNotSupported rather than pretending.
func TestNotSupported(t *testing.T) {
	if _, err := TreeUsage(os.Getpid()); !errors.Is(err, ErrNotSupported) {
		t.Errorf("TreeUsage: %v", err)
	}
	if err := RunHook(context.Background(), Hook{Command: []string{"/bin/true"}}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("RunHook: %v", err)
	}
	if _, err := (Exec{Command: []string{"/bin/true"}}).Check(context.Background()); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Exec.Check: %v", err)
	}
}
