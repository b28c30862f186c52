//go:build linux

package control

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// peer is who is at the other end of a connection, as the kernel saw it at
// connect time (SO_PEERCRED).
type peer struct{ pid, uid, gid int }

func peerOf(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}, nil
}

// allowed: root, baton's own user, and members of the configured group.
func (s *Server) allowed(p peer) bool {
	switch {
	case p.uid == 0 || p.uid == s.uid:
		return true
	case s.opts.GID < 0:
		return false
	case p.gid == s.opts.GID:
		return true
	}
	// Supplementary groups are not in SO_PEERCRED. The pid is the process
	// that connected; 0 when it is in a pid namespace we cannot see, and
	// then nothing can be read about it.
	if p.pid <= 0 {
		return false
	}
	groups, err := procGroups(p.pid)
	if err != nil {
		s.log.Warn("control connection: cannot read the peer's groups", "pid", p.pid, "err", err)
		return false
	}
	for _, g := range groups {
		if g == s.opts.GID {
			return true
		}
	}
	return false
}

// procGroups reads the supplementary groups of pid from /proc/PID/status.
func procGroups(pid int) ([]int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	return parseGroups(b)
}

// parseGroups finds the "Groups:" line of a /proc/PID/status file.
func parseGroups(status []byte) ([]int, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Groups:"))
		if !ok {
			continue
		}
		var groups []int
		for _, f := range bytes.Fields(rest) {
			g, err := strconv.Atoi(string(f))
			if err != nil {
				return nil, fmt.Errorf("bad group %q in Groups: line", f)
			}
			groups = append(groups, g)
		}
		return groups, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no Groups: line")
}
