//go:build linux

// Command baton is a zero-downtime process supervisor with socket handoff.
// "baton help" lists its commands; README.md explains them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudflare/tableflip"

	"github.com/baton-sh/baton/handoff"
	"github.com/baton-sh/baton/supervisor"
)

// version is stamped by the Makefile through -ldflags.
var version = "dev"

const usage = `usage:
  baton run -c FILE [--log-format text|json]   supervise the service in FILE
  baton check -c FILE                          validate FILE, start nothing
  baton status [--json]                        the listeners and generations
  baton upgrade [--wait] [--timeout D]         start the next generation (as SIGHUP)
  baton upgrade --force [--wait]               the same in the failed state (after repeated reverts), ending it
  baton upgrade --self                         replace baton itself with the binary now at its path (as SIGUSR2)
  baton rollback [--wait] [--timeout D]        go back to the previous generation's config
  baton promote [--all]                        move the canary to its next step now (--all: to 100%)
  baton abort                                  undo the upgrade in progress, at any step
  baton flag list [--json]                     the feature flags and their values
  baton flag set NAME on|off|PERCENT           flip a feature flag (PERCENT: 10 or 10%); no process restarts
  baton flag reset NAME                        return a feature flag to its config's default
  baton stop                                   drain every generation and exit (as SIGTERM)
  baton version                                print the version

status, upgrade, rollback, promote, abort, flag and stop reach a running
baton through its control socket: give -c FILE (the socket named by the
config) or --socket PATH.

Signals to "baton run": SIGHUP upgrades (re-reads FILE, starts the next
generation alongside the serving one); SIGUSR2 upgrades baton itself;
SIGTERM or SIGINT drains and exits.

Exit status: 0 success; 1 the service could not be kept running, an
upgrade or rollback waited for with --wait failed or was reverted during
its probation, an upgrade was refused in the failed state, promote or
abort found nothing to act on, or a flag change was refused (a flag the
config does not declare); 2 usage, config or connection errors.
`

// usageError makes main exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	handoff.RunShim() // returns unless baton was started as a child's exec shim
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "baton: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "baton: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runCmd(rest, stderr)
	case "check":
		return checkCmd(rest, stdout, stderr)
	case "status":
		return statusCmd(rest, stdout, stderr)
	case "upgrade":
		return upgradeCmd(rest, stdout, stderr)
	case "rollback":
		return rollbackCmd(rest, stdout, stderr)
	case "promote":
		return promoteCmd(rest, stdout, stderr)
	case "abort":
		return abortCmd(rest, stdout, stderr)
	case "flag":
		return flagCmd(rest, stdout, stderr)
	case "stop":
		return stopCmd(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "baton %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

type commonFlags struct {
	config    string
	logFormat string
}

func parseFlags(name string, args []string, stderr io.Writer) (commonFlags, error) {
	var f commonFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "config `FILE` (TOML)")
	fs.StringVar(&f.config, "c", "", "config `FILE` (shorthand for --config)")
	if name == "run" {
		fs.StringVar(&f.logFormat, "log-format", "", "log format: text or json (default: [log] format, else text)")
	}
	if err := fs.Parse(args); err != nil {
		return f, usageError{err}
	}
	if fs.NArg() > 0 {
		return f, usageError{fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))}
	}
	if f.config == "" {
		return f, usageError{fmt.Errorf("%s: -c FILE is required", name)}
	}
	if f.logFormat != "" && f.logFormat != "text" && f.logFormat != "json" {
		return f, usageError{fmt.Errorf("%s: --log-format must be text or json, not %q", name, f.logFormat)}
	}
	return f, nil
}

func checkCmd(args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags("check", args, stderr)
	if err != nil {
		return err
	}
	if _, err := supervisor.LoadConfig(f.config); err != nil {
		return usageError{err}
	}
	fmt.Fprintf(stdout, "%s: ok\n", f.config)
	return nil
}

func runCmd(args []string, stderr io.Writer) error {
	// Sockets passed by socket activation, or by systemd's fd store after a
	// restart, are taken first, before anything could inherit them.
	activated, err := handoff.TakeActivated()
	if err != nil {
		return err
	}
	f, err := parseFlags("run", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := supervisor.LoadConfig(f.config)
	if err != nil {
		return usageError{err}
	}
	format := cfg.Log.Format
	if f.logFormat != "" {
		format = f.logFormat
	}
	log := newLogger(stderr, format)
	// Nothing baton inherited may leak into the service.
	if err := handoff.CloseOnExecInherited(); err != nil {
		return err
	}

	// A baton started by a self-upgrade inherits the listeners from its
	// predecessor, which serves until this one's first generation is ready.
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidFilePath(cfg), UpgradeTimeout: upgradeTimeout(cfg)})
	if err != nil {
		return fmt.Errorf("self-upgrade support: %w", err)
	}
	defer upg.Stop()
	handover := upg.HasParent()
	if handover {
		if activated, err = inherited(upg, cfg); err != nil {
			return err
		}
	}

	var sup *supervisor.Supervisor // OnServing needs it; it runs only once sup exists
	sup, err = supervisor.New(supervisor.Options{
		ConfigPath: f.config, Config: cfg, Logger: log,
		Activated: activated,
		// Under systemd, the sockets baton makes go into its fd store, so
		// that they outlive a crash or restart of baton.
		FDStore:  os.Getenv("NOTIFY_SOCKET") != "",
		Handover: handover,
		OnServing: func() {
			go func() { // tells the predecessor, which then drains and exits
				if err := upg.Ready(); err != nil {
					// The predecessor will give up on this baton and
					// route back to itself: this one must not stay.
					log.Error("cannot tell the previous baton that this one serves; stopping", "err", err)
					sup.Stop()
				}
			}()
		},
	})
	if err != nil {
		return err
	}
	// Subscribed here, before the supervisor runs, so that no event is missed.
	sdNotify := newSystemdNotifier(sup, log)
	ends := newEndpoints(cfg, sup, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sdNotify.Run(ctx)
	go ends.runMetrics(ctx)

	// The control socket comes first: a second baton for the same service
	// fails here, before it binds or starts anything. (During a
	// self-upgrade, the predecessor has let it go.)
	if err := ends.start(); err != nil {
		return err
	}
	defer ends.stop()
	if !handover {
		if err := upg.Ready(); err != nil { // writes the pid file
			return fmt.Errorf("self-upgrade support: %w", err)
		}
	}
	self := &selfUpgrader{upg: upg, sup: sup, endpoints: ends, pidFile: pidFilePath(cfg), log: log}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				switch sig {
				case syscall.SIGHUP:
					log.Info("SIGHUP: upgrade requested")
					sdNotify.Reloading(sup.RequestUpgrade)
				case syscall.SIGUSR2:
					log.Info("SIGUSR2: self-upgrade requested")
					go func() {
						if err := self.run(ctx); err != nil {
							log.Error("self-upgrade", "err", err)
						}
					}()
				default:
					log.Info("signal received; stopping", "signal", sig.String())
					sdNotify.Stopping()
					sup.Stop()
				}
			}
		}
	}()
	log.Info("baton starting", "version", version, "config", f.config, "pid", os.Getpid(),
		"control", cfg.Control.Socket, "self_upgrade", handover)
	err = sup.Run(ctx)
	sdNotify.Stopping() // however it stopped: `baton stop`, a crash loop, a failed start
	removeOwnPIDFile(pidFilePath(cfg))
	if err != nil {
		return err
	}
	select {
	case err := <-ends.failed:
		return err
	default:
	}
	log.Info("baton stopped")
	return nil
}
