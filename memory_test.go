package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// TestFloorGC: a GOGC the operator set is left alone; otherwise, with a
// small live heap, the GC percentage is raised so that the heap goal stays
// gcFloor above it, and with a live heap above the floor it is Go's
// default, 100.
func TestFloorGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer stopFloorGC()
	gogc := []metrics.Sample{{Name: "/gc/gogc:percent"}}

	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	floorGC()
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // time for a finalizer, if one was set
	}
	if metrics.Read(gogc); gogc[0].Value.Uint64() != 50 {
		t.Fatalf("GC percent %d with GOGC=50 set; want it left at 50", gogc[0].Value.Uint64())
	}

	t.Setenv("GOGC", "")
	floorGC()
	waitPercent := func(ok func(uint64) bool) uint64 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			runtime.GC()
			metrics.Read(gogc)
			if p := gogc[0].Value.Uint64(); ok(p) || time.Now().After(deadline) {
				return p
			}
			time.Sleep(10 * time.Millisecond) // the finalizer runs after the collection
		}
	}
	if p := waitPercent(func(p uint64) bool { return p > 100 }); p <= 100 {
		t.Errorf("GC percent %d with a small live heap; want it raised above 100", p)
	}
	big := make([]byte, 2*gcFloor)
	for i := range big {
		big[i] = 1
	}
	if p := waitPercent(func(p uint64) bool { return p == 100 }); p != 100 {
		t.Errorf("GC percent %d with %d MiB live; want 100", p, len(big)>>20)
	}
	runtime.KeepAlive(big)
}
