package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

func TestRecordsEveryBlockBeforeForwarding(t *testing.T) {
	rec := &blockLog{}
	var session Facts
	h := newHarness(t, "tcp4", Config{
		BufferSize: 1000,
		OpenRecorder: func(f *Facts, _ func(error)) (Recorder, string, error) {
			session = *f
			return rec, "/data/file", nil
		},
	})
	client := h.dial()
	server := h.accept()
	up, down := randomBytes(t, 100000), randomBytes(t, 50000)
	errc := make(chan error, 2)
	go sendAndClose(client, up, errc)
	go sendAndClose(server, down, errc)
	gotUp, _ := io.ReadAll(server)
	gotDown, _ := io.ReadAll(client)
	<-errc
	<-errc
	f := h.wait()
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatal("data changed on the way")
	}
	if !bytes.Equal(rec.blocks[datafile.In], up) || !bytes.Equal(rec.blocks[datafile.Out], down) {
		t.Errorf("recorded in %d out %d bytes; want %d %d, the same bytes", len(rec.blocks[datafile.In]), len(rec.blocks[datafile.Out]), len(up), len(down))
	}
	if rec.closed != 1 {
		t.Errorf("recorder closed %d times; want 1", rec.closed)
	}
	if f.File != "/data/file" || f.Outcome != OK {
		t.Errorf("file %q outcome %v; want /data/file ok", f.File, f.Outcome)
	}
	wantSum := sha256.Sum256(rec.all)
	if f.Size != int64(len(up)+len(down)) || f.SHA256 != hex.EncodeToString(wantSum[:]) || rec.digestBeforeClose != 0 {
		t.Errorf("size %d sha256 %s (%d digests before Close); want %d %x, the recorder's digest after Close", f.Size, f.SHA256, rec.digestBeforeClose, len(up)+len(down), wantSum)
	}
	if session.N != f.N || session.Client != f.Client || !session.Start.Equal(f.Start) {
		t.Errorf("recorder told %+v; want the connection's number, client and start", session)
	}
}

// onlyIn records client-to-server blocks only.
type onlyIn struct{ blockLog }

func (o *onlyIn) Wants(dir datafile.Direction) bool { return dir == datafile.In }

// TestUnwantedDirectionIsNotRecorded: Record is never called for a
// direction the recorder does not want; that direction still flows.
func TestUnwantedDirectionIsNotRecorded(t *testing.T) {
	rec := &onlyIn{}
	h := newHarness(t, "tcp4", Config{
		BufferSize:   4096,
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	up, down := randomBytes(t, 1<<20), randomBytes(t, 5<<20)
	errc := make(chan error, 2)
	go sendAndClose(client, up, errc)
	go sendAndClose(server, down, errc)
	gotUp, _ := io.ReadAll(server)
	gotDown, _ := io.ReadAll(client)
	<-errc
	<-errc
	f := h.wait()
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("data changed on the way: up %d/%d down %d/%d bytes", len(gotUp), len(up), len(gotDown), len(down))
	}
	if !bytes.Equal(rec.blocks[datafile.In], up) || len(rec.blocks[datafile.Out]) != 0 {
		t.Errorf("recorded in %d out %d bytes; want %d and 0", len(rec.blocks[datafile.In]), len(rec.blocks[datafile.Out]), len(up))
	}
	if f.BytesIn != int64(len(up)) || f.BytesOut != int64(len(down)) || f.Outcome != OK {
		t.Errorf("in %d out %d %v; want %d %d ok", f.BytesIn, f.BytesOut, f.Outcome, len(up), len(down))
	}
}

// TestRecordErrorEndsSession: a recording that cannot be written ends the
// session at once; the block that could not be recorded is not forwarded.
func TestRecordErrorEndsSession(t *testing.T) {
	rec := &blockLog{failAt: 2}
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	client.Write([]byte("one"))
	if got, err := io.ReadAll(io.LimitReader(server, 3)); err != nil || string(got) != "one" {
		t.Fatalf("got %q %v; want one", got, err)
	}
	client.Write([]byte("two"))
	got, err := io.ReadAll(server)
	if len(got) != 0 || err == nil {
		t.Errorf("server got %q, %v after the failed record; want nothing and a reset", got, err)
	}
	f := h.wait()
	if f.Outcome != RecordError || !errors.Is(f.Err, errDiskFull) {
		t.Errorf("outcome %v (%v); want record-error wrapping disk full", f.Outcome, f.Err)
	}
	if rec.closed != 1 {
		t.Errorf("recorder closed %d times; want 1", rec.closed)
	}
	// %r counts what the client sent, also the block that never went on.
	if f.BytesIn != 6 || f.BytesOut != 0 {
		t.Errorf("in %d out %d; want 6 received from the client, 0 written to it", f.BytesIn, f.BytesOut)
	}
}

func TestRecordErrorContinue(t *testing.T) {
	rec := &blockLog{failAt: 2}
	h := newHarness(t, "tcp4", Config{
		ContinueOnRecordError: true,
		OpenRecorder:          func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	client := h.dial()
	server := h.accept()
	client.Write([]byte("one"))
	io.ReadFull(server, make([]byte, 3))
	client.Write([]byte("two"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "two" {
		t.Errorf("got %q, %v; want two: forwarding goes on", got, err)
	}
	server.Close()
	f := h.wait()
	if f.Outcome != RecordError || !errors.Is(f.Err, errDiskFull) {
		t.Errorf("outcome %v (%v); want record-error: the record is incomplete", f.Outcome, f.Err)
	}
	if rec.calls != 2 {
		t.Errorf("Record called %d times; want 2 (none after the failure)", rec.calls)
	}
}

func TestRecordOpenError(t *testing.T) {
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return nil, "", errDiskFull },
	})
	h.expectReset()
	io.ReadAll(h.accept())
	if f := h.wait(); f.Outcome != RecordError {
		t.Errorf("outcome %v; want record-error", f.Outcome)
	}
}

// TestRecorderFail: an error the recorder finds on its own (a timed flush)
// ends the session.
func TestRecorderFail(t *testing.T) {
	var fail func(error)
	opened := make(chan struct{})
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(_ *Facts, failRec func(error)) (Recorder, string, error) {
			fail = failRec
			close(opened)
			return &blockLog{}, "f", nil
		},
	})
	client := h.dial()
	h.accept()
	<-opened
	fail(errDiskFull)
	io.ReadAll(client)
	if f := h.wait(); f.Outcome != RecordError || !errors.Is(f.Err, errDiskFull) {
		t.Errorf("outcome %v (%v); want record-error", f.Outcome, f.Err)
	}
	fail(errDiskFull) // after the end: harmless
}

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
func (r *timedRec) Digest() (int64, []byte)       { return 0, nil }

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

// TestOpenRecordersAtOnce holds every session in OpenRecorder until 50
// are there together: the proxy itself must not make one session's
// OpenRecorder wait for another's (the recorder decides what takes
// turns: creates in one folder do, as the kernel makes them anyway).
func TestOpenRecordersAtOnce(t *testing.T) {
	const n = 50
	var mu sync.Mutex
	in := 0
	all := make(chan struct{})
	giveUp := make(chan struct{}) // one deadline for all
	defer time.AfterFunc(10*time.Second, func() { close(giveUp) }).Stop()
	h := newHarness(t, "tcp4", Config{
		OpenRecorder: func(f *Facts, _ func(error)) (Recorder, string, error) {
			mu.Lock()
			if in++; in == n {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
				return nil, "", errors.New("test: not recording")
			case <-giveUp:
				return nil, "", errors.New("test: gave up waiting for the others")
			}
		},
	})
	for range n {
		h.dial()
	}
	for range n {
		f := h.wait()
		if f.Outcome != RecordError || f.Err == nil || !strings.Contains(f.Err.Error(), "test: not recording") {
			t.Errorf("conn %d: outcome %v, %v; want record-error, test: not recording", f.N, f.Outcome, f.Err)
		}
	}
}
