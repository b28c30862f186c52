package supervisor

// The checks of [[listener]] entries: names (entries of LISTEN_FDNAMES),
// networks, addresses (IP addresses written the one way net/netip writes
// them, or unix socket paths and abstract names) and socket modes, and that
// no two listeners share a name or an address.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/baton-sh/baton/handoff"
)

var networks = []string{"tcp", "tcp4", "tcp6", "unix", "udp", "udp4", "udp6"}

// maxUnixPath is the longest unix socket address: sun_path is 108 bytes, with
// room for the terminating NUL of a path (an abstract name's leading NUL
// replaces the '@').
const maxUnixPath = 107

// listeners checks the listener tables, in file order; there must be at
// least one.
func (p *parser) listeners(tables []map[string]any) ([]handoff.ListenerSpec, error) {
	if len(tables) == 0 {
		return nil, p.errorf(-1, []string{"listener"}, "missing: the config needs at least one listener, e.g.\n\t[[listener]]\n\tname = \"http\"\n\taddress = \"127.0.0.1:8080\"")
	}
	specs := make([]handoff.ListenerSpec, 0, len(tables))
	names := make(map[string]int)     // name → index of its listener
	addresses := make(map[string]int) // transport and address → index of its listener
	for i, t := range tables {
		spec, err := p.listener(i, t)
		if err != nil {
			return nil, err
		}
		if j, dup := names[spec.Name]; dup {
			return nil, p.errorf(i, []string{"listener", "name"}, "%q is already the name of the listener at line %d; names must be unique", spec.Name, p.lines.line(j, "listener", "name"))
		}
		names[spec.Name] = i

		key := transport(spec.Network) + " " + spec.Address
		ephemeral := !spec.IsUnix() && strings.HasSuffix(spec.Address, ":0") // a free port each
		if j, dup := addresses[key]; dup && !ephemeral {
			return nil, p.errorf(i, []string{"listener", "address"}, "%s %s is already the address of the listener at line %d", spec.Network, spec.Address, p.lines.line(j, "listener", "address"))
		}
		addresses[key] = i
		specs = append(specs, spec)
	}
	return specs, nil
}

// transport is what two listeners must share to conflict.
func transport(network string) string {
	switch network {
	case "udp", "udp4", "udp6":
		return "udp"
	case "unix":
		return "unix"
	}
	return "tcp"
}

// listener checks listener i.
func (p *parser) listener(i int, t map[string]any) (handoff.ListenerSpec, error) {
	var spec handoff.ListenerSpec
	key := func(k string) []string { return []string{"listener", k} }

	if t["name"] == nil {
		return spec, p.errorf(i, key("name"), "missing: each listener needs a name, its entry in LISTEN_FDNAMES, e.g. name = \"http\"")
	}
	name, err := p.str(i, t["name"], key("name")...)
	if err != nil {
		return spec, err
	}
	if err := checkListenerName(name); err != nil {
		return spec, p.errAt(i, key("name"), err)
	}
	spec.Name = name

	if spec.Network, err = p.oneOf(i, t["network"], "tcp", networks, key("network")...); err != nil {
		return spec, err
	}

	if t["address"] == nil {
		return spec, p.errorf(i, key("address"), "missing: listener %q needs an address, e.g. address = \"127.0.0.1:8080\"", name)
	}
	addr, err := p.str(i, t["address"], key("address")...)
	if err != nil {
		return spec, err
	}
	if spec.IsUnix() {
		err = checkUnixAddress(addr)
	} else {
		addr, err = canonicalAddress(spec.Network, addr)
	}
	if err != nil {
		return spec, p.errAt(i, key("address"), err)
	}
	spec.Address = addr

	if v := t["private"]; v != nil {
		b, ok := v.(bool)
		if !ok {
			return spec, p.errorf(i, key("private"), "must be true or false, not %s", describe(v))
		}
		if b && (spec.IsUnix() || spec.IsPacket() || !strings.HasSuffix(addr, ":0")) {
			return spec, p.errorf(i, key("private"), "a private listener gives each instance its own TCP port, so its address must be an IP with port 0, e.g. \"127.0.0.1:0\"; not %s %s", spec.Network, addr)
		}
		spec.Private = b
	}
	if v := t["mode"]; v != nil {
		switch {
		case !spec.IsUnix():
			return spec, p.errorf(i, key("mode"), "only applies to unix sockets, and this listener's network is %q: remove mode", spec.Network)
		case strings.HasPrefix(addr, "@"):
			return spec, p.errorf(i, key("mode"), "an abstract socket (%s) has no file to set permissions on: remove mode", addr)
		}
		s, ok := v.(string)
		if !ok {
			return spec, p.errorf(i, key("mode"), "must be a string of octal digits such as \"0660\", not %s", describe(v))
		}
		mode, err := parseMode(s)
		if err != nil {
			return spec, p.errAt(i, key("mode"), err)
		}
		spec.Mode = mode
	}
	return spec, nil
}

// checkListenerName follows sd_listen_fds_with_names: the name is one entry
// of the ':'-separated LISTEN_FDNAMES.
func checkListenerName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > 255:
		return fmt.Errorf("is %d bytes long; the limit is 255", len(name))
	}
	for _, c := range []byte(name) {
		switch {
		case c == ':':
			return fmt.Errorf("%q contains ':', which separates the names in LISTEN_FDNAMES", name)
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("%q may only have printable ASCII characters, without whitespace", name)
		}
	}
	return nil
}

func checkUnixAddress(addr string) error {
	switch {
	case strings.IndexByte(addr, 0) >= 0:
		return errors.New("contains a NUL byte")
	case addr == "@":
		return errors.New(`"@" needs a name after it for an abstract socket, e.g. "@baton-http"`)
	case !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@"):
		return fmt.Errorf("unix socket %q must be an absolute path (starting with /) or an abstract name (starting with @)", addr)
	case len(addr) > maxUnixPath:
		return fmt.Errorf("unix socket address is %d bytes long; the limit is %d", len(addr), maxUnixPath)
	}
	return nil
}

// canonicalAddress checks an IP "host:port" address and writes it the way
// net/netip does, so that the same address is always the same string.
func canonicalAddress(network, addr string) (string, error) {
	const form = `write host:port with an IP address, e.g. "127.0.0.1:8080", "[::1]:8080", or ":8080" for all addresses`
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w; %s", err, form)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		if port != "" && strings.Trim(port, "0123456789") == "" {
			return "", fmt.Errorf("port %s in %q is out of range: it must be 0 to 65535", port, addr)
		}
		return "", fmt.Errorf("port %q in %q is not a number; %s", port, addr, form)
	}
	portStr := strconv.FormatUint(n, 10)
	if host == "" {
		return ":" + portStr, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("host %q in %q is not an IP address; baton does not look up host names: use an IP address such as 127.0.0.1 or ::1, or an empty host (\":%s\") for all addresses", host, addr, portStr)
	}
	switch {
	case strings.HasSuffix(network, "4") && !ip.Unmap().Is4():
		return "", fmt.Errorf("%s is not an IPv4 address, which network %q needs", host, network)
	case strings.HasSuffix(network, "6") && ip.Is4():
		return "", fmt.Errorf("%s is not an IPv6 address, which network %q needs", host, network)
	}
	return net.JoinHostPort(ip.String(), portStr), nil
}

// parseMode parses permission bits written in octal, like chmod's.
func parseMode(s string) (os.FileMode, error) {
	const form = `write the permission bits in octal, e.g. "0660"`
	if s == "" || len(s) > 4 || strings.Trim(s, "01234567") != "" {
		return 0, fmt.Errorf("invalid mode %q: %s", s, form)
	}
	m, err := strconv.ParseUint(s, 8, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("invalid mode %q: %w; %s", s, err, form)
	case m > 0o777:
		return 0, fmt.Errorf("invalid mode %q: only permission bits (at most 0777) apply to a socket", s)
	case m == 0:
		return 0, fmt.Errorf("mode %q would let no one connect; %s, or remove mode for the default", s, form)
	}
	return os.FileMode(m), nil
}
