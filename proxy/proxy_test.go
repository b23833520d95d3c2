package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Park idle directions after 10 ms instead of a second, so that every
	// test's pauses exercise parking and waking.
	defaultParkAfter = 10 * time.Millisecond
	goleak.VerifyTestMain(m)
}

// harness is a proxy in front of an upstream listener, both on loopback.
type harness struct {
	t        *testing.T
	srv      *Server
	addr     string       // the proxy's address
	upstream net.Listener // the destination; the test accepts on it
	mu       sync.Mutex
	facts    []*Facts
	ended    chan *Facts
}

func newHarness(t *testing.T, network string, cfg Config) *harness {
	t.Helper()
	loop := "127.0.0.1:0"
	if network == "tcp6" {
		loop = "[::1]:0"
	}
	up, err := net.Listen(network, loop)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	ln, err := net.Listen(network, loop)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, upstream: up, addr: ln.Addr().String(), ended: make(chan *Facts, 1000)}
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	if cfg.OutHost == "" {
		cfg.OutHost = ap.Addr().String()
		cfg.OutPort = ap.Port()
	}
	cfg.OnEnd = h.onEnd
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h.srv = New(cfg)
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v; want ErrServerClosed", err)
		}
		up.Close()
	})
	return h
}

func (h *harness) onEnd(f *Facts) {
	h.mu.Lock()
	h.facts = append(h.facts, f)
	h.mu.Unlock()
	h.ended <- f
}

// dial connects a client to the proxy.
func (h *harness) dial() *net.TCPConn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// expectReset connects a client that the proxy must close with a reset,
// which may already reach the client's connect.
func (h *harness) expectReset() {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err == nil {
		defer c.Close()
		_, err = io.ReadAll(c)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		h.t.Errorf("client saw %v; want a reset", err)
	}
}

// accept returns the upstream side of the next proxied connection.
func (h *harness) accept() *net.TCPConn {
	h.t.Helper()
	c, err := h.upstream.Accept()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// wait returns the facts of the next connection that ends.
func (h *harness) wait() *Facts {
	h.t.Helper()
	select {
	case f := <-h.ended:
		return f
	case <-time.After(20 * time.Second):
		h.t.Fatal("no connection ended within 20 s")
		return nil
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sendAndClose writes p to c in random-sized chunks, then half-closes it;
// it returns its error on errc.
func sendAndClose(c *net.TCPConn, p []byte, errc chan<- error) {
	for len(p) > 0 {
		n := min(len(p), 1+int(p[0])*97)
		if _, err := c.Write(p[:n]); err != nil {
			errc <- err
			return
		}
		p = p[n:]
	}
	errc <- c.CloseWrite()
}

func TestForwardsBothWaysAtOnce(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			h := newHarness(t, network, Config{BufferSize: 65536})
			up, down := randomBytes(t, 3<<20), randomBytes(t, 3<<20)
			client := h.dial()
			server := h.accept()

			errc := make(chan error, 2)
			go sendAndClose(client, up, errc)
			go sendAndClose(server, down, errc)
			gotUp, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			gotDown, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("server got %d bytes, not the %d the client sent", len(gotUp), len(up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("client got %d bytes, not the %d the server sent", len(gotDown), len(down))
			}
			f := h.wait()
			if f.Outcome != OK || f.Err != nil {
				t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
			}
			if f.BytesIn != int64(len(up)) || f.BytesOut != int64(len(down)) {
				t.Errorf("counted in %d out %d; want %d %d", f.BytesIn, f.BytesOut, len(up), len(down))
			}
			if f.Client.Addr() != addrPort(client.LocalAddr()).Addr() || f.Client.Port() != addrPort(client.LocalAddr()).Port() {
				t.Errorf("client %v; want %v", f.Client, client.LocalAddr())
			}
			if f.Dest != addrPort(h.upstream.Addr()) {
				t.Errorf("dest %v; want %v", f.Dest, h.upstream.Addr())
			}
			if f.N != 1 {
				t.Errorf("connection number %d; want 1", f.N)
			}
		})
	}
}

// TestHalfClose checks that a FIN from one side reaches the other and the
// other direction keeps flowing: the side that received the FIN answers
// 1.5 s later and every byte of the answer arrives.
func TestHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientFirst=%v", clientFirst), func(t *testing.T) {
			h := newHarness(t, "tcp4", Config{})
			client := h.dial()
			server := h.accept()
			first, second := client, server
			if !clientFirst {
				first, second = server, client
			}
			question := []byte("question\n")
			answer := randomBytes(t, 1<<20)
			if _, err := first.Write(question); err != nil {
				t.Fatal(err)
			}
			if err := first.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(second) // ends with the FIN
			if err != nil || !bytes.Equal(got, question) {
				t.Fatalf("got %q, %v; want %q and EOF", got, err, question)
			}
			time.Sleep(1500 * time.Millisecond)
			errc := make(chan error, 1)
			go sendAndClose(second, answer, errc)
			got, err = io.ReadAll(first)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, answer) {
				t.Errorf("got %d bytes of the answer; want %d, unchanged", len(got), len(answer))
			}
			if f := h.wait(); f.Outcome != OK {
				t.Errorf("outcome %v (%v); want ok", f.Outcome, f.Err)
			}
		})
	}
}

// TestSendThenClose: a client that writes and closes at once still has
// every byte delivered, and then the FIN.
func TestSendThenClose(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	client := h.dial()
	data := randomBytes(t, 700000)
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	client.Close()
	server := h.accept()
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("server got %d bytes; want %d, unchanged", len(got), len(data))
	}
	server.Close()
	if f := h.wait(); f.Outcome != OK || f.BytesIn != int64(len(data)) {
		t.Errorf("outcome %v (%v), in %d; want ok, %d", f.Outcome, f.Err, f.BytesIn, len(data))
	}
}

// TestResetPassesThrough: a reset from one side reaches the other as a
// reset, not as a clean end.
func TestResetPassesThrough(t *testing.T) {
	for _, clientResets := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientResets=%v", clientResets), func(t *testing.T) {
			h := newHarness(t, "tcp4", Config{})
			client := h.dial()
			server := h.accept()
			resetter, other := client, server
			if !clientResets {
				resetter, other = server, client
			}
			// Make sure the session relays before the reset.
			if _, err := resetter.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(other, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			resetter.SetLinger(0)
			resetter.Close()
			_, err := io.ReadAll(other)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("other side read error %v; want ECONNRESET", err)
			}
			if f := h.wait(); f.Outcome != Aborted {
				t.Errorf("outcome %v; want aborted", f.Outcome)
			}
		})
	}
}

func TestAllowListRejectsBeforeDialing(t *testing.T) {
	h := newHarness(t, "tcp4", Config{Allow: NewAllowList(netip.MustParsePrefix("10.0.0.0/8"))})
	h.expectReset()
	f := h.wait()
	if f.Outcome != Rejected || f.Dest.IsValid() || f.File != "" {
		t.Errorf("facts %+v; want rejected, no destination, no file", f)
	}
	// The upstream must never have seen a connection.
	h.upstream.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := h.upstream.Accept(); err == nil {
		c.Close()
		t.Errorf("the upstream was dialed for a rejected client")
	}
}

func TestAllowListAdmitsIPv4OnDualStack(t *testing.T) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ln, err := net.Listen("tcp", "[::]:0") // dual stack: IPv4 clients appear as ::ffff:a.b.c.d
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	ended := make(chan *Facts, 1)
	srv := New(Config{
		OutHost: ap.Addr().String(), OutPort: ap.Port(),
		Allow:  NewAllowList(netip.MustParsePrefix("127.0.0.0/8")),
		OnEnd:  func(f *Facts) { ended <- f },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	f := <-ended
	if f.Outcome != OK || !f.Client.Addr().Is4() {
		t.Errorf("outcome %v, client %v; want ok from an IPv4 address", f.Outcome, f.Client)
	}
}

func TestConnectFailed(t *testing.T) {
	h := newHarness(t, "tcp4", Config{OutHost: "127.0.0.1", OutPort: refusedPort(t)})
	h.expectReset()
	f := h.wait()
	if f.Outcome != ConnectFailed || f.Err == nil || f.Dest.IsValid() {
		t.Errorf("outcome %v (%v), dest %v; want connect-failed with a reason and no destination", f.Outcome, f.Err, f.Dest)
	}
}

// blockLog is a Recorder that keeps every block, or fails after some.
type blockLog struct {
	mu     sync.Mutex
	blocks [2][]byte
	calls  int
	failAt int // fail the call with this number (from 1); 0: never
	closed int
}

var errDiskFull = errors.New("disk full")

func (b *blockLog) Record(dir datafile.Direction, p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.failAt != 0 && b.calls >= b.failAt {
		return errDiskFull
	}
	b.blocks[dir] = append(b.blocks[dir], p...)
	return nil
}

func (b *blockLog) Wants(datafile.Direction) bool { return true }

func (b *blockLog) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed++
	return nil
}

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

// checkEcho writes msg on from and reads it whole on to.
func checkEcho(t *testing.T, from, to *net.TCPConn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v; want %q", got, err, msg)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
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

func TestMaxConns(t *testing.T) {
	h := newHarness(t, "tcp4", Config{MaxConns: 1})
	first := h.dial()
	firstUp := h.accept()
	first.Write([]byte("x")) // the first session is surely running
	h.expectReset()
	if f := h.wait(); f.Outcome != Rejected || f.N != 2 || !errors.Is(f.Err, errMaxConns) {
		t.Errorf("facts %+v; want connection 2 rejected for max-conns", f)
	}
	first.Close()
	firstUp.Close()
	if f := h.wait(); f.N != 1 {
		t.Errorf("connection %d ended; want 1", f.N)
	}
}

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

// TestManyConnectionsLeaveNothingBehind: 200 connections, then no
// descriptor and no goroutine is left (goleak checks the goroutines).
func TestManyConnectionsLeaveNothingBehind(t *testing.T) {
	before := openFDs(t)
	h := newHarness(t, "tcp4", Config{})
	go echo(h.upstream)
	var wg sync.WaitGroup
	errc := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- roundTrip(h.addr, i) }()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	for range 200 {
		if f := h.wait(); f.Outcome != OK {
			t.Errorf("connection %d: %v (%v)", f.N, f.Outcome, f.Err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
	h.upstream.Close()
	if after := openFDs(t); after > before+2 { // the proxy listener and the upstream may still be closing
		out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", os.Getpid())).CombinedOutput()
		t.Errorf("%d descriptors open after 200 connections; %d before\n%s", after, before, out)
	}
}

// echo serves the upstream: it writes back what it reads until EOF.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go echoConn(c.(*net.TCPConn))
	}
}

func echoConn(c *net.TCPConn) {
	defer c.Close()
	// Hide the TCPConns from io.Copy: its splice keeps pipes in a pool,
	// which the descriptor count would take for a leak.
	io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
	c.CloseWrite()
}

func roundTrip(addr string, i int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("connection %d: echo of %d bytes came back as %d", i, len(msg), len(got))
	}
	return nil
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// flakyListener fails Accept with an error a number of times first.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptSurvivesEMFILE: the accept loop backs off on a temporary error
// and resumes; it never returns.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go echo(up)
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner, fails: 5, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}}
	var logged bytes.Buffer
	var logMu sync.Mutex
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	srv := New(Config{
		OutHost: "127.0.0.1", OutPort: ap.Port(),
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := roundTrip(inner.Addr().String(), 7); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(context.Background())
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v; want ErrServerClosed", err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := bytes.Count(logged.Bytes(), []byte("accept failed, retrying")); n != 5 {
		t.Errorf("logged %d accept failures; want 5:\n%s", n, logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestKeepAlive: both sockets of a session have TCP keep-alive on, with
// the kernel's timers, which an operator tunes with sysctl, not Go's 15 s.
func TestKeepAlive(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_time")
	if err != nil {
		t.Skip(err)
	}
	var wantIdle int
	if _, err := fmt.Sscan(string(b), &wantIdle); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err := New(Config{}).dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	for name, c := range map[string]net.Conn{"accepted": accepted, "dialed": dialed} {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on, idle int
		var onErr, idleErr error
		rc.Control(func(fd uintptr) {
			on, onErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, idleErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		})
		if err := errors.Join(onErr, idleErr); err != nil {
			t.Fatal(err)
		}
		if on != 1 || idle != wantIdle {
			t.Errorf("%s socket: SO_KEEPALIVE %d, TCP_KEEPIDLE %d; want 1, %d (the kernel's)", name, on, idle, wantIdle)
		}
	}
}

// refusedPort returns a loopback port that refuses connections for the
// rest of the test: a socket bound to it that does not listen. A port
// taken and closed again could be handed to the next listener on port 0,
// the test's own upstream among them, and the dial would then succeed.
func refusedPort(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(sa.(*syscall.SockaddrInet4).Port)
}
