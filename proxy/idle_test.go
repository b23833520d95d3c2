package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, "tcp4", Config{IdleTimeout: 300 * time.Millisecond})
	client := h.dial()
	server := h.accept()
	client.Write([]byte("hello"))
	io.ReadFull(server, make([]byte, 5))
	if _, err := io.ReadAll(client); err == nil {
		t.Errorf("idle session ended cleanly; want a reset")
	}
	if f := h.wait(); f.Outcome != Aborted || !errors.Is(f.Err, errIdle) {
		t.Errorf("outcome %v (%v); want aborted by the idle timeout", f.Outcome, f.Err)
	}
}

// TestIdleTimeoutCountsSlowWrites: a slow but steady reader keeps the
// session alive although one block takes longer than the idle timeout to
// write.
func TestIdleTimeoutCountsSlowWrites(t *testing.T) {
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			cfg := Config{IdleTimeout: 100 * time.Millisecond}
			if recorded {
				cfg.OpenRecorder = func(*Facts, func(error)) (Recorder, string, error) { return discardRecorder{}, "f", nil }
			}
			h := newHarness(t, "tcp4", cfg)
			client := h.dial()
			server := h.accept()
			// The server fills every buffer on the way at once; then the
			// client drains them at about 4 MB/s, never pausing 100 ms,
			// while the proxy is woken only now and then to write more.
			const size = 6 << 20
			errc := make(chan error, 1)
			go sendAndClose(server, bytes.Repeat([]byte{0xff}, size), errc) // 0xff: chunks of 24736 bytes
			buf := make([]byte, 8192)
			total := 0
			for total < size {
				n, err := client.Read(buf)
				total += n
				if err != nil {
					t.Fatalf("client read error after %d bytes: %v", total, err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			<-errc
			client.Close()
			if f := h.wait(); f.Outcome != OK {
				t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
			}
		})
	}
}

// TestIdleTimeoutStalledReader: a client that reads nothing while the
// server pushes is idle once every buffer on the way is full.
func TestIdleTimeoutStalledReader(t *testing.T) {
	h := newHarness(t, "tcp4", Config{IdleTimeout: 100 * time.Millisecond})
	client := h.dial()
	server := h.accept()
	go server.Write(bytes.Repeat([]byte{0xff}, 64<<20)) // ends with the reset
	if f := h.wait(); f.Outcome != Aborted || !errors.Is(f.Err, errIdle) {
		t.Errorf("outcome %v (%v); want aborted by the idle timeout", f.Outcome, f.Err)
	}
	client.Close()
}
