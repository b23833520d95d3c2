package proxy

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"golang.org/x/sys/unix"
)

// The reasons a session ends early, as context causes.
var (
	errStopping = errors.New("aborted: the daemon is stopping")
	errIdle     = errors.New("idle timeout")
	errMaxConns = errors.New("max-conns reached")
	errNotAllow = errors.New("client not on the allow-list")
)

// RecordingError wraps an error of the recorder; a session that ends with it
// has outcome RecordError.
type RecordingError struct{ Err error }

func (e *RecordingError) Error() string { return "recording: " + e.Err.Error() }
func (e *RecordingError) Unwrap() error { return e.Err }

// session is one accepted connection and, once dialed, its upstream.
type session struct {
	srv    *Server
	client *net.TCPConn
	server *net.TCPConn
	facts  Facts

	// The TLS the proxy speaks on each side (Config.TLS), nil in clear,
	// and the client's first bytes that the negotiation read and the
	// destination has yet to get.
	clientTLS, serverTLS *tls.Conn
	pending              []byte

	// local is the address the client connected to, as a PROXY protocol
	// header carried it; zero where the client connected itself.
	local netip.AddrPort

	rec        Recorder
	recOff     atomic.Bool  // recording given up (ContinueOnRecordError)
	recErr     atomic.Value // error: the first recording error, when recOff
	lastIO     atomic.Int64 // when bytes last moved, as Server.since, for IdleTimeout
	lastQueues [2]int       // the send queues at the last idle check (checkIdle only)
	idle       *time.Timer

	// cause is why the session must end now: the first error of a
	// direction, a recording error, the idle timeout or the server's abort.
	// Setting it resets both sockets.
	cause atomic.Pointer[error]
	// prev and next link the session into the server's list of relaying
	// sessions, which a forced stop walks (Server.running).
	prev, next *session
	running    atomic.Int32 // directions not yet finished; the last one ends the session
	dirs       [2]direction // indexed by datafile.Direction
}

// serveConn starts the session of an accepted connection: the checks,
// the dial and the data file. It returns once the two directions run, so
// that its stack, deepened by the dial, does not stay with an idle
// connection; the direction that ends last completes the session (end).
func (s *Server) serveConn(c *net.TCPConn) {
	ss := &session{srv: s, client: c}
	ss.facts = Facts{
		N:       s.count.Add(1),
		Start:   s.now(),
		Client:  addrPort(c.RemoteAddr()),
		OutHost: s.cfg.OutHost,
		OutPort: s.cfg.OutPort,
	}
	if outcome, err := ss.start(); err != nil {
		ss.report(outcome, err)
		return
	}
	if ss.srv.cfg.IdleTimeout > 0 {
		ss.lastIO.Store(int64(s.since()))
		ss.idle = time.AfterFunc(ss.srv.cfg.IdleTimeout, ss.checkIdle)
	}
	in, out := &ss.dirs[datafile.In], &ss.dirs[datafile.Out]
	err := errors.Join(
		in.init(ss, datafile.In, ss.client, ss.server, ss.clientTLS, ss.serverTLS, &ss.facts.BytesIn),
		out.init(ss, datafile.Out, ss.server, ss.client, ss.serverTLS, ss.clientTLS, &ss.facts.BytesOut))
	if err == nil && len(ss.pending) > 0 {
		// What the negotiation read of the client's stream (a
		// StartupMessage's start, a CancelRequest) goes first, recorded.
		err = in.forward(ss.pending)
		ss.pending = nil
	}
	ss.running.Store(2)
	s.running.add(ss)
	if err != nil {
		ss.cancel(err)
		in.finish()
		out.finish()
		return
	}
	s.workers.Go(in.run)
	s.workers.Go(out.run)
}

// start decides, dials and opens the data file; it returns the outcome of
// a session that ends before it relays.
func (ss *session) start() (Outcome, error) {
	s := ss.srv
	n := s.active.Add(1) // report takes it back
	if s.cfg.ProxyFrom.Len() > 0 && s.cfg.ProxyFrom.Allows(ss.facts.Client.Addr()) {
		if err := ss.acceptProxyHeader(); err != nil {
			resetClose(ss.client)
			if cause := context.Cause(s.abortCtx); cause != nil {
				return Aborted, cause
			}
			return Rejected, err
		}
	}
	if !s.cfg.Allow.Allows(ss.facts.Client.Addr()) {
		resetClose(ss.client)
		return Rejected, errNotAllow
	}
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(); err != nil {
			resetClose(ss.client)
			return Rejected, err
		}
	}
	if s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		resetClose(ss.client)
		return Rejected, errMaxConns
	}
	cancelRequest := false
	if s.cfg.TLS.active() {
		ctx, cancel := context.WithTimeout(s.abortCtx, s.cfg.ConnectTimeout)
		neg, err := ss.negotiateClient(ctx, s.cfg.TLS)
		cancel()
		if err != nil {
			if errors.Is(err, errNotTLS) {
				// The client has PostgreSQL's error to read: a FIN, not
				// a reset that could discard it.
				ss.client.Close()
				return Rejected, err
			}
			resetClose(ss.client)
			if cause := context.Cause(s.abortCtx); cause != nil {
				return Aborted, cause
			}
			return TLSFailed, asTLSError(err)
		}
		ss.clientTLS, ss.pending, cancelRequest = neg.conn, neg.pending, neg.cancel
		if neg.conn != nil {
			st := neg.conn.ConnectionState()
			ss.facts.ClientTLS, ss.facts.ClientCert = describeTLS(st), clientSubject(st)
		}
	}
	if err := ss.dial(); err != nil {
		resetClose(ss.client)
		if context.Cause(s.abortCtx) != nil {
			return Aborted, err // a forced stop cut the dial short
		}
		return ConnectFailed, err
	}
	if s.cfg.SendProxy != 0 {
		// The first bytes on the connection, before TLS or PostgreSQL's
		// SSLRequest, as HAProxy sends them.
		if err := ss.sendProxyHeader(); err != nil {
			resetClose(ss.client)
			resetClose(ss.server)
			return ConnectFailed, err
		}
	}
	if s.cfg.TLS != nil && s.cfg.TLS.Upstream != nil && !cancelRequest {
		ctx, cancel := context.WithTimeout(s.abortCtx, s.cfg.ConnectTimeout)
		tc, err := ss.negotiateUpstream(ctx, s.cfg.TLS)
		cancel()
		if err != nil {
			resetClose(ss.client)
			resetClose(ss.server)
			if cause := context.Cause(s.abortCtx); cause != nil {
				return Aborted, cause
			}
			return TLSFailed, asTLSError(err)
		}
		ss.serverTLS = tc
		ss.facts.ServerTLS = describeTLS(tc.ConnectionState())
	}
	if err := ss.openRecorder(); err != nil {
		resetClose(ss.client)
		resetClose(ss.server)
		return RecordError, err
	}
	return OK, nil
}

// directionDone is called by each direction when it ends; the second
// completes the session.
func (ss *session) directionDone() {
	if ss.running.Add(-1) == 0 {
		ss.end()
	}
}

// end completes a session whose two directions have ended: the sockets
// are closed (with a reset if the session was cancelled), the data file
// is completed and the facts are reported.
func (ss *session) end() {
	if ss.idle != nil {
		ss.idle.Stop()
	}
	ss.srv.running.remove(ss)
	// A cancelled session's cause is the reason, whatever error the other
	// direction saw when its socket was closed under it.
	reason := ss.cancel(errEnded)
	if reason == errEnded {
		// Both directions ended by themselves; the sockets are still ours.
		reason = nil
		ss.client.Close()
		ss.server.Close()
	}
	// A recording that is incomplete makes the outcome record-error, also
	// when something else ended the session first: the audit must not take
	// the file for complete up to a reset.
	var recErr error
	if ss.rec != nil {
		if err := ss.rec.Close(); err != nil {
			recErr = &RecordingError{Err: err}
		}
		size, sum := ss.rec.Digest()
		ss.facts.Size = size
		if sum != nil {
			ss.facts.SHA256 = hex.EncodeToString(sum)
		}
	}
	if recErr == nil {
		recErr, _ = ss.recErr.Load().(error)
	}
	var re *RecordingError
	if recErr != nil && !errors.As(reason, &re) {
		reason = errors.Join(recErr, reason)
	}
	ss.report(outcomeOf(reason), reason)
}

// report writes the facts of the ended session to the daemon's log and
// hands them to Config.OnEnd.
func (ss *session) report(outcome Outcome, reason error) {
	s := ss.srv
	defer s.sessions.Done()
	s.active.Add(-1)
	ss.facts.Outcome, ss.facts.Err = outcome, reason
	ss.facts.End = s.now()
	if c := s.cfg.Counters; c != nil {
		c.outcomes[outcome].Add(1)
		if outcome == RecordError && !ss.recOff.Load() {
			c.recErrs.Add(1) // not counted by noteRecordError
		}
	}
	s.logEnd(&ss.facts)
	if s.cfg.OnEnd != nil {
		s.cfg.OnEnd(&ss.facts)
	}
}

func outcomeOf(reason error) Outcome {
	var re *RecordingError
	switch {
	case reason == nil:
		return OK
	case errors.As(reason, &re):
		return RecordError
	default:
		return Aborted
	}
}

// dial connects to the destination, giving up at the connect timeout or
// when the server aborts.
func (ss *session) dial() error {
	s := ss.srv
	addr := JoinHostPort(s.cfg.OutHost, s.cfg.OutPort)
	ctx, cancel := context.WithTimeout(s.abortCtx, s.cfg.ConnectTimeout)
	defer cancel()
	var tried attempts
	c, err := s.dial(context.WithValue(ctx, attemptsKey{}, &tried), "tcp", addr)
	if err != nil {
		// The connection log names the destination that was tried.
		ss.facts.Dest = tried.last()
		if cause := context.Cause(s.abortCtx); cause != nil {
			return cause
		}
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return fmt.Errorf("dial %s: not a TCP connection", addr)
	}
	ss.server = tc
	ss.facts.Dest = addrPort(tc.RemoteAddr())
	return nil
}

// acceptProxyHeader reads the PROXY protocol header a trusted peer's
// connection begins with, within the connect timeout, and makes the
// client it carries the session's.
func (ss *session) acceptProxyHeader() error {
	s, c := ss.srv, ss.client
	c.SetReadDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	stop := context.AfterFunc(s.abortCtx, func() { c.SetReadDeadline(aLongTimeAgo) })
	h, err := readProxyHeader(c)
	stop()
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	if !h.Local {
		ss.facts.Via, ss.facts.Client, ss.local = ss.facts.Client, h.Src, h.Dst
	}
	return nil
}

// aLongTimeAgo is a deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// sendProxyHeader writes the PROXY protocol header to the destination:
// the client, and the address it connected to.
func (ss *session) sendProxyHeader() error {
	dst := ss.local
	if !dst.IsValid() {
		dst = addrPort(ss.client.LocalAddr())
	}
	hdr := AppendProxyHeader(make([]byte, 0, 64), ss.srv.cfg.SendProxy, ss.facts.Client, dst)
	// A new connection's empty send buffer takes the header at once.
	if _, err := ss.server.Write(hdr); err != nil {
		return fmt.Errorf("send the PROXY protocol header to %s: %w", ss.facts.Dest, err)
	}
	return nil
}

func (ss *session) openRecorder() error {
	s := ss.srv
	if s.cfg.OpenRecorder == nil {
		return nil
	}
	rec, path, err := s.cfg.OpenRecorder(&ss.facts, ss.recordFailed)
	ss.facts.File = path
	if err != nil {
		if !s.cfg.ContinueOnRecordError {
			return &RecordingError{Err: err}
		}
		ss.noteRecordError(err)
		return nil
	}
	ss.rec = rec
	return nil
}

// touch notes that bytes moved, for the idle timeout.
func (ss *session) touch() {
	if ss.srv.cfg.IdleTimeout > 0 {
		ss.lastIO.Store(int64(ss.srv.since()))
	}
}

func (ss *session) side(c *net.TCPConn) string {
	if c == ss.client {
		return "client"
	}
	return "server"
}

// record hands a block to the recorder, unless there is none or it failed
// before under ContinueOnRecordError.
func (ss *session) record(dir datafile.Direction, p []byte) error {
	if ss.rec == nil || ss.recOff.Load() {
		return nil
	}
	err := ss.rec.Record(dir, p)
	if err == nil {
		return nil
	}
	if ss.srv.cfg.ContinueOnRecordError {
		ss.noteRecordError(err)
		return nil
	}
	return &RecordingError{Err: err}
}

// recordFailed is OpenRecorder's fail: a recording error found outside
// Record.
func (ss *session) recordFailed(err error) {
	if ss.srv.cfg.ContinueOnRecordError {
		ss.noteRecordError(err)
		return
	}
	// Not on the caller's goroutine: with both directions parked, the
	// cancel completes the session, whose Recorder.Close may wait for the
	// very timer that called Fail.
	go ss.failRecording(err)
}

func (ss *session) failRecording(err error) {
	ss.cancel(&RecordingError{Err: err})
}

// noteRecordError gives up recording the session and keeps the first error
// for its outcome.
func (ss *session) noteRecordError(err error) {
	if ss.recOff.Swap(true) {
		return
	}
	re := &RecordingError{Err: err}
	ss.recErr.Store(error(re))
	if c := ss.srv.cfg.Counters; c != nil {
		c.recErrs.Add(1)
	}
	ss.srv.log.Warn("recording failed, forwarding unrecorded", "conn", ss.facts.N, "err", err)
}

// checkIdle runs on the idle timer: it ends the session, or re-arms the
// timer for the rest of the timeout counted from the last block.
//
// Bytes the proxy wrote may leave its sockets long after the write
// returned: a slow but steady reader drains the kernel's send queue
// without waking the proxy. So a change in the sockets' send queues since
// the last check counts as activity too; a peer that reads nothing leaves
// them as they were.
func (ss *session) checkIdle() {
	if ss.cause.Load() != nil {
		return
	}
	if q := ss.sendQueues(); q != ss.lastQueues {
		ss.lastQueues = q
		ss.touch()
	}
	d := ss.srv.cfg.IdleTimeout
	idle := ss.srv.since() - time.Duration(ss.lastIO.Load())
	if idle >= d {
		ss.cancel(errIdle)
		return
	}
	ss.idle.Reset(d - idle)
}

// sendQueues returns the bytes waiting in the send queues of the two
// sockets (SIOCOUTQ), -1 for a socket that cannot tell.
func (ss *session) sendQueues() [2]int {
	q := [2]int{-1, -1}
	for i, c := range []*net.TCPConn{ss.client, ss.server} {
		if rc, err := c.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if n, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
					q[i] = n
				}
			})
		}
	}
	return q
}

// errEnded is the cause end gives a session whose directions both ended
// by themselves, so that nothing resets it afterwards.
var errEnded = errors.New("ended")

// cancel ends the session at once for cause, unless it was cancelled
// before, and returns the cause that holds. Both sides get a reset, so
// neither takes a cut-off stream for a complete one; the directions see
// their sockets closed and end.
func (ss *session) cancel(cause error) error {
	if !ss.cause.CompareAndSwap(nil, &cause) {
		return *ss.cause.Load()
	}
	if cause != errEnded {
		resetClose(ss.client)
		resetClose(ss.server)
		ss.dirs[datafile.In].unpark()
		ss.dirs[datafile.Out].unpark()
	}
	return cause
}

// sessionList is the server's list of relaying sessions, linked through
// the sessions themselves: a forced stop cancels each, and a session costs
// it two pointers, not a registration of its own (a context.AfterFunc each
// was 500 bytes of every idle connection).
type sessionList struct {
	mu      sync.Mutex
	head    *session
	aborted error // the cause every session added from now on is cancelled with
}

// add links ss in; if the server aborted already, ss is cancelled at once.
func (l *sessionList) add(ss *session) {
	l.mu.Lock()
	cause := l.aborted
	if cause == nil {
		ss.next = l.head
		if l.head != nil {
			l.head.prev = ss
		}
		l.head = ss
	}
	l.mu.Unlock()
	if cause != nil {
		ss.cancel(cause)
	}
}

// remove unlinks ss, if it is linked.
func (l *sessionList) remove(ss *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ss.prev != nil {
		ss.prev.next = ss.next
	} else if l.head == ss {
		l.head = ss.next
	}
	if ss.next != nil {
		ss.next.prev = ss.prev
	}
	ss.prev, ss.next = nil, nil
}

// abort cancels every session linked now and every one added later with
// cause.
func (l *sessionList) abort(cause error) {
	l.mu.Lock()
	l.aborted = cause
	var all []*session
	for ss := l.head; ss != nil; ss = ss.next {
		all = append(all, ss)
	}
	l.mu.Unlock()
	// Outside the lock: a cancelled session whose directions were parked
	// ends on this goroutine, and its end removes it from the list.
	// Each on a goroutine of its own: a cancelled session whose directions
	// were parked ends on the goroutine that cancels it (Recorder.Close,
	// OnEnd with its audit fsync); one after another, n sessions would take
	// n ends.
	for _, ss := range all {
		go ss.cancel(cause)
	}
}

// resetClose closes c with a reset (SO_LINGER 0) instead of a FIN.
func resetClose(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// attempts is the address a dial tried last, noted by the dialer's
// Control for each connection it attempts (in parallel where a name has
// IPv4 and IPv6 addresses).
type attempts struct {
	mu   sync.Mutex
	addr netip.AddrPort
}

type attemptsKey struct{}

func (a *attempts) last() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addr
}

// noteAttempt is the default dialer's ControlContext: it notes address,
// the attempt about to be made, in the dial's attempts.
func noteAttempt(ctx context.Context, _, address string, _ syscall.RawConn) error {
	if a, ok := ctx.Value(attemptsKey{}).(*attempts); ok {
		if ap, err := netip.ParseAddrPort(address); err == nil {
			a.mu.Lock()
			a.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			a.mu.Unlock()
		}
	}
	return nil
}
