package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestForcedStopEndsParkedSessionsInParallel: a forced stop ends parked
// sessions side by side, not one after another on Shutdown's goroutine:
// each end may wait (OnEnd: an audit entry's fsync, a gzip trailer), and n
// sessions would take n waits. Every OnEnd here waits until all have
// begun; ends in turn never get there. Found by review.
func TestForcedStopEndsParkedSessionsInParallel(t *testing.T) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var begun sync.WaitGroup
	begun.Add(n)
	allBegun := make(chan struct{})
	go func() { begun.Wait(); close(allBegun) }()
	var together atomic.Int32
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	srv := New(Config{
		OutHost: ap.Addr().String(), OutPort: ap.Port(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnEnd: func(*Facts) {
			begun.Done()
			select {
			case <-allBegun:
				together.Add(1)
			case <-time.After(20 * time.Second): // only when they run in turn
			}
		},
	})
	go srv.Serve(ln)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := up.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	waitFor(t, "every direction parked", func() bool { return srv.Parked() == 2*n })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Shutdown(ctx)
	if got := together.Load(); got != n {
		t.Errorf("%d of %d sessions' ends ran side by side; want all", got, n)
	}
}

// TestPostgresNegotiationStopsAtAbort: a forced stop cuts short a client
// that stays silent in PostgreSQL's negotiation, as it does a TLS
// handshake; the connect timeout (an hour here) once bounded it alone.
// Found by review.
func TestPostgresNegotiationStopsAtAbort(t *testing.T) {
	pki := newPKI(t)
	up, _ := net.Listen("tcp4", "127.0.0.1:0")
	defer up.Close()
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	srv := New(Config{
		OutHost: ap.Addr().String(), OutPort: ap.Port(),
		ConnectTimeout: time.Hour,
		TLS:            &TLS{Postgres: true, Client: &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "proxy.test")}}},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	go srv.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "session started", func() bool { return srv.Active() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { srv.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a forced stop waits for a silent client's negotiation")
	}
}
