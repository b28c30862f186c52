//go:build linux

package handoff

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the exec shim and as the helper
// programs the tests start as children.
func TestMain(m *testing.M) {
	RunShim()
	if name := os.Getenv("HANDOFF_TEST_HELPER"); name != "" {
		helpers[name]()
		os.Exit(0)
	}
	if err := CloseOnExecInherited(); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

var helpers = map[string]func(){}
