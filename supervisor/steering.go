//go:build linux

package supervisor

// Routing: which sockets the steering program of each steered listener
// gives new connections to. The program knows two generations, A and B,
// and a weight: the serving generation is always A, the candidate B, and
// the weight is the candidate's percent. A promotion moves B to 100%, then
// renames the halves (Swap), so the new generation is A, and empties B.
// Called by the event loop only, which owns every listener's steering.
//
// Listeners in shared mode have no program: every process of every
// generation accepts on the one socket, and these calls skip them.

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/handoff"
)

// The halves of the steering program: the serving generation, the candidate.
const (
	genA = handoff.GenerationA
	genB = handoff.GenerationB
)

// steeredListeners reports whether any listener is steered.
func (s *Supervisor) steeredListeners() bool {
	for _, l := range s.listeners {
		if l.steer != nil {
			return true
		}
	}
	return false
}

// exactWeights reports whether every listener is steered, so that a
// canary's weights are exact for the whole service.
func (s *Supervisor) exactWeights() bool {
	for _, l := range s.listeners {
		if l.steer == nil && l.mode != ModePrivate {
			return false
		}
	}
	return true
}

// routedFDs are the sockets of listener i that g's routed instances own,
// in slot order.
func routedFDs(g *generation, i int) []int {
	var fds []int
	if g == nil {
		return nil
	}
	for _, in := range g.instances {
		if in.routed && in.owned[i] {
			fds = append(fds, in.sockets[i].FD())
		}
	}
	return fds
}

// forSteered runs f for every steered listener, stopping at the first
// error, which names the listener.
func (s *Supervisor) forSteered(what string, f func(i int, st *handoff.WeightedSteering) error) error {
	if s.handedOver {
		return nil // the successor owns the routing now
	}
	for i, l := range s.listeners {
		if l.steer == nil {
			continue
		}
		if err := f(i, l.steer); err != nil {
			return fmt.Errorf("%s: %s: %w", l.spec, what, err)
		}
	}
	return nil
}

// routeSet makes g's routed instances the sockets of half gen (A or B).
func (s *Supervisor) routeSet(gen int, g *generation) error {
	return s.forSteered(fmt.Sprintf("route generation %d", idOf(g)), func(i int, st *handoff.WeightedSteering) error {
		return st.SetGeneration(gen, routedFDs(g, i))
	})
}

// routeWeight gives the candidate (B) weight percent of new connections.
func (s *Supervisor) routeWeight(weight int) error {
	defer s.markShares()
	return s.forSteered(fmt.Sprintf("set weight %d%%", weight), func(_ int, st *handoff.WeightedSteering) error {
		return st.SetWeight(weight)
	})
}

// routePromote gives every new connection to g (in B), and makes it A. The
// generation that was A is then in B at weight 0: a standby when keep is
// set, else its sockets leave the program's slots and only empty their
// queues from now on.
func (s *Supervisor) routePromote(g *generation, keep bool) error {
	defer s.markShares()
	return s.forSteered(fmt.Sprintf("promote generation %d", g.id), func(i int, st *handoff.WeightedSteering) error {
		if err := st.SetGeneration(genB, routedFDs(g, i)); err != nil {
			return err
		}
		if err := st.SetWeight(100); err != nil {
			return err
		}
		if err := st.Swap(); err != nil {
			return err
		}
		if keep {
			return nil
		}
		return st.SetGeneration(genB, nil)
	})
}

// routeAbort gives every new connection back to the serving generation (A)
// and empties B.
func (s *Supervisor) routeAbort() error {
	defer s.markShares()
	return s.forSteered("send every connection back to the serving generation", func(_ int, st *handoff.WeightedSteering) error {
		if err := st.SetWeight(0); err != nil {
			return err
		}
		return st.SetGeneration(genB, nil)
	})
}

// routeOnly makes g the one routed generation (A, at 100%), whatever the
// program's slots held before: nothing (a new program), or the sockets of a
// previous baton (fd store, handover), which leave the slots as g's take
// them; their queues empty into g's as their owner closes them.
func (s *Supervisor) routeOnly(g *generation) error {
	defer s.markShares()
	return s.forSteered(fmt.Sprintf("route generation %d", g.id), func(i int, st *handoff.WeightedSteering) error {
		fds := routedFDs(g, i)
		err := st.SetGeneration(genA, fds)
		if errors.Is(err, unix.EBUSY) {
			// They sit in B already: B takes everything and becomes A.
			if err := st.SetWeight(100); err != nil {
				return err
			}
			if err := st.Swap(); err != nil {
				return err
			}
			return st.SetGeneration(genB, nil)
		}
		if err != nil {
			return err
		}
		if err := st.SetWeight(0); err != nil {
			return err
		}
		return st.SetGeneration(genB, nil)
	})
}

// markShares starts a new measurement of the shares: the counters now are
// the base the next shares are measured from.
func (s *Supervisor) markShares() {
	for _, l := range s.listeners {
		if l.steer == nil {
			continue
		}
		if c, err := l.steer.Counts(); err == nil {
			l.base = c
		}
	}
}

// measured is the number of new connections the steering program gave to
// each generation (A, B) of every steered listener since the last routing
// change.
func (s *Supervisor) measured() (a, b uint64) {
	for _, l := range s.listeners {
		if l.steer == nil {
			continue
		}
		c, err := l.steer.Counts()
		if err != nil {
			continue
		}
		for i := range handoff.WeightedInstances {
			a += c.A[i] - l.base.A[i]
			b += c.B[i] - l.base.B[i]
		}
	}
	return a, b
}
