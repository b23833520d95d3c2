package proxy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// splicer moves one direction's bytes from socket to socket through a pipe
// with splice(2), without copying them through user space. It is used for
// a direction whose blocks nobody records. Like blockReader, it takes a pipe
// only once the source is readable and gives it back when the source runs
// dry, so an idle connection holds no pipe (and no descriptors).
type splicer struct {
	src, dst syscall.RawConn
	pipes    *pipePool
	p        *pipe // held while bytes are in flight
	max      int   // bytes per splice(2): at most the block size
	inPipe   int   // bytes in p, not yet written to dst
	err      error
	readFn   func(fd uintptr) bool // s.readFD, bound once
	writeFn  func(fd uintptr) bool // s.writeFD, bound once
	progress func()                // called when dst took bytes; may be nil
}

func (s *splicer) init(src, dst syscall.RawConn, pipes *pipePool, max int) {
	*s = splicer{src: src, dst: dst, pipes: pipes, max: min(max, pipes.size)}
	s.readFn, s.writeFn = s.readFD, s.writeFD
}

// move transfers the next chunk from src to dst and returns its size, or
// io.EOF once src has ended: the bytes it read from src and wrote to dst.
// A write error is returned with writeErr set; errNoPipe (wrapped) means
// no pipe could be had and nothing was read.
func (s *splicer) move() (read, written int, writeErr bool, err error) {
	s.err = nil
	if err := s.src.Read(s.readFn); err != nil {
		s.release()
		return 0, 0, false, err
	}
	if s.err != nil {
		s.release()
		if errors.Is(s.err, errNoPipe) {
			return 0, 0, false, s.err
		}
		return 0, 0, false, os.NewSyscallError("splice", s.err)
	}
	if s.inPipe == 0 {
		s.release()
		return 0, 0, false, io.EOF
	}
	read = s.inPipe
	err = s.dst.Write(s.writeFn)
	if err == nil && s.err != nil {
		err = os.NewSyscallError("splice", s.err)
	}
	if err != nil {
		written = read - s.inPipe // before release forgets what is stuck in the pipe
		s.release()
		return read, written, true, err
	}
	return read, read, false, nil
}

// errNoPipe is wrapped by move when no pipe could be created (descriptors
// ran out): the direction then copies through a buffer instead.
var errNoPipe = errors.New("no pipe for splice")

// readFD splices what the socket holds into the pipe; it returns false to
// wait for the socket to become readable, having given the pipe back.
func (s *splicer) readFD(fd uintptr) bool {
	if s.p == nil {
		p, err := s.pipes.get()
		if err != nil {
			s.err = fmt.Errorf("%w: %w", errNoPipe, err)
			return true
		}
		s.p = p
	}
	for {
		n, err := unix.Splice(int(fd), nil, s.p.w, nil, s.max, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// The pipe is empty here, so it is the socket that has nothing.
			s.release()
			return false
		case nil:
			s.inPipe = int(n)
		default:
			s.err = err
		}
		return true
	}
}

// writeFD drains the pipe into the socket; it returns false to wait for the
// socket to become writable.
func (s *splicer) writeFD(fd uintptr) bool {
	for s.inPipe > 0 {
		n, err := unix.Splice(s.p.r, nil, int(fd), nil, s.inPipe, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case nil:
			s.inPipe -= int(n)
			if s.progress != nil {
				s.progress()
			}
		default:
			s.err = err
			return true
		}
	}
	return true
}

// release gives the pipe back, or closes it if bytes are stuck in it.
func (s *splicer) release() {
	if s.p == nil {
		return
	}
	if s.inPipe > 0 {
		s.p.close()
		s.pipes.drop()
	} else {
		s.pipes.put(s.p)
	}
	s.p, s.inPipe = nil, 0
}

// pipe is a non-blocking pipe for splice(2).
type pipe struct{ r, w int }

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// pipePool keeps empty pipes for reuse, up to a bound; the rest are closed.
// It is safe for concurrent use.
type pipePool struct {
	size   int // the pipes' capacity, set once by newPipePool
	mu     sync.Mutex
	free   []*pipe
	closed bool // pipes given back are closed
	held   int  // pipes taken and not given back
	// create makes a new pipe; nil means newPipe (tests make it fail).
	create func(size int) (*pipe, int, error)
}

// maxFreePipes bounds the idle pipes kept: two descriptors each.
const maxFreePipes = 64

// newPipePool returns a pool of pipes of about size bytes (the kernel
// rounds up to a power of two pages, at most fs.pipe-max-size).
func newPipePool(size int) *pipePool {
	pp := &pipePool{size: 64 << 10} // the kernel's default
	// Learn what the kernel grants: a larger pipe moves a larger chunk per
	// splice.
	if p, got, err := newPipe(size); err == nil {
		pp.size = got
		pp.free = append(pp.free, p)
	}
	return pp
}

func (pp *pipePool) get() (*pipe, error) {
	pp.mu.Lock()
	pp.held++
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	create := pp.create
	pp.mu.Unlock()
	if create == nil {
		create = newPipe
	}
	p, _, err := create(pp.size)
	if err != nil {
		pp.drop()
	}
	return p, err
}

// drop accounts for a taken pipe that was closed instead of given back.
func (pp *pipePool) drop() {
	pp.mu.Lock()
	pp.held--
	pp.mu.Unlock()
}

// inUse returns the number of pipes taken and not given back.
func (pp *pipePool) inUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.held
}

// newPipe returns a pipe of about size bytes and the size it got. Where the
// kernel refuses the size (the per-user pipe limit), the pipe keeps its
// default of 64 KiB, which only means smaller chunks.
func newPipe(size int) (*pipe, int, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, 0, os.NewSyscallError("pipe2", err)
	}
	p := &pipe{r: fds[0], w: fds[1]}
	got := 64 << 10
	if size > got {
		if n, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, size); err == nil {
			got = n
		}
	}
	return p, got, nil
}

// close closes the idle pipes, and every pipe given back from now on.
func (pp *pipePool) close() {
	pp.mu.Lock()
	free := pp.free
	pp.free, pp.closed = nil, true
	pp.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}

func (pp *pipePool) put(p *pipe) {
	pp.mu.Lock()
	pp.held--
	if len(pp.free) < maxFreePipes && !pp.closed {
		pp.free = append(pp.free, p)
		p = nil
	}
	pp.mu.Unlock()
	if p != nil {
		p.close()
	}
}
