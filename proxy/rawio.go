package proxy

import (
	"syscall"
	"unsafe"
)

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
