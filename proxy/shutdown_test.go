package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestShutdownLetsSessionsFinish: after Shutdown no new connection is
// accepted, and a running session goes on until it ends by itself.
func TestShutdownLetsSessionsFinish(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	server := h.accept()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(context.Background()) }()
	// Wait for the listener to close: then no new connection gets in.
	for !h.srv.isClosing() {
		time.Sleep(time.Millisecond)
	}
	if c, err := net.Dial("tcp", h.addr); err == nil {
		c.Close()
		t.Errorf("a connection got in after Shutdown")
	}
	msg := []byte("still here")
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, len(msg))); err != nil {
		t.Fatalf("session stopped relaying during shutdown: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a session running", err)
	default:
	}
	client.Close()
	server.Close()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if f := h.wait(); f.Outcome != OK {
		t.Errorf("outcome %v; want ok", f.Outcome)
	}
}

func TestShutdownAbortsAtDeadline(t *testing.T) {
	rec := &blockLog{}
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	client.Write([]byte("x"))
	io.ReadFull(server, make([]byte, 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v; want context.Canceled", err)
	}
	f := h.wait()
	if f.Outcome != Aborted || !errors.Is(f.Err, errStopping) {
		t.Errorf("outcome %v (%v); want aborted by the stop", f.Outcome, f.Err)
	}
	if rec.closed != 1 {
		t.Errorf("recorder closed %d times; want 1: every recording is completed", rec.closed)
	}
	if _, err := io.ReadAll(client); err == nil {
		t.Errorf("aborted client saw a clean end; want a reset")
	}
}

// TestStopDuringDialIsAborted: a forced stop that cuts a dial short gives
// outcome aborted, not connect-failed.
func TestStopDuringDialIsAborted(t *testing.T) {
	dialing := make(chan struct{})
	h := newHarness(t, "tcp4", Config{
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			close(dialing)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	h.dial()
	<-dialing
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.srv.Shutdown(ctx)
	if f := h.wait(); f.Outcome != Aborted || !errors.Is(f.Err, errStopping) {
		t.Errorf("outcome %v (%v); want aborted by the stop", f.Outcome, f.Err)
	}
}
