package handoff

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseOnExecInherited marks every open fd above stderr close-on-exec. A
// supervisor calls it once at start: fds it inherited without the flag
// (from a shell, a test runner, a careless parent) would otherwise leak into
// every child, since ForkExec passes on whatever is not close-on-exec.
func CloseOnExecInherited() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open fds: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC) // EBADF: ReadDir's own fd, closed by now
	}
	return nil
}
