package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ipprot/ipprot/recorder"
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

	ctx    context.Context // cancelled with the reason the session must end now
	cancel context.CancelCauseFunc

	rec     Recorder
	recOff  atomic.Bool  // recording given up (ContinueOnRecordError)
	recErr  atomic.Value // error: the first recording error, when recOff
	lastIO  atomic.Int64 // UnixNano of the last block, for IdleTimeout
	idle    *time.Timer
	resetMu sync.Once
}

// serveConn runs the session of an accepted connection from the first
// check to the report of its facts.
func (s *Server) serveConn(c *net.TCPConn) {
	defer s.sessions.Done()
	ss := &session{srv: s, client: c}
	ss.facts = Facts{
		N:       s.count.Add(1),
		Start:   s.now(),
		Client:  addrPort(c.RemoteAddr()),
		OutHost: s.cfg.OutHost,
		OutPort: s.cfg.OutPort,
	}
	ss.facts.Outcome, ss.facts.Err = ss.run()
	ss.facts.End = s.now()
	s.logEnd(&ss.facts)
	if s.cfg.OnEnd != nil {
		s.cfg.OnEnd(&ss.facts)
	}
}

// run decides, dials, relays and closes; it returns the outcome.
func (ss *session) run() (Outcome, error) {
	s := ss.srv
	if n := s.active.Add(1); s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
		s.active.Add(-1)
		resetClose(ss.client)
		return Rejected, errMaxConns
	}
	defer s.active.Add(-1)
	if !s.cfg.Allow.Allows(ss.facts.Client.Addr()) {
		resetClose(ss.client)
		return Rejected, errNotAllow
	}

	ss.ctx, ss.cancel = context.WithCancelCause(s.abortCtx)
	defer ss.cancel(nil)
	if err := ss.dial(); err != nil {
		resetClose(ss.client)
		return ConnectFailed, err
	}
	if err := ss.openRecorder(); err != nil {
		resetClose(ss.client)
		resetClose(ss.server)
		return RecordError, err
	}

	reason := ss.relay()
	if ss.rec != nil {
		if err := ss.rec.Close(); err != nil {
			ss.noteRecordError(err)
			if reason == nil {
				reason = &RecordingError{Err: err}
			}
		}
	}
	if reason == nil {
		if err, _ := ss.recErr.Load().(error); err != nil {
			reason = err
		}
	}
	return outcomeOf(reason), reason
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
	ctx, cancel := context.WithTimeout(ss.ctx, s.cfg.ConnectTimeout)
	defer cancel()
	c, err := s.dial(ctx, "tcp", addr)
	if err != nil {
		if cause := context.Cause(ss.ctx); cause != nil {
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

func (ss *session) openRecorder() error {
	s := ss.srv
	if s.cfg.OpenRecorder == nil {
		return nil
	}
	rec, path, err := s.cfg.OpenRecorder(Session{
		N:      ss.facts.N,
		Start:  ss.facts.Start,
		Client: ss.facts.Client,
		Fail:   ss.recordFailed,
	})
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

// relay runs both directions until both ended, and returns why the session
// ended early, or nil if both directions ended with a FIN.
func (ss *session) relay() error {
	if ss.srv.cfg.IdleTimeout > 0 {
		ss.lastIO.Store(time.Now().UnixNano())
		ss.idle = time.AfterFunc(ss.srv.cfg.IdleTimeout, ss.checkIdle)
		defer ss.idle.Stop()
	}
	stop := context.AfterFunc(ss.ctx, ss.reset)
	var g errgroup.Group
	g.Go(ss.clientToServer)
	g.Go(ss.serverToClient)
	err := g.Wait()
	if stop() {
		// Both directions ended by themselves; the sockets are still ours.
		ss.client.Close()
		ss.server.Close()
		return err
	}
	// The session was cancelled: the cause is the reason, whatever error the
	// other direction saw when its socket was closed under it.
	return context.Cause(ss.ctx)
}

func (ss *session) clientToServer() error {
	return ss.pipe(recorder.In, ss.client, ss.server, &ss.facts.BytesIn)
}

func (ss *session) serverToClient() error {
	return ss.pipe(recorder.Out, ss.server, ss.client, &ss.facts.BytesOut)
}

// pipe copies src to dst a block at a time, recording each block before it
// is written, until src ends. A FIN from src half-closes dst; any error
// cancels the session, which resets both sides. A direction nobody records
// is spliced instead.
func (ss *session) pipe(dir recorder.Direction, src, dst *net.TCPConn, count *int64) error {
	if ss.rec == nil || !ss.rec.Wants(dir) {
		return ss.splice(src, dst, count)
	}
	r, err := newBlockReader(src, &ss.srv.bufPool)
	if err != nil {
		ss.cancel(err)
		return err
	}
	for {
		p, err := r.read()
		if err == io.EOF {
			// Pass the FIN on; the other direction keeps flowing.
			dst.CloseWrite()
			return nil
		}
		if err != nil {
			err = fmt.Errorf("read from %s: %w", ss.side(src), err)
			ss.cancel(err)
			return err
		}
		if ss.srv.cfg.IdleTimeout > 0 {
			ss.lastIO.Store(time.Now().UnixNano())
		}
		if err := ss.record(dir, p); err != nil {
			r.release()
			ss.cancel(err)
			return err
		}
		n, err := dst.Write(p)
		*count += int64(n)
		r.release()
		if err != nil {
			err = fmt.Errorf("write to %s: %w", ss.side(dst), err)
			ss.cancel(err)
			return err
		}
	}
}

// splice moves src to dst with splice(2) until src ends, with pipe's
// FIN and error handling.
func (ss *session) splice(src, dst *net.TCPConn, count *int64) error {
	s, err := newSplicer(src, dst, ss.srv.pipes, ss.srv.cfg.BufferSize)
	if err != nil {
		ss.cancel(err)
		return err
	}
	for {
		n, writeErr, err := s.move()
		*count += int64(n)
		if err == io.EOF {
			dst.CloseWrite()
			return nil
		}
		if err != nil {
			if writeErr {
				err = fmt.Errorf("write to %s: %w", ss.side(dst), err)
			} else {
				err = fmt.Errorf("read from %s: %w", ss.side(src), err)
			}
			ss.cancel(err)
			return err
		}
		if ss.srv.cfg.IdleTimeout > 0 {
			ss.lastIO.Store(time.Now().UnixNano())
		}
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
func (ss *session) record(dir recorder.Direction, p []byte) error {
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

// recordFailed is Session.Fail: a recording error found outside Record.
func (ss *session) recordFailed(err error) {
	if ss.srv.cfg.ContinueOnRecordError {
		ss.noteRecordError(err)
		return
	}
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
	ss.srv.log.Warn("recording failed, forwarding unrecorded", "conn", ss.facts.N, "err", err)
}

// checkIdle runs on the idle timer: it ends the session, or re-arms the
// timer for the rest of the timeout counted from the last block.
func (ss *session) checkIdle() {
	if ss.ctx.Err() != nil {
		return
	}
	d := ss.srv.cfg.IdleTimeout
	idle := time.Since(time.Unix(0, ss.lastIO.Load()))
	if idle >= d {
		ss.cancel(errIdle)
		return
	}
	ss.idle.Reset(d - idle)
}

// reset ends the session at once: both sides get a reset, so neither takes
// a cut-off stream for a complete one.
func (ss *session) reset() {
	ss.resetMu.Do(func() {
		resetClose(ss.client)
		resetClose(ss.server)
	})
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

// blockReader reads a socket into buffers of a pool, taking one only when
// the socket is readable, so an idle connection holds no buffer.
type blockReader struct {
	rc   syscall.RawConn
	pool *sync.Pool
	buf  *[]byte
	n    int
	err  error
	fn   func(fd uintptr) bool // r.readFD, bound once
}

func newBlockReader(c *net.TCPConn, pool *sync.Pool) (*blockReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &blockReader{rc: rc, pool: pool}
	r.fn = r.readFD
	return r, nil
}

// read returns the next block, valid until release, or io.EOF at the end.
func (r *blockReader) read() ([]byte, error) {
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		r.release()
		return nil, err
	}
	if r.err != nil {
		r.release()
		return nil, os.NewSyscallError("read", r.err)
	}
	if r.n == 0 {
		r.release()
		return nil, io.EOF
	}
	return (*r.buf)[:r.n], nil
}

// readFD is called by the runtime poller whenever the socket may be
// readable; it returns false to wait for the next readiness.
func (r *blockReader) readFD(fd uintptr) bool {
	if r.buf == nil {
		r.buf = r.pool.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), *r.buf)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.release()
			return false
		case nil:
			r.n = n
		default:
			r.err = err
		}
		return true
	}
}

func (r *blockReader) release() {
	if r.buf != nil {
		r.pool.Put(r.buf)
		r.buf = nil
	}
}
