// Command epollgo is the benchmark's second reference point: a Go proxy
// that runs its own event loops on epoll, the way nginx and HAProxy do,
// instead of a goroutine per direction on the runtime's poller. It
// records nothing and handles no timeouts, limits or signals; it exists
// only to measure what such a design could reach on this machine, so that
// ipprotd's connection-rate and keep-alive figures can be read against it.
//
// One loop per CPU, each locked to a thread with a listener of its own
// (SO_REUSEPORT), waiting in epoll_wait(2). A readable socket is read
// until a short read, the way nginx does: the edge-triggered event's
// EPOLLRDHUP says whether a FIN waits behind the data, so no read ends in
// EAGAIN. Bytes the destination cannot take at once wait in a buffer of
// the connection's own, and reading stops until they are written.
//
//	epollgo -listen 127.0.0.1:9000 -to 127.0.0.1:80
package main

import (
	"flag"
	"log"
	"net/netip"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "accept on this address")
	to := flag.String("to", "127.0.0.1:80", "dial this address for every connection")
	flag.Parse()
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		log.Fatalf("-listen: %v", err)
	}
	ta, err := netip.ParseAddrPort(*to)
	if err != nil {
		log.Fatalf("-to: %v", err)
	}
	n := runtime.GOMAXPROCS(0)
	errs := make(chan error, n)
	for range n {
		l, err := newLoop(la, ta)
		if err != nil {
			log.Fatal(err)
		}
		go func() { errs <- l.run() }()
	}
	log.Fatal(<-errs)
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func family(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// half is one socket of a relayed pair and the bytes waiting to be
// written to it.
type half struct {
	fd, gen    int32
	peer       *half
	pending    []byte // read from peer, not yet written here
	readable   bool   // edge seen and not yet read to a short read
	rdhup      bool   // the peer's FIN is queued
	eof        bool   // read 0: the FIN arrived
	connecting bool
	shutWr     bool
}

type loop struct {
	epfd, lfd int
	to        unix.Sockaddr
	toFamily  int
	gen       int32
	halves    map[int32]*half
	buf       []byte
}

const lt = ^int32(0) // the listener's generation

func newLoop(la, ta netip.AddrPort) (*loop, error) {
	lfd, err := unix.Socket(family(la), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(lfd, sockaddr(la)); err != nil {
		return nil, err
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &loop{epfd: epfd, lfd: lfd, to: sockaddr(ta), toFamily: family(ta), halves: map[int32]*half{}, buf: make([]byte, 64<<10)}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd), Pad: lt}
	return l, unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &ev)
}

func (l *loop) run() error {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	wait := 0 // ms: busy, poll without blocking; after a dry poll, block
	for {
		var n int
		var err error
		if wait == 0 {
			n, err = pollNow(l.epfd, events)
		} else {
			n, err = unix.EpollWait(l.epfd, events, wait)
		}
		if err == unix.EINTR || n == 0 {
			wait = -1
			continue
		}
		if err != nil {
			return err
		}
		wait = 0
		for _, ev := range events[:n] {
			if ev.Pad == lt {
				l.accept()
				continue
			}
			h := l.halves[ev.Fd]
			if h == nil || h.gen != ev.Pad {
				continue // closed earlier in this batch
			}
			l.handle(h, ev.Events)
		}
	}
}

func (l *loop) accept() {
	for range 64 {
		cfd, _, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		sfd, err := unix.Socket(l.toFamily, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		unix.SetsockoptInt(sfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		err = unix.Connect(sfd, l.to)
		if err != nil && err != unix.EINPROGRESS {
			reset(cfd)
			unix.Close(sfd)
			continue
		}
		l.gen++
		c := &half{fd: int32(cfd), gen: l.gen}
		s := &half{fd: int32(sfd), gen: l.gen, peer: c, connecting: true}
		c.peer = s
		l.halves[c.fd], l.halves[s.fd] = c, s
		for _, h := range []*half{c, s} {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: h.fd, Pad: h.gen}
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(h.fd), &ev)
		}
	}
}

func (l *loop) handle(h *half, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		h.readable = true
		if events&unix.EPOLLRDHUP != 0 {
			h.rdhup = true
		}
	}
	if events&unix.EPOLLOUT != 0 {
		if h.connecting {
			if e, _ := unix.GetsockoptInt(int(h.fd), unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
				l.abort(h)
				return
			}
			h.connecting = false
		}
		if !l.flush(h) {
			return
		}
		l.relay(h.peer) // it may have stopped for h's pending bytes
	}
	if l.halves[h.fd] == h {
		l.relay(h)
	}
}

// flush writes h's pending bytes; it reports false if the pair is gone.
func (l *loop) flush(h *half) bool {
	for len(h.pending) > 0 {
		n, err := rawWrite(int(h.fd), h.pending)
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			l.abort(h)
			return false
		}
		h.pending = h.pending[n:]
	}
	h.pending = nil
	if h.peer.eof && !h.shutWr {
		h.shutWr = true
		unix.Shutdown(int(h.fd), unix.SHUT_WR)
		if h.peer.shutWr { // both FINs passed on
			l.closePair(h)
			return false
		}
	}
	return true
}

// relay moves bytes from src to its peer until src has none or the peer
// cannot take more.
func (l *loop) relay(src *half) {
	dst := src.peer
	for src.readable && !src.eof && len(dst.pending) == 0 && !dst.connecting && !src.connecting {
		n, err := rawRead(int(src.fd), l.buf)
		switch {
		case err == unix.EAGAIN:
			src.readable = false
			return
		case err != nil:
			l.abort(src)
			return
		case n == 0:
			src.eof = true
			l.flush(dst) // shuts dst's sending side, or closes the pair
			return
		}
		p := l.buf[:n]
		for len(p) > 0 {
			w, err := rawWrite(int(dst.fd), p)
			if err == unix.EAGAIN {
				dst.pending = append([]byte(nil), p...)
				break
			}
			if err != nil {
				l.abort(dst)
				return
			}
			p = p[w:]
		}
		if n < len(l.buf) && !src.rdhup {
			src.readable = false // drained; the next arrival is a new edge
		}
	}
}

func (l *loop) closePair(h *half) {
	for _, x := range []*half{h, h.peer} {
		delete(l.halves, x.fd)
		unix.Close(int(x.fd))
	}
}

// abort ends a pair with a reset on both sides.
func (l *loop) abort(h *half) {
	for _, x := range []*half{h, h.peer} {
		delete(l.halves, x.fd)
		reset(int(x.fd))
	}
}

func reset(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// The calls below cannot block: RawSyscall skips the runtime's syscall
// bookkeeping, which otherwise keeps sysmon waking every 20 µs to take
// the P of a thread it believes blocked.

func pollNow(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return result(n, e)
}

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return result(n, e)
}

func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return result(n, e)
}

func result(n uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
