package proxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Park idle directions after 10 ms instead of a second, so that every
	// test's pauses exercise parking and waking.
	defaultParkAfter = 10 * time.Millisecond
	goleak.VerifyTestMain(m)
}

// TestManyConnectionsLeaveNothingBehind: 200 connections, then no
// descriptor and no goroutine is left (goleak checks the goroutines).
func TestManyConnectionsLeaveNothingBehind(t *testing.T) {
	before := openFDs(t)
	h := newHarness(t, "tcp4", Config{})
	go echo(h.upstream)
	var wg sync.WaitGroup
	errc := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- roundTrip(h.addr, i) }()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	for range 200 {
		if f := h.wait(); f.Outcome != OK {
			t.Errorf("connection %d: %v (%v)", f.N, f.Outcome, f.Err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
	h.upstream.Close()
	if after := openFDs(t); after > before+2 { // the proxy listener and the upstream may still be closing
		out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", os.Getpid())).CombinedOutput()
		t.Errorf("%d descriptors open after 200 connections; %d before\n%s", after, before, out)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}
