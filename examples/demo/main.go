// Command demo is what `make demo` runs: it starts baton with the hello
// example, sends it traffic, upgrades it a few times with SIGHUP while the
// traffic flows, and reports how many requests failed. Zero is the point.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-sh/baton/internal/loadgen"
)

const (
	firstTimeout   = 15 * time.Second // for generation 1 to answer after baton starts
	upgradeTimeout = 30 * time.Second // for the next generation to answer after SIGHUP
	stopTimeout    = 40 * time.Second // for baton to exit after SIGTERM, before SIGKILL
	slowEvery      = 10               // every 10th request of a client is a slow one...
	slowMS         = 200              // ...taking this long, so upgrades find requests in flight
)

type options struct {
	baton, config, addr string
	upgrades, clients   int
	interval            time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.baton, "baton", "./bin/baton", "baton binary")
	flag.StringVar(&o.config, "config", "examples/hello/baton.toml", "baton config to run")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address the config listens on")
	flag.IntVar(&o.upgrades, "upgrades", 5, "number of upgrades (SIGHUP) to do")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients; half open a connection per request")
	flag.DurationVar(&o.interval, "interval", time.Second, "time between upgrades")
	flag.Parse()

	if err := run(o); err != nil {
		if !errors.Is(err, errFailed) { // the verdict said it all already
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(1)
	}
}

// errFailed is run's result when the demo ran to its end and failed.
var errFailed = errors.New("demo failed")

func run(o options) error {
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	if err := portFree(o.addr); err != nil {
		return err
	}
	url := "http://" + o.addr + "/"

	b, err := startBaton(ctx, o.baton, o.config)
	if err != nil {
		return err
	}
	// Whatever happens from here on, baton does not outlive the demo.
	defer func() { _ = b.stop() }() // for early returns, whose own error says more; after the stop below, a no-op

	fmt.Printf("baton started (pid %d); waiting for generation 1 at %s\n", b.cmd.Process.Pid, url)
	if _, err := loadgen.WaitFor(b.ctx, url, isGeneration(1), firstTimeout); err != nil {
		return b.explain(ctx, fmt.Errorf("generation 1 not serving: %w", err))
	}

	fmt.Printf("load: %d clients (half on fresh connections), every %dth request to /slow?ms=%d\n",
		o.clients, slowEvery, slowMS)
	load := loadgen.Run(ctx, loadgen.Options{URL: url, Clients: o.clients, SlowEvery: slowEvery, SlowMS: slowMS})
	defer load.Stop() // a no-op after the stop below

	var problems []string
	gen, done := 1, 0
	for i := 1; i <= o.upgrades; i++ {
		if !sleep(b.ctx, o.interval) {
			break
		}
		start := time.Now()
		if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			problems = append(problems, fmt.Sprintf("upgrade %d/%d: signal baton: %v", i, o.upgrades, err))
			break
		}
		if _, err := loadgen.WaitFor(b.ctx, url, isGeneration(gen+1), upgradeTimeout); err != nil {
			err = b.explain(ctx, err)
			fmt.Printf("upgrade %d/%d: generation %d not serving: %v\n", i, o.upgrades, gen+1, err)
			break
		}
		gen, done = gen+1, done+1
		s := load.Snapshot()
		fmt.Printf("upgrade %d/%d: generation %d serving after %v   (sent %d, failed %d)\n",
			i, o.upgrades, gen, time.Since(start).Round(time.Millisecond), s.Sent, s.Failed)
	}
	if done == o.upgrades {
		sleep(b.ctx, o.interval) // some traffic on the last generation too
	} else {
		problems = append(problems, fmt.Sprintf("%d of %d upgrades completed", done, o.upgrades))
	}
	if ctx.Err() != nil {
		problems = append(problems, "interrupted")
	}
	select {
	case <-b.exited:
		problems = append(problems, "baton exited before it was told to stop")
	default:
	}

	res := load.Stop()
	if err := b.stop(); err != nil {
		problems = append(problems, err.Error())
	}

	fmt.Printf("requests sent: %d   failed: %d   (generations seen: %s)\n",
		res.Sent, res.Failed, generations(res.Generations))
	reasons := slices.Collect(maps.Keys(res.Errors))
	slices.SortFunc(reasons, func(a, b string) int { return cmp.Compare(res.Errors[b], res.Errors[a]) })
	for _, r := range reasons {
		fmt.Printf("  %6d  %s\n", res.Errors[r], r)
	}
	if res.Failed > 0 {
		problems = append([]string{fmt.Sprintf("%d of %d requests failed", res.Failed, res.Sent)}, problems...)
	}
	if len(problems) > 0 {
		fmt.Printf("FAIL: %s\n", strings.Join(problems, "; "))
		return errFailed
	}
	fmt.Printf("PASS: %d upgrades under load, not one of %d requests failed\n", done, res.Sent)
	return nil
}

// portFree fails if something already listens on addr: the demo would
// measure that instead of baton.
func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is already in use; stop whatever listens there (an earlier demo?) and try again: %w", addr, err)
	}
	return ln.Close()
}

// baton is the supervisor under test, running in its own process group so
// that the demo decides when it stops and can kill it with its children.
type baton struct {
	cmd    *exec.Cmd
	ctx    context.Context // ends when baton exits or the demo is interrupted
	exited chan struct{}   // closed once cmd.Wait has returned
	err    error           // cmd.Wait's result; read only after exited is closed
}

func startBaton(ctx context.Context, path, config string) (*baton, error) {
	cmd := exec.Command(path, "run", "-c", config)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start baton (build it with `make` first?): %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	b := &baton{cmd: cmd, ctx: ctx, exited: make(chan struct{})}
	go func() {
		b.err = cmd.Wait()
		close(b.exited)
		cancel()
	}()
	return b, nil
}

// explain replaces err, a wait that ended early, by its cause when that is
// baton's exit or an interrupt.
func (b *baton) explain(ctx context.Context, err error) error {
	select {
	case <-b.exited:
		return fmt.Errorf("baton exited early: %v", b.err)
	default:
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return err
}

// stop sends baton SIGTERM and waits for it to exit; after stopTimeout it
// kills baton's process group. It reports a non-zero exit or the kill.
func (b *baton) stop() error {
	select {
	case <-b.exited:
		return b.exitErr()
	default:
	}
	// ESRCH (os.ErrProcessDone) means it is exiting already: the wait below sees it.
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return b.exitErr()
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL) // ESRCH: the group is gone already
	<-b.exited
	return fmt.Errorf("baton did not exit within %v of SIGTERM and was killed", stopTimeout)
}

func (b *baton) exitErr() error {
	if b.err != nil {
		return fmt.Errorf("baton exited: %w", b.err)
	}
	return nil
}

func isGeneration(g int) func(body string) bool {
	want := strconv.Itoa(g)
	return func(body string) bool { return loadgen.Generation(body) == want }
}

// sleep waits for d, or less if ctx ends first; it reports whether it slept
// the whole time.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// generations formats the generations seen: "1..6" when they run on without
// a gap, else a list.
func generations(seen map[string]int64) string {
	var nums []int
	var other []string
	for g := range seen {
		if n, err := strconv.Atoi(g); err == nil {
			nums = append(nums, n)
		} else {
			other = append(other, g)
		}
	}
	slices.Sort(nums)
	slices.Sort(other)
	var parts []string
	if len(nums) > 1 && nums[len(nums)-1]-nums[0] == len(nums)-1 {
		parts = append(parts, fmt.Sprintf("%d..%d", nums[0], nums[len(nums)-1]))
	} else {
		for _, n := range nums {
			parts = append(parts, strconv.Itoa(n))
		}
	}
	parts = append(parts, other...)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
