// Package proxy accepts TCP connections, checks each client against an
// allow-list, dials one destination and relays the bytes both ways, handing
// every block to a recorder before it is forwarded. When a connection ends
// it reports what happened as Facts.
//
// Usage:
//
//	srv := proxy.New(proxy.Config{
//		OutHost: "db.internal", OutPort: 5432,
//		OnEnd:   func(f *proxy.Facts) { log.Print(f.Outcome) },
//	})
//	ln, _ := net.Listen("tcp", ":8080")
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // stop accepting, let sessions finish, abort at ctx's end
//
// A clean end of one direction (FIN) half-closes the other side and leaves
// the other direction running; a reset or an error resets both sides. An
// idle connection holds no goroutine and no buffer. docs/design.md draws a
// block's path from accept to disk and gives the measurements behind it.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"golang.org/x/sys/unix"
)

// Recorder records the blocks of one session. Record is called with every
// block before it is forwarded, from the goroutine of the block's direction,
// so calls for the two directions may run at once; it must not keep p.
// A Record error ends the session (see Config.ContinueOnRecordError).
// Wants tells, once at the start, whether Record needs the blocks of a
// direction at all: Record is never called for a direction it does not
// want. Close is called once, after both directions have ended, and
// completes the recording. Digest is called after Close, also after a
// failed one, and returns the size of the data file as it lies on disk
// and its SHA-256, or a nil sum where the recorder does not hash; they go
// into Facts.
type Recorder interface {
	Record(dir datafile.Direction, p []byte) error
	Wants(dir datafile.Direction) bool
	Close() error
	Digest() (size int64, sum []byte)
}

// Config configures a Server. The zero value of each field is documented;
// OutHost and OutPort must be set.
type Config struct {
	OutHost string // destination host, resolved at each connection
	OutPort uint16 // destination port

	// Allow is the allow-list; nil allows every client.
	Allow *AllowList

	// ProxyFrom lists the peers (load balancers) whose connections must
	// begin with a PROXY protocol header, v1 or v2, within
	// ConnectTimeout; the client it carries is the client for everything
	// after (the allow-list, Facts.Client), and the peer becomes
	// Facts.Via. A peer on the list that sends no valid header is
	// rejected; a peer not on it is served as it is, a header from it
	// being data like any other. If nil or empty, nobody sends one.
	ProxyFrom *AllowList

	// SendProxy sends a PROXY protocol header of this version (1 or 2)
	// to the destination, carrying the client and the address it
	// connected to, before any other byte (and before upstream TLS). It
	// is not recorded nor counted. If zero, none is sent.
	SendProxy int

	// BufferSize is the largest block read, recorded and written at once.
	// If zero, 300000 bytes are used, the original daemon's default.
	BufferSize int

	// ConnectTimeout bounds the dial of the destination. If zero, 10 s.
	ConnectTimeout time.Duration

	// IdleTimeout ends a session in which no byte moved for this long. If
	// zero, sessions may stay idle for ever.
	IdleTimeout time.Duration

	// WriteTimeout ends a session when one of its sockets has taken no
	// byte for this long while the proxy had bytes for it: a peer that
	// stopped reading. If zero, such a peer may stall a session for ever
	// (the idle timeout does not see it: its other side may be busy).
	WriteTimeout time.Duration

	// TLS says where the proxy speaks TLS itself (terminating the
	// client's, originating the destination's, PostgreSQL's negotiation).
	// If nil, TLS passes through as bytes.
	TLS *TLS

	// MaxConns is the number of sessions that may run at once; a connection
	// beyond it is closed at once with outcome Rejected. If zero, no limit.
	MaxConns int

	// Admit is asked about every connection the allow-list admits, before
	// the destination is dialed; an error refuses the connection at once,
	// outcome Rejected, with the error as its reason. It must be quick and
	// safe for concurrent use (the audit journal answers whether it can
	// be written). If nil, every allowed connection is admitted.
	Admit func() error

	// OpenRecorder opens the recording of a connection once its
	// destination has been dialed and returns it with the data file's path.
	// It is told the facts known so far (N, Start, Client, Dest), which it
	// must not keep, and fail: a function that ends the connection with
	// outcome RecordError, for recording errors found outside Record (a
	// timed flush); fail may be called from any goroutine, any number of
	// times, also after the connection ended. If nil, nothing is recorded.
	OpenRecorder func(f *Facts, fail func(error)) (rec Recorder, path string, err error)

	// ContinueOnRecordError keeps a session forwarding, unrecorded, after
	// its recorder failed. If false, a recorder error ends the session
	// at once, which is what an audit needs.
	ContinueOnRecordError bool

	// Counters receives the running totals (connections by outcome,
	// bytes, recording errors) for metrics. If nil, nothing is counted
	// beyond the Facts.
	Counters *Counters

	// OnEnd is called with the facts of every accepted connection, once,
	// from the connection's goroutine, after the data file is closed. The
	// proxy waits for it to return before Shutdown counts the connection as
	// done. If nil, nothing is called.
	OnEnd func(*Facts)

	// Logger receives the accept loop's problems and one line per ended
	// connection. If nil, slog.Default() is used.
	Logger *slog.Logger

	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time

	// Dial connects to the destination. If nil, a net.Dialer with
	// KeepAlive is used.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Server accepts connections on one listener and relays each to the
// destination. It is safe for concurrent use; Serve is called once.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	bufPool *bufPool // buffers of cfg.BufferSize, held only while a block is in flight
	workers *workers // run sessions and directions
	parker  parker   // watches the sockets of idle directions
	// parkAfter is how long a direction's source must stay silent before
	// the direction gives up its goroutine (defaultParkAfter; tests lower
	// it).
	parkAfter time.Duration
	epoch     time.Time    // for since
	lastWarn  atomic.Int64 // since() of the last warnRarely
	rejects   rejectLog    // rate limit of the rejected connections' log lines
	// pressure is the since() until which reads take at most bulkRead
	// bytes: the kernel refused a write its send buffer had room for, as
	// it does when short of socket memory, and room estimates cannot be
	// trusted; a peer that stops reading then strands at most that much.
	pressure atomic.Int64
	closed   chan struct{} // closed by Shutdown: ends the accept back-off

	// abortCtx is cancelled to abort every session being started (its
	// dial, its handshakes); running holds those that relay.
	abortCtx context.Context
	running  sessionList
	abort    context.CancelCauseFunc

	mu        sync.Mutex
	ln        net.Listener
	closing   bool
	serveDone chan struct{} // closed when Serve returns; nil before Serve
	sessions  sync.WaitGroup
	active    atomic.Int64
	count     atomic.Uint64
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 300000
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, dial: cfg.Dial, parkAfter: defaultParkAfter, epoch: time.Now(), closed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.dial == nil {
		d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAliveConfig: KeepAlive, ControlContext: noteAttempt}
		s.dial = d.DialContext
	}
	s.bufPool = newBufPool(cfg.BufferSize)
	s.workers = newWorkers()
	s.abortCtx, s.abort = context.WithCancelCause(context.Background())
	return s
}

// KeepAlive is the TCP keep-alive of both sockets of a session: on, with
// the kernel's timers (sysctl net.ipv4.tcp_keepalive_time, _intvl and
// _probes; two hours, 75 s and 9 by default). Go's own default would set
// 15 s timers with three more setsockopt(2) calls per socket, a sixth of
// the system calls a short connection makes; HAProxy and nginx leave
// keep-alive off unless asked.
var KeepAlive = net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}

// Listen listens on the TCP address addr with KeepAlive on every
// accepted socket.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	return ListenConfig{}.Listen(ctx, addr)
}

// ListenConfig says how Listen binds its socket. The zero value binds as
// any program does.
type ListenConfig struct {
	// ReusePort sets SO_REUSEPORT: other sockets with it, of the same
	// user, may listen on the same address at once, and the kernel
	// spreads new connections among them. A new daemon can so start
	// while the old one still listens (a rolling upgrade).
	ReusePort bool
}

// Listen listens on the TCP address addr with KeepAlive on every accepted
// socket.
func (c ListenConfig) Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: KeepAlive}
	if c.ReusePort {
		lc.Control = reusePort
	}
	return lc.Listen(ctx, "tcp", addr)
}

// reusePort sets SO_REUSEPORT on a socket before it is bound.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
}

// pressureFor is how long reads stay small after the kernel refused a
// write its send buffer had room for.
const pressureFor = 10 * time.Second

func (s *Server) notePressure()       { s.pressure.Store(int64(s.since() + pressureFor)) }
func (s *Server) underPressure() bool { return int64(s.since()) < s.pressure.Load() }

// since returns the time since New on the monotonic clock, for timeouts
// that a step of the wall clock must not trigger.
func (s *Server) since() time.Duration { return time.Since(s.epoch) }

// Active returns the number of sessions running now.
func (s *Server) Active() int { return int(s.active.Load()) }

// Parked returns the number of directions that wait, idle, without a
// goroutine (two for a session idle both ways).
func (s *Server) Parked() int { return s.parker.len() }

// defaultParkAfter is the silence after which a direction parks: long
// enough that a busy connection never pays for it (a park and a wake cost
// a few microseconds), short enough that idle connections soon cost only
// their memory on the heap, even in a burst of new ones. Measured with
// 8,000 idle connections opened in a burst: 1 s gave 6.9 KiB of RSS per
// connection, 250 ms 5.0 KiB, 100 ms 4.1 KiB.
var defaultParkAfter = 100 * time.Millisecond

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Shutdown, and returns
// ErrServerClosed then. Temporary accept errors, such as running out of
// file descriptors, are logged and retried with a back-off; any other error
// is returned. Serve closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	s.serveDone = make(chan struct{})
	defer close(s.serveDone)
	s.mu.Unlock()
	defer ln.Close()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if !temporary(err) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.closed:
			}
			continue
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		s.sessions.Add(1)
		s.workers.Go(func() { s.serveConn(tc) })
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// temporary reports whether an accept error is one to wait out: descriptor
// or memory exhaustion, or a connection that died before it was accepted.
func temporary(err error) bool {
	var se *os.SyscallError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Err {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM,
		syscall.EINTR, syscall.EAGAIN:
		return true
	}
	return false
}

// Shutdown stops accepting at once and waits for the running sessions to
// end on their own. If ctx ends first, it aborts the sessions still running
// (outcome Aborted), waits for them to complete their recordings and
// reports, and returns ctx.Err(). Shutdown may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.closed)
	}
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	serveDone := s.serveDone
	s.mu.Unlock()
	if serveDone != nil {
		// Serve adds sessions; the wait below may only begin once it stopped.
		<-serveDone
	}

	done := make(chan struct{})
	go s.waitSessions(done)
	defer s.workers.close() // after the sessions: nothing starts a direction then
	defer s.parker.close()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.abort(errStopping)
		s.running.abort(errStopping)
		<-done
		return ctx.Err()
	}
}

func (s *Server) waitSessions(done chan<- struct{}) {
	s.sessions.Wait()
	close(done)
}

// warnRarely logs a degradation (descriptors ran out for the parker), at
// most once every ten seconds however many sessions meet it.
func (s *Server) warnRarely(msg string, args ...any) {
	now := int64(s.since())
	last := s.lastWarn.Load()
	if last != 0 && now-last < int64(10*time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, args...)
}

// logEnd writes the daemon's line about an ended connection. Lines of
// rejected connections are rate-limited per client address (rejectLog):
// the connection log still has one line per connection.
func (s *Server) logEnd(f *Facts) {
	var suppressed int
	if f.Outcome == Rejected {
		var log bool
		if log, suppressed = s.rejects.note(f.Client.Addr(), s.since()); !log {
			return
		}
	}
	attrs := []any{"conn", f.N, "client", f.Client.String()}
	if f.Via.IsValid() {
		attrs = append(attrs, "via", f.Via.String())
	}
	attrs = append(attrs,
		"outcome", f.Outcome.String(),
		"bytes_in", f.BytesIn,
		"bytes_out", f.BytesOut,
		"duration", f.End.Sub(f.Start).Round(time.Millisecond).String(),
	)
	if f.Dest.IsValid() {
		attrs = append(attrs, "dest", f.Dest.String())
	}
	if f.File != "" {
		attrs = append(attrs, "file", f.File)
	}
	if f.Err != nil {
		attrs = append(attrs, "reason", f.Err.Error())
	}
	if suppressed > 0 {
		attrs = append(attrs, "rejected_unlogged", suppressed)
	}
	if f.ServerTLS != "" && s.cfg.TLS.Upstream.InsecureSkipVerify {
		attrs = append(attrs, "upstream_unverified", true) // --upstream-insecure
	}
	level := slog.LevelInfo
	if f.Outcome == RecordError {
		level = slog.LevelError
	}
	s.log.Log(context.Background(), level, "connection", attrs...)
}

// rejectLog limits the daemon's log lines about rejected connections: one
// per client address every rejectEvery, the next one saying how many went
// unlogged meanwhile. A client outside the allow-list that connects in a
// loop otherwise fills the disk with the daemon's log (20,000 rejections
// in 2 s wrote 3.6 MB). It remembers at most rejectAddrs addresses; beyond,
// it forgets those whose period is over, or else all.
type rejectLog struct {
	mu    sync.Mutex
	addrs map[netip.Addr]*rejects
}

type rejects struct {
	logged   time.Duration // Server.since of the last line logged
	unlogged int
}

const (
	rejectEvery = 10 * time.Second
	rejectAddrs = 4096
)

// note counts a rejection of addr at now and says whether to log it, with
// the rejections of addr not logged since its last line.
func (l *rejectLog) note(addr netip.Addr, now time.Duration) (log bool, unlogged int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.addrs[addr]
	if r != nil && now-r.logged < rejectEvery {
		r.unlogged++
		return false, 0
	}
	if r == nil {
		if l.addrs == nil {
			l.addrs = make(map[netip.Addr]*rejects)
		}
		if len(l.addrs) >= rejectAddrs {
			l.forget(now)
		}
		r = &rejects{}
		l.addrs[addr] = r
	}
	unlogged, r.logged, r.unlogged = r.unlogged, now, 0
	return true, unlogged
}

// forget drops the addresses whose period is over, or all of them if none
// is. l.mu is held.
func (l *rejectLog) forget(now time.Duration) {
	for a, r := range l.addrs {
		if now-r.logged >= rejectEvery {
			delete(l.addrs, a)
		}
	}
	if len(l.addrs) >= rejectAddrs {
		clear(l.addrs)
	}
}
