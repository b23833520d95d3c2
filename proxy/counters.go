package proxy

import (
	"sync/atomic"

	"github.com/ipprot/ipprot/datafile"
)

// Counters are a Server's running totals, for metrics: connections ended
// by outcome, bytes by direction, recording errors. The proxy adds to them
// with single atomic additions (the bytes one per block, the rest one per
// connection), never under a lock; readers may call the methods at any
// time, from any goroutine. A Counters must not be copied once in use.
type Counters struct {
	// The two byte counts change with every block, the others once per
	// connection: each has a cache line of its own, so that the two
	// directions' CPUs do not take it from each other.
	bytes    [2]paddedInt64
	outcomes [len(outcomeNames)]atomic.Uint64
	recErrs  atomic.Uint64
}

type paddedInt64 struct {
	atomic.Int64
	_ [56]byte
}

// Connections returns the number of connections that ended with o.
func (c *Counters) Connections(o Outcome) uint64 {
	if int(o) >= len(c.outcomes) {
		return 0
	}
	return c.outcomes[o].Load()
}

// Bytes returns the bytes received from clients (datafile.In) or written
// to them (datafile.Out) so far, counted as the blocks move, also in
// sessions that still run.
func (c *Counters) Bytes(dir datafile.Direction) int64 { return c.bytes[dir].Load() }

// RecordingErrors returns the number of sessions whose recording failed:
// those that ended with outcome RecordError, counted as each one failed
// where it went on forwarding unrecorded (Config.ContinueOnRecordError).
func (c *Counters) RecordingErrors() uint64 { return c.recErrs.Load() }

// Outcomes returns every outcome, in order, for those who list them.
func Outcomes() []Outcome {
	all := make([]Outcome, len(outcomeNames))
	for i := range all {
		all[i] = Outcome(i)
	}
	return all
}

// countBytes adds n bytes of direction dir, if the server counts.
func (s *Server) countBytes(dir datafile.Direction, n int) {
	if c := s.cfg.Counters; c != nil && n > 0 {
		c.bytes[dir].Add(int64(n))
	}
}
