package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pushUntilStalled writes to c from a goroutine of its own until a write
// has been blocked for a while (the other end stopped reading), then
// returns the bytes written; it stops at stop.
func pushUntilStalled(c *net.TCPConn, stop <-chan struct{}, written chan<- int) {
	buf := bytes.Repeat([]byte("x"), 64<<10)
	n := 0
	for {
		select {
		case <-stop:
			written <- n
			return
		default:
		}
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		m, err := c.Write(buf)
		n += m
		if err != nil {
			written <- n
			return
		}
	}
}

// TestStalledReaderHoldsNoBuffer: a client that stops reading while the
// destination sends holds no -b buffer of the proxy (it once pinned one
// per connection, for ever: 1,000 such clients held 200 MB), and the
// bytes it has not taken are still delivered whole once it reads again.
func TestStalledReaderHoldsNoBuffer(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	server := h.accept()
	written := make(chan int, 1)
	go pushUntilStalled(server, nil, written)
	n := <-written // the server's writes blocked: every buffer on the way is full
	waitFor(t, "no read buffer out", func() bool { return h.srv.bufPool.out.Load() == 0 })
	server.CloseWrite()
	got, err := io.Copy(io.Discard, client)
	if err != nil || got != int64(n) {
		t.Fatalf("the client read %d bytes, %v; want all %d the server wrote", got, err, n)
	}
	client.Close()
	if f := h.wait(); f.Outcome != OK || f.BytesOut != int64(n) {
		t.Errorf("outcome %v, %d bytes out; want ok, %d", f.Outcome, f.BytesOut, n)
	}
}

// TestWriteTimeout: a client that takes no byte for WriteTimeout while the
// destination has bytes for it ends the session, reset, with the reason;
// a slow but steady reader is not ended.
func TestWriteTimeout(t *testing.T) {
	h := newHarness(t, "tcp4", Config{WriteTimeout: 300 * time.Millisecond})
	t.Run("stalled", func(t *testing.T) {
		h.dial() // never reads
		server := h.accept()
		stop := make(chan struct{})
		written := make(chan int, 1)
		go pushUntilStalled(server, stop, written)
		f := h.wait()
		close(stop)
		<-written
		if f.Outcome != Aborted || !errors.Is(f.Err, errStalled) || !strings.Contains(f.Err.Error(), "took no byte for 300ms (--write-timeout)") {
			t.Errorf("outcome %v, reason %v; want aborted, stalled", f.Outcome, f.Err)
		}
	})
	t.Run("slow reader", func(t *testing.T) {
		client := h.dial()
		server := h.accept()
		msg := bytes.Repeat([]byte("y"), 1<<20)
		errc := make(chan error, 1)
		go sendAndClose(server, msg, errc)
		// 1 MiB read in pieces of 64 KiB, 100 ms apart: about 1.6 s, longer
		// than the timeout, with progress well within it.
		var got []byte
		buf := make([]byte, 64<<10)
		for {
			time.Sleep(100 * time.Millisecond)
			n, err := io.ReadFull(client, buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		client.Close()
		if !bytes.Equal(got, msg) {
			t.Errorf("the client read %d bytes; want %d", len(got), len(msg))
		}
		if f := h.wait(); f.Outcome != OK {
			t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
		}
	})
}
