package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

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

// TestAdmit: a connection Config.Admit refuses is reset before any dial,
// outcome rejected with Admit's error; once Admit agrees again, the next
// connection is relayed.
func TestAdmit(t *testing.T) {
	errJournal := errors.New("audit journal cannot be written")
	var mu sync.Mutex
	refuse := errJournal
	h := newHarness(t, "tcp4", Config{Admit: func() error {
		mu.Lock()
		defer mu.Unlock()
		return refuse
	}})
	h.expectReset()
	if f := h.wait(); f.Outcome != Rejected || !errors.Is(f.Err, errJournal) || f.Dest.IsValid() {
		t.Errorf("facts %+v; want rejected with Admit's error, nothing dialed", f)
	}
	mu.Lock()
	refuse = nil
	mu.Unlock()
	c := h.dial()
	up := h.accept()
	checkEcho(t, c, up, []byte("admitted"))
	c.Close()
	up.Close()
	if f := h.wait(); f.N != 2 || f.Outcome == Rejected {
		t.Errorf("connection %d ended %v; want 2, relayed", f.N, f.Outcome)
	}
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
