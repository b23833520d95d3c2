package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

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

// blockLog is a Recorder that keeps every block, or fails after some.
type blockLog struct {
	mu     sync.Mutex
	blocks [2][]byte
	calls  int
	failAt int // fail the call with this number (from 1); 0: never
	closed int
	all    []byte // every block kept, in the order recorded: what Digest sums
	// digestBeforeClose counts Digest calls made before Close.
	digestBeforeClose int
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
	b.all = append(b.all, p...)
	return nil
}

func (b *blockLog) Wants(datafile.Direction) bool { return true }

func (b *blockLog) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed++
	return nil
}

// Digest returns the length and SHA-256 of the blocks kept, as a data
// file of them would have.
func (b *blockLog) Digest() (int64, []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed == 0 {
		b.digestBeforeClose++
	}
	sum := sha256.Sum256(b.all)
	return int64(len(b.all)), sum[:]
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
