package proxy

import (
	"net/netip"
	"syscall"
	"testing"
)

// TestConnectFailed: a refused dial ends the connection as connect-failed,
// naming the address it tried; a name that does not resolve leaves the
// destination zero.
func TestConnectFailed(t *testing.T) {
	port := refusedPort(t)
	h := newHarness(t, "tcp4", Config{OutHost: "127.0.0.1", OutPort: port})
	h.expectReset()
	f := h.wait()
	if want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port); f.Outcome != ConnectFailed || f.Err == nil || f.Dest != want {
		t.Errorf("outcome %v (%v), dest %v; want connect-failed with a reason, dest %v", f.Outcome, f.Err, f.Dest, want)
	}

	h = newHarness(t, "tcp4", Config{OutHost: "no-such-host.invalid", OutPort: port})
	h.expectReset()
	if f := h.wait(); f.Outcome != ConnectFailed || f.Dest.IsValid() || f.OutHost != "no-such-host.invalid" {
		t.Errorf("outcome %v, dest %v, host %q; want connect-failed, no address, the host", f.Outcome, f.Dest, f.OutHost)
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
