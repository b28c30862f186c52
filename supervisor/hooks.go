//go:build linux

package supervisor

// Hooks: commands run around an upgrade ([hooks]). pre_start runs before a
// candidate starts and its failure aborts the upgrade, leaving the serving
// generation as it is; post_promote runs once an upgrade is final (after
// probation), post_revert after a revert or a failed or aborted upgrade.
// The post hooks' failures are logged and change nothing. Hooks run as the
// service's user, in its directory, with a minimal environment that says
// what happened; none outlives baton. The loop starts them; they run on
// goroutines of their own and report back by event.

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/baton-sh/baton/probe"
)

type (
	// preparing is an upgrade whose pre_start hook runs.
	preparing struct {
		cfg   *Config
		reply chan<- upgradeResult
	}
	preStartDone struct {
		prep *preparing
		err  error
	}
)

// hookCommand is the command of the named hook in cfg, nil if none.
func hookCommand(cfg *Config, name string) []string {
	switch name {
	case "pre_start":
		return cfg.Hooks.PreStart
	case "post_promote":
		return cfg.Hooks.PostPromote
	case "post_revert":
		return cfg.Hooks.PostRevert
	}
	return nil
}

// hook describes running the named hook of cfg for generation gen.
func (s *Supervisor) hook(cfg *Config, name string, gen int, reason string) probe.Hook {
	env := map[string]string{"PATH": childPath()}
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range cfg.Service.Environment {
		env[k] = v
	}
	env["BATON_HOOK"] = name
	env["BATON_SERVICE"] = cfg.Service.Name
	env["BATON_CONFIG"] = s.opts.ConfigPath
	env["BATON_GENERATION"] = strconv.Itoa(gen)
	env["BATON_SERVING"] = strconv.Itoa(s.servingID())
	if reason != "" {
		env["BATON_REASON"] = reason
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return probe.Hook{Command: hookCommand(cfg, name), Timeout: cfg.Hooks.Timeout, Env: out,
		Dir: cfg.Service.Directory, Credential: credential(cfg.Service.Credentials)}
}

// startHook runs h on a goroutine that baton's teardown waits for, and
// calls done with its outcome there.
func (s *Supervisor) startHook(name string, h probe.Hook, done func(error)) {
	s.log.Info("hook started", "hook", name, "command", strings.Join(h.Command, " "))
	s.hooks.Add(1)
	go func() {
		defer s.hooks.Done()
		done(probe.RunHook(s.hookCtx, h))
	}()
}

// runHook runs a post_* hook of g's config, if it has one, and logs its
// outcome.
func (s *Supervisor) runHook(name string, g *generation, reason string) {
	if hookCommand(g.cfg, name) == nil {
		return
	}
	s.startHook(name, s.hook(g.cfg, name, g.id, reason), func(err error) {
		if err != nil {
			s.log.Error("hook failed", "hook", name, "gen", g.id, "err", err)
			return
		}
		s.log.Info("hook done", "hook", name, "gen", g.id)
	})
}

// prepare runs cfg's pre_start hook before the upgrade to cfg starts.
func (s *Supervisor) prepare(cfg *Config, reply chan<- upgradeResult) {
	prep := &preparing{cfg: cfg, reply: reply}
	s.preparing = prep
	s.startHook("pre_start", s.hook(cfg, "pre_start", s.nextID, ""), func(err error) {
		s.send(preStartDone{prep: prep, err: err})
	})
}

// onPreStartDone starts the upgrade whose pre_start hook passed, or fails it.
func (s *Supervisor) onPreStartDone(ev preStartDone) {
	if s.preparing != ev.prep {
		return
	}
	s.preparing = nil
	fail := func(err error) {
		s.log.Error("upgrade not started", "err", err, "serving", s.servingID())
		s.emit(Event{Kind: EventFailed, Reason: err.Error()})
		if ev.prep.reply != nil {
			ev.prep.reply <- upgradeResult{err: fmt.Errorf("%w: %w", ErrUpgradeFailed, err)}
		}
		s.nextQueued()
	}
	switch {
	case ev.err != nil:
		fail(fmt.Errorf("pre_start hook failed: %w", ev.err))
	case s.stopping:
		fail(fmt.Errorf("baton is stopping"))
	default:
		s.log.Info("upgrade started", "serving", s.servingID(), "gen", s.nextID)
		if err := s.startCandidate(ev.prep.cfg, false, ev.prep.reply); err != nil {
			fail(err)
		}
	}
}

// stopHooks ends the hooks still running and waits for them.
func (s *Supervisor) stopHooks() {
	s.hookCancel()
	s.hooks.Wait()
}
