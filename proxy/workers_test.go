package proxy

import (
	"sync"
	"testing"
)

// TestWorkers: a function runs on a goroutine that waits for work when
// there is one; no more than maxIdle wait; close ends them.
func TestWorkers(t *testing.T) {
	w := newWorkers()
	w.maxIdle = 2
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		w.Go(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	waitFor(t, "two goroutines waiting, three gone", func() bool {
		return w.idle.Load() == 2 && w.live.Load() == 2
	})

	// The next function runs on one of the two: while it runs, one waits.
	waiting := make(chan int32)
	w.Go(func() { waiting <- w.idle.Load() })
	if n := <-waiting; n != 1 {
		t.Errorf("%d goroutines waiting while a function ran; want 1 (it took a waiting one)", n)
	}
	waitFor(t, "it waits again", func() bool { return w.idle.Load() == 2 })

	w.close()
	w.close() // Shutdown may run twice
	waitFor(t, "the waiting goroutines exit", func() bool { return w.live.Load() == 0 })
}
