package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// parker watches the sources of parked directions with an epoll instance
// of its own and starts a direction again when its source becomes
// readable. The epoll descriptor is itself waited on through the runtime's
// poller, so the parker's goroutine holds no thread while it waits.
//
// Registrations are one-shot and made and removed through the socket's
// RawConn.Control, which keeps the descriptor open meanwhile: a
// descriptor number that was closed and reused by another socket can never
// be added or removed by mistake. A socket closed while parked leaves the
// epoll set by itself.
type parker struct {
	// Set once by start, under mu, and never changed.
	ep    *os.File
	epfd  int // ep's descriptor
	epRaw syscall.RawConn
	done  chan struct{} // closed when loop returns

	mu     sync.Mutex
	closed bool
	nextID uint64
	parked map[uint64]*direction
}

var errParkerClosed = errors.New("parker closed")

// start creates the epoll instance and the goroutine that waits on it, if
// that was not done yet. A failure (descriptors ran out) is not kept: the
// next park tries again. p.mu is held.
func (p *parker) start() error {
	if p.closed {
		return errParkerClosed
	}
	if p.ep != nil {
		return nil
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "parker")
	raw, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return err
	}
	p.ep, p.epfd, p.epRaw = ep, fd, raw
	p.parked = make(map[uint64]*direction)
	p.done = make(chan struct{})
	go p.loop()
	return nil
}

// add watches d's source for readability and returns d's key. d.mu is
// held.
func (p *parker) add(d *direction) (uint64, error) {
	p.mu.Lock()
	if err := p.start(); err != nil {
		p.mu.Unlock()
		return 0, err
	}
	p.nextID++
	id := p.nextID
	p.parked[id] = d
	epfd := p.epfd
	p.mu.Unlock()

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	var err error
	cerr := d.srcRaw.Control(func(fd uintptr) {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err = errors.Join(cerr, err); err != nil {
		p.mu.Lock()
		delete(p.parked, id)
		p.mu.Unlock()
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	return id, nil
}

// remove stops watching d's source. d.mu is held and d was parked.
func (p *parker) remove(d *direction) {
	p.mu.Lock()
	delete(p.parked, d.parkID)
	epfd := p.epfd
	p.mu.Unlock()
	// A closed socket has left the set already (Control then fails).
	d.srcRaw.Control(func(fd uintptr) {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// loop wakes the directions whose sources became readable until the
// parker is closed.
func (p *parker) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	var n int
	wait := func(fd uintptr) bool {
		var err error
		n, err = unix.EpollWait(int(fd), events, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	}
	for {
		if err := p.epRaw.Read(wait); err != nil {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			d := p.parked[id]
			p.mu.Unlock()
			if d != nil {
				d.wake(id)
			}
		}
	}
}

// len returns the number of directions parked now.
func (p *parker) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// close stops the parker once no direction is parked.
func (p *parker) close() {
	p.mu.Lock()
	ep, done := p.ep, p.done
	p.closed = true
	p.mu.Unlock()
	if ep == nil {
		return
	}
	ep.Close()
	<-done
}
