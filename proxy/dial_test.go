package proxy

import (
	"syscall"
	"testing"
)

func TestConnectFailed(t *testing.T) {
	h := newHarness(t, "tcp4", Config{OutHost: "127.0.0.1", OutPort: refusedPort(t)})
	h.expectReset()
	f := h.wait()
	if f.Outcome != ConnectFailed || f.Err == nil || f.Dest.IsValid() {
		t.Errorf("outcome %v (%v), dest %v; want connect-failed with a reason and no destination", f.Outcome, f.Err, f.Dest)
	}
}

// refusedPort returns a loopback port that refuses connections for the
// rest of the test: a socket bound to it that does not listen. A port
// taken and closed again could be handed to the next listener on port 0,
// the test's own upstream among them, and the dial would then succeed.
func refusedPort(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(sa.(*syscall.SockaddrInet4).Port)
}
