package supervisor

// Checks of the sections that configure baton itself rather than the
// service: [service] name, [control], [log] and [metrics].

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultControlSocket is the control socket of service name when the
// config gives none: /run/baton/NAME.sock for root, else
// $XDG_RUNTIME_DIR/baton/NAME.sock (or /tmp/baton-UID/NAME.sock without
// XDG_RUNTIME_DIR). Every command that reads the same config finds it.
func DefaultControlSocket(name string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/run/baton", name+".sock")
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "baton", name+".sock")
	}
	return filepath.Join(os.TempDir(), "baton-"+strconv.Itoa(os.Geteuid()), name+".sock")
}

// maxServiceName bounds [service] name, which ends up in a socket path.
const maxServiceName = 64

// serviceName is [service] name, or the config file's base name without
// its extension.
func (p *parser) serviceName(sec map[string]any) (string, error) {
	path := []string{"service", "name"}
	v, ok := sec["name"]
	if !ok {
		base := strings.TrimSuffix(filepath.Base(p.file), filepath.Ext(p.file))
		if checkServiceName(base) != nil {
			return "", p.errorf(-1, path, "missing, and the file name %q cannot stand in for it: set name = \"web\" (letters, digits, '.', '_', '-')", filepath.Base(p.file))
		}
		return base, nil
	}
	name, err := p.str(-1, v, path...)
	if err != nil {
		return "", err
	}
	if err := checkServiceName(name); err != nil {
		return "", p.errAt(-1, path, err)
	}
	return name, nil
}

func checkServiceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("is empty")
	case len(name) > maxServiceName:
		return fmt.Errorf("is %d bytes long, at most %d", len(name), maxServiceName)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a name", name)
	case strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		return fmt.Errorf("%q may only contain letters, digits, '.', '_' and '-'", name)
	}
	return nil
}

// control is the [control] section.
func (p *parser) control(sec map[string]any, service string) (ControlConfig, error) {
	c := ControlConfig{Socket: DefaultControlSocket(service), GID: -1}
	if v, ok := sec["socket"]; ok {
		path := []string{"control", "socket"}
		s, err := p.str(-1, v, path...)
		if err != nil {
			return c, err
		}
		switch {
		case !filepath.IsAbs(s):
			return c, p.errorf(-1, path, "%q is not an absolute path", s)
		case len(s) > maxUnixPath:
			return c, p.errorf(-1, path, "is %d bytes long; a unix socket path has at most %d", len(s), maxUnixPath)
		case strings.IndexByte(s, 0) >= 0:
			return c, p.errorf(-1, path, "contains a NUL byte")
		}
		c.Socket = s
	}
	if v, ok := sec["group"]; ok {
		path := []string{"control", "group"}
		g, err := p.str(-1, v, path...)
		if err != nil {
			return c, err
		}
		grp, err := user.LookupGroup(g)
		if err != nil {
			return c, p.errorf(-1, path, "no such group %q on this system", g)
		}
		gid, err := strconv.Atoi(grp.Gid)
		if err != nil {
			return c, p.errorf(-1, path, "group %q has a non-numeric id %q", g, grp.Gid)
		}
		c.Group, c.GID = g, gid
	}
	return c, nil
}

// metricsAddress is [metrics] address: an IP host:port, "" for none.
func (p *parser) metricsAddress(sec map[string]any) (string, error) {
	v, ok := sec["address"]
	if !ok {
		return "", nil
	}
	path := []string{"metrics", "address"}
	s, err := p.str(-1, v, path...)
	if err != nil {
		return "", err
	}
	addr, err := canonicalAddress("tcp", s)
	if err != nil {
		return "", p.errAt(-1, path, err)
	}
	if strings.HasSuffix(addr, ":0") {
		return "", p.errorf(-1, path, "needs a port: scrapers must know where to find the metrics")
	}
	return addr, nil
}
