//go:build linux

package metrics

import "github.com/baton-sh/baton/probe"

// procTable is one pass over /proc (probe.ProcTable), taken once per
// scrape so that the descendants of all generations are found without
// reading /proc again for each of them.
type procTable struct{ *probe.ProcTable }

// usage is the resources of a generation's process trees.
type usage struct {
	RSS uint64  // bytes, summed over the processes
	CPU float64 // seconds, user and system
}

func readProcTable(root string) (*procTable, error) {
	t, err := probe.ReadProcTable(root)
	if err != nil {
		return nil, err
	}
	return &procTable{t}, nil
}

// treeUsage sums the trees of roots, each process once (probe.ProcTable's
// Usage); ok is false if every root is gone.
func (t *procTable) treeUsage(roots ...int) (usage, bool) {
	u, ok := t.Usage(roots...)
	return usage{RSS: u.RSSBytes, CPU: u.CPUSeconds}, ok
}
