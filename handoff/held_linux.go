package handoff

// Whether a service still holds the sockets it was handed: baton keeps its
// own copy of every socket, so one that the service closed goes on
// listening, and connections routed to it would wait where nobody accepts.

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode is the socket's inode number, which /proc/PID/fd links name
// ("socket:[INODE]").
func (s *Socket) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		return 0, fmt.Errorf("%s: fstat: %w", s.spec, err)
	}
	return st.Ino, nil
}

// NotHeld returns those of inodes that no process of process group pgid
// holds open. The group's leader is looked at first; the other members
// (a master that forked workers, a shell that exec'd nothing) only if the
// leader lacks some. A process that exits meanwhile is skipped.
func NotHeld(pgid int, inodes []uint64) ([]uint64, error) {
	want := map[uint64]bool{}
	for _, ino := range inodes {
		want[ino] = true
	}
	heldBy(pgid, want)
	if len(want) == 0 {
		return nil, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		if g, err := unix.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		heldBy(pid, want)
		if len(want) == 0 {
			return nil, nil
		}
	}
	var missing []uint64
	for _, ino := range inodes {
		if want[ino] {
			missing = append(missing, ino)
		}
	}
	return missing, nil
}

// heldBy deletes from want the socket inodes process pid holds.
func heldBy(pid int, want map[uint64]bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // gone, or not ours to read
	}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		if err == nil {
			delete(want, ino)
		}
	}
}
