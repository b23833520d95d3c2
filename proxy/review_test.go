package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// Regression tests for the findings of a review of the session life cycle.

// timedRec mimics recorder.Recorder's flush timer as it was: the timer
// calls Fail before it counts as done, and Close waits for the timer.
type timedRec struct {
	mu       sync.Mutex
	fail     func(error)
	armed    bool
	timerRun sync.WaitGroup
}

func (r *timedRec) Record(datafile.Direction, []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.armed {
		r.armed = true
		r.timerRun.Add(1)
		time.AfterFunc(100*time.Millisecond, r.timedFlush)
	}
	return nil
}

func (r *timedRec) timedFlush() {
	defer r.timerRun.Done()
	r.fail(errDiskFull)
}

func (r *timedRec) Wants(datafile.Direction) bool { return true }
func (r *timedRec) Close() error                  { r.timerRun.Wait(); return nil }

// TestFailFromFlushTimerWhileParked: a flush that fails while both
// directions are parked ends the session, although Close waits for the
// goroutine that reported the failure.
func TestFailFromFlushTimerWhileParked(t *testing.T) {
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(_ *Facts, fail func(error)) (Recorder, string, error) { return &timedRec{fail: fail}, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	checkEcho(t, client, server, []byte("request"))
	if f := h.wait(); f.Outcome != RecordError || !errors.Is(f.Err, errDiskFull) {
		t.Errorf("outcome %v (%v); want record-error, disk full", f.Outcome, f.Err)
	}
}

// TestCountOnWriteError: bytes that did not reach a client that reset the
// connection are not counted as written to it.
func TestCountOnWriteError(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	server := h.accept()
	checkEcho(t, server, client, []byte("hello"))
	client.SetLinger(0)
	client.Close()
	// Whatever the server sends now cannot reach the client.
	for range 10 {
		if _, err := server.Write(make([]byte, 64<<10)); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f := h.wait(); f.BytesOut != 5 {
		t.Errorf("%d bytes counted as written to the client; want the 5 it got", f.BytesOut)
	}
}

// closeFails is a recorder whose Close fails: the disk filled up at the
// last flush.
type closeFails struct{ blockLog }

func (c *closeFails) Close() error { c.blockLog.Close(); return errDiskFull }

// TestIncompleteRecordingAfterReset: a session ended by a reset whose
// recording then fails to complete is a record-error, not aborted.
func TestIncompleteRecordingAfterReset(t *testing.T) {
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return &closeFails{}, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	checkEcho(t, client, server, []byte("x"))
	client.SetLinger(0)
	client.Close()
	io.ReadAll(server)
	f := h.wait()
	if f.Outcome != RecordError || !errors.Is(f.Err, errDiskFull) || !errors.Is(f.Err, syscall.ECONNRESET) {
		t.Errorf("outcome %v (%v); want record-error naming both the disk and the reset", f.Outcome, f.Err)
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

// TestNotAllowedBeforeMaxConns: a client that is not allowed is rejected
// for that, also when the proxy is full.
func TestNotAllowedBeforeMaxConns(t *testing.T) {
	h := newHarness(t, "tcp4", Config{MaxConns: 1, Allow: NewAllowList(netip.MustParsePrefix("127.0.0.1/32"))})
	first := h.dial()
	h.accept()
	first.Write([]byte("x")) // the first session surely counts
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if c, err := d.Dial("tcp4", h.addr); err == nil {
		io.ReadAll(c)
		c.Close()
	}
	if f := h.wait(); f.Outcome != Rejected || !errors.Is(f.Err, errNotAllow) {
		t.Errorf("outcome %v (%v); want rejected as not allowed", f.Outcome, f.Err)
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
