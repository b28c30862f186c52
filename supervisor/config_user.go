package supervisor

// Checks of the identity the service runs as: [service] user, group,
// supplementary_groups and no_new_privs.

import (
	"fmt"
	"os/user"
	"strconv"
)

// Credentials is who a generation's processes run as. The zero value (and
// nil) means baton's own identity.
type Credentials struct {
	User   string // the user's name (also when configured by uid)
	Home   string // the user's home directory, for HOME
	UID    uint32
	GID    uint32   // [service] group, else the user's primary group
	Groups []uint32 // supplementary groups: as configured, else the user's own
}

// identity reads the [service] keys that change who the service runs as.
func (p *parser) identity(sec map[string]any, s *ServiceConfig) error {
	if v, ok := sec["no_new_privs"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return p.errorf(-1, []string{"service", "no_new_privs"}, "must be true or false, not %s", describe(v))
		}
		s.NoNewPrivs = b
	}
	uv, hasUser := sec["user"]
	if !hasUser {
		for _, k := range []string{"group", "supplementary_groups"} {
			if _, ok := sec[k]; ok {
				return p.errorf(-1, []string{"service", k}, "needs [service] user: the service runs as baton's own user otherwise")
			}
		}
		return nil
	}
	name, err := p.str(-1, uv, "service", "user")
	if err != nil {
		return err
	}
	u, err := lookupUser(name)
	if err != nil {
		return p.errAt(-1, []string{"service", "user"}, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	c := &Credentials{User: u.Username, Home: u.HomeDir, UID: uint32(uid), GID: uint32(gid)}
	if gv, ok := sec["group"]; ok {
		g, err := p.str(-1, gv, "service", "group")
		if err != nil {
			return err
		}
		if c.GID, err = lookupGID(g); err != nil {
			return p.errAt(-1, []string{"service", "group"}, err)
		}
	}
	if sv, ok := sec["supplementary_groups"]; ok {
		path := []string{"service", "supplementary_groups"}
		list, isList := sv.([]any)
		if !isList {
			return p.errorf(-1, path, `must be a list of group names such as ["www-data"] (or [] for none), not %s`, describe(sv))
		}
		c.Groups = []uint32{}
		for _, e := range list {
			g, ok := e.(string)
			if !ok {
				return p.errorf(-1, path, "must hold group names, not %s", describe(e))
			}
			gid, err := lookupGID(g)
			if err != nil {
				return p.errAt(-1, path, err)
			}
			c.Groups = append(c.Groups, gid)
		}
	} else {
		// As login and systemd's User= do: the user's own groups.
		ids, err := u.GroupIds()
		if err != nil {
			return p.errorf(-1, []string{"service", "user"}, "cannot read the groups of %q: %v", name, err)
		}
		for _, id := range ids {
			n, _ := strconv.ParseUint(id, 10, 32)
			c.Groups = append(c.Groups, uint32(n))
		}
	}
	s.Credentials = c
	return nil
}

// lookupUser takes a user name or a numeric uid.
func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
	}
	return nil, fmt.Errorf("no such user %q on this system", name)
}

// lookupGID takes a group name or a numeric gid.
func lookupGID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if n, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			return uint32(n), nil
		}
		return 0, fmt.Errorf("no such group %q on this system", name)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric id %q", name, g.Gid)
	}
	return uint32(n), nil
}
