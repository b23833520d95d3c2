package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
)

// TestIdleConnectionsHoldNoBuffer: a direction gives its buffer back
// before it waits for its source.
func TestIdleConnectionsHoldNoBuffer(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	for range 20 {
		client := h.dial()
		server := h.accept()
		checkEcho(t, client, server, []byte("ping"))
		checkEcho(t, server, client, []byte("pong"))
	}
	waitFor(t, "no buffer out", func() bool { return h.srv.bufPool.out.Load() == 0 })
}

func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// TestIdleConnectionsPark: once idle, both directions of every connection
// give up their goroutines to the parker; traffic wakes them, in both
// directions, and nothing is lost; a FIN to a parked direction ends it.
func TestIdleConnectionsPark(t *testing.T) {
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			cfg := Config{}
			if recorded {
				cfg.OpenRecorder = func(*Facts, func(error)) (Recorder, string, error) { return &blockLog{}, "f", nil }
			}
			h := newHarness(t, "tcp4", cfg)
			const n = 30
			var clients, servers []*net.TCPConn
			for range n {
				c := h.dial()
				s := h.accept()
				clients, servers = append(clients, c), append(servers, s)
			}
			waitFor(t, "every direction parked", func() bool { return h.srv.parker.count() == 2*n })
			// Unparked, the connections alone would run 2n goroutines.
			// Parked, their goroutines exited or wait for any work in
			// the server's bounded pool; those are not counted.
			if got := runtime.NumGoroutine() - int(h.srv.workers.idle.Load()); got >= n {
				t.Errorf("%d goroutines besides the waiting workers with %d connections parked; want far fewer than %d", got, n, 2*n)
			}
			for round := range 3 {
				for i := range n {
					msg := []byte(fmt.Sprintf("round %d conn %d", round, i))
					checkEcho(t, clients[i], servers[i], msg)
					checkEcho(t, servers[i], clients[i], msg)
				}
				waitFor(t, "every direction parked again", func() bool { return h.srv.parker.count() == 2*n })
			}
			for i := range n {
				clients[i].CloseWrite()
				if got, err := io.ReadAll(servers[i]); err != nil || len(got) != 0 {
					t.Fatalf("server %d read %q, %v after the client's FIN; want EOF", i, got, err)
				}
				servers[i].Close()
			}
			for range n {
				if f := h.wait(); f.Outcome != OK || f.BytesIn != f.BytesOut || f.BytesIn == 0 {
					t.Errorf("connection %d: %v, in %d out %d", f.N, f.Outcome, f.BytesIn, f.BytesOut)
				}
			}
			if got := h.srv.parker.count(); got != 0 {
				t.Errorf("%d directions still parked after every connection ended", got)
			}
		})
	}
}

// TestParkedSessionsAbort: a stop that aborts finds directions parked and
// still ends every session, with its recorder closed.
func TestParkedSessionsAbort(t *testing.T) {
	rec := &blockLog{}
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	client := h.dial()
	h.accept()
	waitFor(t, "both directions parked", func() bool { return h.srv.parker.count() == 2 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.srv.Shutdown(ctx)
	if f := h.wait(); f.Outcome != Aborted || !errors.Is(f.Err, errStopping) {
		t.Errorf("outcome %v (%v); want aborted by the stop", f.Outcome, f.Err)
	}
	if rec.closed != 1 {
		t.Errorf("recorder closed %d times; want 1", rec.closed)
	}
	if _, err := io.ReadAll(client); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %v; want a reset", err)
	}
}
