package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ipprot/ipprot/datafile"
	"golang.org/x/sys/unix"
)

// A direction's path, in the order of this file: step reads a block
// (blockReader, into a pooled buffer taken only once the socket is
// readable), hands it to the session's recorder and writes it on (write,
// writeFD); a direction that stays idle parks (park, wake).

// direction is one way of a session: it reads src a block at a time,
// records the block where it is recorded, and writes it to dst, until src
// ends. A FIN from src half-closes dst; any error cancels the session,
// which resets both sides.
//
// A direction runs on a goroutine of its own while bytes flow. Once its
// source has had nothing to read for Server.parkAfter, it parks: the
// server's parker watches the socket and the goroutine ends, so an idle
// connection holds no goroutine, stack or buffer. When the socket
// becomes readable, the parker starts the direction on a new goroutine.
type direction struct {
	ss       *session
	dir      datafile.Direction
	src, dst *net.TCPConn
	// srcTLS and dstTLS are the TLS on src and dst where the proxy speaks
	// it (the plaintext is read, recorded and written), nil in clear.
	srcTLS, dstTLS *tls.Conn
	srcRaw         syscall.RawConn
	dstRaw         syscall.RawConn
	// count is the facts' byte count of this direction: bytes read from
	// the client (In), bytes written to it (Out). The session reads it once
	// both directions ended.
	count    *int64
	recorded bool // the recorder wants this direction's blocks
	br       blockReader
	parkAt   time.Time // the read deadline set to notice idleness
	noPark   bool      // parking failed once: wait on the goroutine

	// The block being written (write, writeFD). wbuf is the block, or,
	// once a write blocked, a copy of what was left of it; wn counts the
	// bytes of wbuf written, wrote all bytes of the block written.
	wbuf    []byte
	wn      int
	wrote   int
	werr    error
	writeFn func(fd uintptr) bool // d.writeFD, bound once
	// blocked says that dst did not take the current block at once; the
	// read buffer is given back then, and the write deadline set.
	blocked  bool
	deadline bool // a write deadline is set on dst
	// slow counts down the reads that stay small (slowRead bytes) after
	// dst blocked a write: a peer that stopped reading pins at most that
	// much, not a -b block.
	slow int
	// bulk says that the last read filled its limit or at least bulkRead
	// bytes, tight that dst's send buffer had little room at the last look:
	// either way the next read is capped at what dst can take (dstRoom).
	bulk, tight bool
	// warm says that dst has taken a block whole: until then, reads take at
	// most bulkRead bytes.
	warm bool
	// fits says that dstRoom had room for the whole block being written.
	fits bool

	mu    sync.Mutex // guards state and parkID against the parker and cancel
	state dirState
	// parkID is the direction's key in the parker while parked.
	parkID uint64
}

type dirState uint8

const (
	running dirState = iota
	parked
	finished
)

// errPark is what step returns when the source stayed silent until the
// parking deadline.
var errPark = errors.New("park")

func (d *direction) init(ss *session, dir datafile.Direction, src, dst *net.TCPConn, srcTLS, dstTLS *tls.Conn, count *int64) error {
	d.ss, d.dir, d.src, d.dst, d.count = ss, dir, src, dst, count
	d.srcTLS, d.dstTLS = srcTLS, dstTLS
	var err error
	if d.srcRaw, err = src.SyscallConn(); err != nil {
		return err
	}
	if d.dstRaw, err = dst.SyscallConn(); err != nil {
		return err
	}
	d.writeFn = d.writeFD
	d.br.init(d.srcRaw, ss.srv.bufPool)
	d.recorded = ss.rec != nil && ss.rec.Wants(dir)
	return nil
}

// run moves blocks until the direction ends or parks.
func (d *direction) run() {
	for {
		err := d.step()
		switch {
		case err == nil:
			continue
		case err == errPark:
			if d.park() {
				return // the parker starts run again
			}
			if d.ss.cause.Load() == nil {
				continue
			}
			// The session was cancelled while the direction went idle.
		case err == io.EOF:
			// Pass the FIN (or close_notify) on; the other direction
			// keeps flowing.
			d.closeWrite(d.ss.running.Load() == 1)
		default:
			d.ss.cancel(err)
		}
		d.finish()
		return
	}
}

// After dst blocked a write, the next slowReads reads take at most
// slowRead bytes; a read of bulkRead bytes or more makes the next one ask
// dst how much it can take.
const (
	slowRead  = 16 << 10
	slowReads = 8
	bulkRead  = 64 << 10
)

// step moves one block, or returns why it could not.
func (d *direction) step() error {
	d.armPark()
	limit := d.readLimit()
	var p []byte
	var err error
	if d.srcTLS != nil {
		p, err = d.readTLS(limit)
	} else {
		p, err = d.br.read(limit)
	}
	switch {
	case err == nil:
	case err == io.EOF:
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errPark
	default:
		return fmt.Errorf("read from %s: %w", d.ss.side(d.src), err)
	}
	d.ss.touch()
	// A read that filled its limit, or a large one, says that more is
	// waiting: the next read asks dst how much it can take.
	d.bulk = len(p) >= bulkRead || len(p) == limit
	if d.dir == datafile.In {
		*d.count += int64(len(p))
		d.ss.srv.countBytes(datafile.In, len(p))
	}
	if d.recorded {
		if err := d.ss.record(d.dir, p); err != nil {
			d.br.release()
			return err
		}
	}
	return d.send(p)
}

// send writes the block p on to dst, plain or TLS, counts it and gives
// its buffer back.
func (d *direction) send(p []byte) error {
	var n int
	var err error
	if d.dstTLS != nil {
		n, err = d.writeTLS(p)
	} else {
		n, err = d.write(p)
	}
	if d.dir == datafile.Out {
		*d.count += int64(n)
		d.ss.srv.countBytes(datafile.Out, n)
	}
	d.br.release()
	if err != nil {
		return fmt.Errorf("write to %s: %w", d.ss.side(d.dst), err)
	}
	return nil
}

// forward records and writes p, bytes of the source read before the
// direction runs (by the client's negotiation), as step does a block.
func (d *direction) forward(p []byte) error {
	d.ss.touch()
	if d.dir == datafile.In {
		*d.count += int64(len(p))
		d.ss.srv.countBytes(datafile.In, len(p))
	}
	if d.recorded {
		if err := d.ss.record(d.dir, p); err != nil {
			return err
		}
	}
	return d.send(p)
}

// readTLS reads the next block of plaintext from the source's TLS into a
// pooled buffer. Unlike a plain socket's, it takes the buffer before the
// data is there: crypto/tls reads into it. A read that meets the parking
// deadline gives it back, so an idle TLS direction holds none either.
func (d *direction) readTLS(limit int) ([]byte, error) {
	// A TLS record holds at most 16 KiB of plaintext, and crypto/tls
	// returns one record's at a time: a larger buffer would only be held.
	limit = min(limit, tlsRecordPlaintext)
	buf := d.br.take(limit)
	n, err := d.srcTLS.Read((*buf)[:min(limit, len(*buf))])
	if n > 0 {
		return (*buf)[:n], nil
	}
	d.br.release()
	if err == nil {
		err = io.ErrNoProgress
	}
	return nil, err
}

// tlsRecordPlaintext is the most plaintext a TLS record carries.
const tlsRecordPlaintext = 16 << 10

// writeTLS writes p whole through dst's TLS. A write that takes no byte
// for Config.WriteTimeout ends the session; crypto/tls holds the records
// it encrypted meanwhile, at most one block's worth.
func (d *direction) writeTLS(p []byte) (int, error) {
	if t := d.ss.srv.cfg.WriteTimeout; t > 0 {
		d.dst.SetWriteDeadline(time.Now().Add(t))
		defer d.dst.SetWriteDeadline(time.Time{})
	}
	n, err := d.dstTLS.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: it took no byte for %v (--write-timeout)", errStalled, d.ss.srv.cfg.WriteTimeout)
	}
	return n, err
}

// closeWrite passes the end of the source's stream on: a close_notify
// through dst's TLS, then a FIN. When the other direction has already
// ended, the session closes dst as soon as this one finishes: the close
// sends the FIN (dst's stream was read to its end, so it is not a reset)
// and a shutdown first would be one system call per connection for
// nothing.
func (d *direction) closeWrite(last bool) {
	if d.dstTLS != nil {
		d.dstTLS.CloseWrite()
	}
	if !last {
		d.dst.CloseWrite()
	}
}

// readLimit is the most the next read may take: the whole buffer, or
// less where dst is known to be slow or nearly full.
func (d *direction) readLimit() int {
	limit := d.ss.srv.cfg.BufferSize
	if !d.warm {
		// Until dst has taken a block whole, nothing says how much it can
		// take: a new socket's send buffer starts small.
		limit = min(limit, bulkRead)
	}
	if d.slow > 0 {
		d.slow--
		limit = min(limit, slowRead)
	}
	if d.dstTLS != nil {
		// crypto/tls takes one record (16 KiB) at a time: a larger block
		// gains nothing, and a write stalled on its peer holds it whole.
		limit = min(limit, tlsRecordPlaintext)
	}
	if d.ss.srv.underPressure() {
		limit = min(limit, bulkRead)
	}
	d.fits = false
	if d.bulk || d.tight {
		room := d.dstRoom()
		d.tight = room < 2*d.ss.srv.cfg.BufferSize
		limit = min(limit, max(room, slowRead))
		d.fits = room != math.MaxInt && room >= limit // only where the socket could tell
	}
	return limit
}

// dstRoom estimates the bytes dst's send buffer can take now: what the
// kernel counts as free in it (SO_MEMINFO: its size less what is queued,
// both with the kernel's overhead), halved for that overhead. MaxInt
// where the socket cannot tell.
func (d *direction) dstRoom() int {
	room := math.MaxInt
	d.dstRaw.Control(func(fd uintptr) {
		var mem [unix.SK_MEMINFO_VARS]uint32
		size := uint32(unsafe.Sizeof(mem))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			return
		}
		free := int(mem[unix.SK_MEMINFO_SNDBUF]) - int(mem[unix.SK_MEMINFO_WMEM_QUEUED])
		room = max(free/2, 0)
	})
	return room
}

// write writes p whole to dst and returns how much it wrote. Every piece
// the socket takes counts as activity for the idle timeout, so a slow but
// steady reader is not taken for an idle one.
//
// When dst cannot take the block at once, what is left of it is copied
// and the read buffer given back, so that a peer that stops reading pins
// only the bytes it has not taken; a write deadline (Config.WriteTimeout)
// then ends the session if the peer takes nothing for that long.
func (d *direction) write(p []byte) (int, error) {
	d.wbuf, d.wn, d.wrote, d.werr, d.blocked = p, 0, 0, nil, false
	err := d.dstRaw.Write(d.writeFn)
	n := d.wrote
	if err == nil && d.werr != nil {
		err = os.NewSyscallError("write", d.werr)
	}
	if d.deadline {
		d.deadline = false
		d.dst.SetWriteDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: it took no byte for %v (--write-timeout)", errStalled, d.ss.srv.cfg.WriteTimeout)
		}
	}
	if d.blocked {
		d.slow = slowReads
	} else {
		d.warm = true
	}
	d.wbuf = nil // p goes back to the pool
	return n, err
}

// errStalled is the reason a session ends when a peer stops reading.
var errStalled = errors.New("stalled")

// writeFD writes what is left of the block; it returns false to wait for
// the socket to become writable.
func (d *direction) writeFD(fd uintptr) bool {
	for d.wn < len(d.wbuf) {
		n, err := rawWrite(int(fd), d.wbuf[d.wn:])
		switch err {
		case nil:
			d.wn += n
			d.wrote += n
			d.ss.touch()
			if d.deadline {
				d.armWriteDeadline()
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			d.stall()
			return false
		default:
			d.werr = err
			return true
		}
	}
	return true
}

// stall is called when dst cannot take the rest of the block now: the
// rest moves to a buffer of its own size and the read buffer goes back to
// the pool; the write deadline starts.
func (d *direction) stall() {
	if !d.blocked {
		d.blocked = true
		if d.fits {
			// The kernel refused what the send buffer had room for: it
			// is short of socket memory (net.ipv4.tcp_mem).
			d.ss.srv.notePressure()
		}
		rest := make([]byte, len(d.wbuf)-d.wn)
		copy(rest, d.wbuf[d.wn:])
		d.wbuf, d.wn = rest, 0
		d.br.release()
	}
	if d.ss.srv.cfg.WriteTimeout > 0 && !d.deadline {
		d.deadline = true
		d.armWriteDeadline()
	}
}

func (d *direction) armWriteDeadline() {
	d.dst.SetWriteDeadline(time.Now().Add(d.ss.srv.cfg.WriteTimeout))
}

// blockReader reads a socket into buffers of a pool, taking one only when
// the socket is readable, so an idle connection holds no buffer.
type blockReader struct {
	rc    syscall.RawConn
	pool  *bufPool
	buf   *[]byte
	limit int
	n     int
	err   error
	fn    func(fd uintptr) bool // r.readFD, bound once
}

func (r *blockReader) init(rc syscall.RawConn, pool *bufPool) {
	*r = blockReader{rc: rc, pool: pool}
	r.fn = r.readFD
}

// read returns the next block of at most limit bytes, valid until
// release, or io.EOF at the end.
func (r *blockReader) read(limit int) ([]byte, error) {
	r.n, r.err, r.limit = 0, nil, limit
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
//
// It always tries the read, even after a read that left the socket empty:
// RawRead clears the poller's readiness before calling it, so an edge that
// came in since the last read is known only to the socket itself, and
// waiting without reading would miss bytes already there until the next
// edge, which may never come (TestNoMissedWakeupWhileWriting). Nor can the
// skip be kept within one RawRead: a FIN queued behind the data is not
// consumed by the read that returns the data, and its edge, merged with
// the data's, is gone (TestNoMissedWakeupAtClose).
func (r *blockReader) readFD(fd uintptr) bool {
	if r.buf == nil {
		r.buf = r.pool.get(r.limit)
	}
	for {
		n, err := rawRead(int(fd), (*r.buf)[:min(r.limit, len(*r.buf))])
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

// take gives the reader a buffer for a read of at most limit bytes, for a
// reader of its own (crypto/tls); release gives it back.
func (r *blockReader) take(limit int) *[]byte {
	if r.buf == nil {
		r.buf = r.pool.get(limit)
	}
	return r.buf
}

func (r *blockReader) release() {
	if r.buf != nil {
		r.pool.put(r.buf)
		r.buf = nil
	}
}

// bufPool lends the buffers blocks are read into: of the block size, or of
// slowRead bytes for a read limited to that (a peer that stopped reading
// would otherwise churn -b buffers for a few KiB each). It counts the
// buffers out, so that tests can show an idle connection holds none.
type bufPool struct {
	size  int
	large sync.Pool // *[]byte of size
	small sync.Pool // *[]byte of slowRead
	out   atomic.Int64
}

func newBufPool(size int) *bufPool {
	p := &bufPool{size: size}
	p.large.New = func() any { b := make([]byte, size); return &b }
	p.small.New = func() any { b := make([]byte, slowRead); return &b }
	return p
}

// get returns a buffer for a read of at most limit bytes.
func (p *bufPool) get(limit int) *[]byte {
	p.out.Add(1)
	if limit <= slowRead && p.size > slowRead {
		return p.small.Get().(*[]byte)
	}
	return p.large.Get().(*[]byte)
}

func (p *bufPool) put(b *[]byte) {
	p.out.Add(-1)
	if len(*b) == p.size {
		p.large.Put(b)
	} else {
		p.small.Put(b)
	}
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket
// without the runtime's system-call bookkeeping. syscall.Read and Write
// tell the scheduler that the thread may block, so that it can hand the
// goroutine's processor to another thread; on a socket that cannot
// block that costs more than the call itself. Measured with many small
// requests per connection (wrk keep-alive through the proxy on 2 CPUs),
// the bookkeeping kept the runtime's monitor thread waking every 20 µs to
// take back processors from calls that were never going to block.
func rawRead(fd int, p []byte) (int, error) { return rawIO(syscall.SYS_READ, fd, p) }

func rawWrite(fd int, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, p) }

func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// armPark sets the read deadline at which the direction parks, renewing
// it only when half of it is used up, so that a busy direction does not
// pay for a timer change per block.
func (d *direction) armPark() {
	after := d.ss.srv.parkAfter
	if after <= 0 || d.noPark {
		return
	}
	now := time.Now()
	if d.parkAt.Sub(now) >= after/2 {
		return
	}
	d.parkAt = now.Add(after)
	d.src.SetReadDeadline(d.parkAt)
}

// park hands the direction's source to the parker. It returns false where
// the direction must go on waiting on its goroutine: the session was
// cancelled, or the parker could not take the socket.
func (d *direction) park() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ss.cause.Load() != nil {
		return false
	}
	id, err := d.ss.srv.parker.add(d)
	if err != nil {
		if d.ss.cause.Load() != nil {
			return false // cancelled meanwhile: its socket was closed under add
		}
		d.noPark = true
		d.src.SetReadDeadline(time.Time{})
		d.ss.srv.warnRarely("cannot park an idle connection; it keeps its goroutine", "conn", d.ss.facts.N, "err", err)
		return false
	}
	d.state, d.parkID = parked, id
	return true
}

// wake is called by the parker when the parked source became readable
// (or was closed): the direction runs again on a worker goroutine.
func (d *direction) wake(id uint64) {
	d.mu.Lock()
	if d.state != parked || d.parkID != id {
		d.mu.Unlock()
		return
	}
	d.state = running
	d.ss.srv.parker.remove(d)
	d.mu.Unlock()
	d.ss.srv.workers.Go(d.run)
}

// unpark ends a parked direction of a cancelled session; a running one
// ends by itself once its sockets are closed.
func (d *direction) unpark() {
	d.mu.Lock()
	if d.state != parked {
		d.mu.Unlock()
		return
	}
	d.state = finished
	d.ss.srv.parker.remove(d)
	d.mu.Unlock()
	d.ss.directionDone()
}

// finish ends a running direction.
func (d *direction) finish() {
	d.mu.Lock()
	d.state = finished
	d.mu.Unlock()
	d.ss.directionDone()
}
