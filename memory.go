package main

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// The runtime keeps the heap and the stacks a burst of connections grew
// (5,000 clients opening at once: each start's goroutine grows its stack
// while it dials) and gives the free part back to the system only down to
// about its heap goal, which the burst doubled: idle connections measured
// 10.4 KiB of RSS each after such a burst, against 4.4 KiB when the same
// connections arrived one by one. trimMemory gives the free heap back once
// the heap is quiet (no garbage collection ran for trimEvery) and holds
// more than trimAbove free: after a burst, not under a steady load, where
// the memory would be taken again at once.
const (
	trimEvery = 5 * time.Second
	trimAbove = 4 << 20 // free heap bytes worth a collection to give back
)

// trimMemory checks every trimEvery, until ctx ends, whether the heap has
// been quiet and holds more than trimAbove bytes of free heap, and if so
// returns them to the system.
func trimMemory(ctx context.Context) {
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/memory/classes/heap/free:bytes"}}
	var lastCycles uint64
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 || samples[1].Value.Kind() != metrics.KindUint64 {
			return // the runtime no longer has these metrics: nothing to go by
		}
		cycles, free := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		if cycles == lastCycles && free > trimAbove {
			debug.FreeOSMemory()
			metrics.Read(samples[:1])
			cycles = samples[0].Value.Uint64()
		}
		lastCycles = cycles
	}
}

// gcFloor is the least garbage the heap may gather between two garbage
// collections: Go's default lets it gather as much as is live. A TLS
// handshake allocates a few hundred KB (the key exchange's keys) while a
// proxy's live heap can be a few MB: Go collected dozens of times a
// second. 8 MiB gave 1.09x TLS connections/s; more gains more and holds
// more garbage (docs/design.md, "A floor under the heap goal"). Once the
// live heap is larger than the floor, Go's default holds.
const gcFloor = 8 << 20

// gcMaxPercent is the percentage at which the runtime's least heap goal
// (4 MiB at 100) is gcFloor.
const gcMaxPercent = gcFloor * 100 / (4 << 20)

// floorGC keeps the heap goal at least gcFloor above the live heap: after
// each garbage collection it sets the GC percentage to what gives that
// goal, 100 (Go's default) at least. A GOGC the operator set is left
// alone (GOGC=off stays off). However often the daemon starts in one
// process (the tests start it many times), one chain of sentinels runs.
func floorGC() {
	if os.Getenv("GOGC") != "" || !floorOn.CompareAndSwap(false, true) {
		return
	}
	runtime.SetFinalizer(&gcSentinel{gen: floorGen.Add(1)}, afterGC)
}

// stopFloorGC ends the chain at the next collection (tests).
func stopFloorGC() {
	floorGen.Add(1)
	floorOn.Store(false)
}

var (
	floorOn  atomic.Bool
	floorGen atomic.Uint64 // the running chain's; a sentinel of another ends its chain
)

// gcSentinel is garbage from the start: its finalizer runs after each
// collection and makes a new one. (It holds more than 16 bytes of
// scalars or a pointer: never in the tiny allocator, where finalizers may
// not run.)
type gcSentinel struct {
	gen uint64
	_   *byte
}

var gcLive = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

func afterGC(s *gcSentinel) {
	if s.gen != floorGen.Load() {
		return
	}
	metrics.Read(gcLive)
	if gcLive[0].Value.Kind() != metrics.KindUint64 {
		return // the runtime no longer says: Go's default, and no more tuning
	}
	// The runtime's least heap goal, 4 MiB, grows with the percentage
	// too: above gcMaxPercent it alone would let more than gcFloor of
	// garbage gather.
	percent := 100
	if live := gcLive[0].Value.Uint64(); live < gcFloor {
		percent = int(min(gcFloor*100/max(live, 1), gcMaxPercent))
	}
	debug.SetGCPercent(percent) // takes the heap lock, no stop of the world
	runtime.SetFinalizer(&gcSentinel{gen: s.gen}, afterGC)
}
