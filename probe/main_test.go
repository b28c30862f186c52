package probe

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// helpers are the programs the test binary becomes when PROBE_HELPER names
// one, so that tests can spawn real processes without depending on what
// the machine has installed.
var helpers = map[string]func() int{}

// usedHelpers records which helpers the tests started; TestMain fails a
// full run that left one unused, so none rots unnoticed.
var usedHelpers sync.Map

// helperCommand returns a command that runs the named helper with extra
// environment variables.
func helperCommand(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	if helpers[name] == nil {
		t.Fatalf("no helper %q", name)
	}
	usedHelpers.Store(name, true)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{"PROBE_HELPER=" + name}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestMain dispatches to a helper program, or runs the tests and checks
// for leaked goroutines.
func TestMain(m *testing.M) {
	if name := os.Getenv("PROBE_HELPER"); name != "" {
		h := helpers[name]
		if h == nil {
			fmt.Fprintf(os.Stderr, "unknown PROBE_HELPER %q\n", name)
			os.Exit(2)
		}
		os.Exit(h())
	}
	flag.Parse()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if code == 0 && !testing.Short() && flag.Lookup("test.run").Value.String() == "" {
		var unused []string
		for name := range helpers {
			if _, ok := usedHelpers.Load(name); !ok {
				unused = append(unused, name)
			}
		}
		sort.Strings(unused)
		if len(unused) > 0 {
			fmt.Fprintln(os.Stderr, "helpers no test used:", unused)
			code = 1
		}
	}
	os.Exit(code)
}
