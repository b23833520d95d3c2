package proxy

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// workers runs functions on goroutines that ran others before. A new
// goroutine starts on a small stack, and dialing through net.Dialer or
// writing the end-of-session log line grows it by copying, two or three
// times for every connection: 7 % of the CPU a short connection costs. A
// goroutine that goes back to waiting keeps its grown stack (until a
// garbage collection shrinks it) for the next session.
type workers struct {
	work      chan func()
	idle      atomic.Int32 // goroutines waiting on work
	maxIdle   int32
	closeOnce sync.Once
}

// newWorkers keeps at most four waiting goroutines per CPU; the others
// exit when their function returns. That covers the turnover of short
// connections, and bounds what idle connections cost: a parked direction's
// goroutine waits here or exits, holding no connection's memory.
func newWorkers() *workers {
	return &workers{work: make(chan func()), maxIdle: int32(4 * runtime.GOMAXPROCS(0))}
}

// Go runs f on a waiting goroutine, or on a new one if none waits. It
// must not be called after close.
func (w *workers) Go(f func()) {
	select {
	case w.work <- f:
	default:
		go w.run(f)
	}
}

func (w *workers) run(f func()) {
	for f != nil {
		f()
		if w.idle.Add(1) > w.maxIdle {
			w.idle.Add(-1)
			return
		}
		f = <-w.work
		w.idle.Add(-1)
	}
}

// close ends the waiting goroutines. Called once nothing calls Go any more.
func (w *workers) close() {
	w.closeOnce.Do(func() { close(w.work) })
}
