package proxy

import (
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
	live      atomic.Int32 // goroutines running or waiting, for tests
	maxIdle   int32
	closeOnce sync.Once
}

// maxIdleWorkers bounds the goroutines that wait for work; the others
// exit when their function returns. Under wrk with 64 connections at a
// time, runtime.newstack took 6.6 % of ipprotd's CPU with 8 waiting, 1.9 %
// with 64 and 0.5-0.9 % with 256. But a waiting goroutine keeps the stack
// a dial grew, about 32 KiB: 256 of them added 8 MB to the benchmark's
// 9,000 idle connections (4.9 KiB each instead of 3.9). 64 keep 2 MB.
// They belong to no connection: a parked direction's goroutine waits here
// or exits, so idle connections still cost no goroutine each.
const maxIdleWorkers = 64

func newWorkers() *workers {
	return &workers{work: make(chan func()), maxIdle: maxIdleWorkers}
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
	w.live.Add(1)
	defer w.live.Add(-1)
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
