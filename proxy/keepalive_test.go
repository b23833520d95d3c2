package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestKeepAlive: both sockets of a session have TCP keep-alive on, with
// the kernel's timers, which an operator tunes with sysctl, not Go's 15 s.
func TestKeepAlive(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_time")
	if err != nil {
		t.Skip(err)
	}
	var wantIdle int
	if _, err := fmt.Sscan(string(b), &wantIdle); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err := New(Config{}).dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	for name, c := range map[string]net.Conn{"accepted": accepted, "dialed": dialed} {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var on, idle int
		var onErr, idleErr error
		rc.Control(func(fd uintptr) {
			on, onErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, idleErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		})
		if err := errors.Join(onErr, idleErr); err != nil {
			t.Fatal(err)
		}
		if on != 1 || idle != wantIdle {
			t.Errorf("%s socket: SO_KEEPALIVE %d, TCP_KEEPIDLE %d; want 1, %d (the kernel's)", name, on, idle, wantIdle)
		}
	}
}
