package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// withoutParking runs the test's servers with parking off, so that a
// direction waits for its socket on its own goroutine for as long as it
// takes: a readiness the direction missed then shows as a hang, where
// parking's deadline would hide it as a delay.
func withoutParking(t *testing.T) {
	old := defaultParkAfter
	defaultParkAfter = 0
	t.Cleanup(func() { defaultParkAfter = old })
}

// TestNoMissedWakeupWhileWriting: bytes that arrive while a direction is
// writing the previous block are read without waiting for more. The client
// sends many small pieces without pausing, so that pieces keep arriving
// during the proxy's writes; the destination must get every byte.
func TestNoMissedWakeupWhileWriting(t *testing.T) {
	withoutParking(t)
	h := newHarness(t, "tcp", Config{})
	for round := range 20 {
		c := h.dial()
		up := h.accept()
		var want bytes.Buffer
		errc := make(chan error, 1)
		go func() {
			for i := range 2000 {
				piece := fmt.Appendf(nil, "%d.%d;", round, i)
				want.Write(piece)
				if _, err := c.Write(piece); err != nil {
					errc <- err
					return
				}
			}
			errc <- c.CloseWrite()
		}()
		// A missed wakeup hangs for ever: fail instead, long after any
		// healthy run would have ended.
		up.SetReadDeadline(time.Now().Add(time.Minute))
		got, err := io.ReadAll(up)
		if err != nil {
			t.Fatalf("round %d: destination got %d bytes of %d, then: %v", round, len(got), want.Len(), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("round %d: destination got %d bytes; want %d", round, len(got), want.Len())
		}
		up.Close()
		c.Close()
		h.wait()
	}
}

// TestNoMissedWakeupAtClose: the exchange of an HTTP/1.0 client, which the
// benchmark's connection-rate load makes: the server answers and closes,
// the client closes as soon as it has the answer. The client's FIN comes
// while the proxy is still passing the answer on; every session must end.
func TestNoMissedWakeupAtClose(t *testing.T) {
	withoutParking(t)
	h := newHarness(t, "tcp", Config{})
	const n = 300
	done := make(chan error, n)
	go func() {
		for range n {
			up, err := h.upstream.Accept()
			if err != nil {
				done <- err
				return
			}
			go func() {
				defer up.Close()
				buf := make([]byte, 64)
				if _, err := io.ReadFull(up, buf[:4]); err != nil {
					done <- err
					return
				}
				_, err := up.Write([]byte("HTTP/1.0 200 OK\r\n\r\nhello"))
				done <- err
			}()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Minute)) // a hang fails
		if _, err := c.Write([]byte("GET ")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "HTTP/1.0 200 OK\r\n\r\nhello" {
			t.Fatalf("client got %q, %v", got, err)
		}
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if f := h.wait(); f.Outcome != OK {
			t.Errorf("connection %d: outcome %v, %v", f.N, f.Outcome, f.Err)
		}
	}
}
