//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestJournalGetsNoTimestamps: under journald (JOURNAL_STREAM names
// stderr), baton's lines carry no time of their own; elsewhere they do.
func TestJournalGetsNoTimestamps(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		for _, journal := range []bool{false, true} {
			f, err := os.Create(filepath.Join(t.TempDir(), "log"))
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(f.Name(), &st); err != nil {
				t.Fatal(err)
			}
			if journal {
				t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
			} else {
				t.Setenv("JOURNAL_STREAM", "1:2")
			}
			newLogger(f, format).Info("promoted", "gen", 2)
			f.Close()
			out, _ := os.ReadFile(f.Name())
			hasTime := strings.Contains(string(out), "time")
			if hasTime == journal {
				t.Errorf("format %s, journal %v: %q", format, journal, out)
			}
			if format == "json" && !strings.HasPrefix(string(out), "{") {
				t.Errorf("json format wrote %q", out)
			}
		}
	}
}
