package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/ipprot/ipprot/proxy"
)

// listenFD is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFD = 3

// listen returns the proxy's listening socket: the one systemd's socket
// activation passed (LISTEN_FDS), or else a new one on -p's address,
// with SO_REUSEPORT for --reuse-port. Its errors name the option at
// fault and exit 1.
func listen(cfg *config) (net.Listener, error) {
	ln, activated, err := activatedListener()
	if err != nil {
		return nil, fmt.Errorf("socket activation (LISTEN_FDS): %w", err)
	}
	if activated {
		return ln, nil
	}
	ln, err = proxy.ListenConfig{ReusePort: cfg.reusePort}.Listen(context.Background(), cfg.listenAddr)
	if err != nil {
		return nil, fmt.Errorf("-p/--listen: %w", err)
	}
	return ln, nil
}

// activatedListener returns the socket systemd passed this process, if
// LISTEN_PID names it and LISTEN_FDS is set (sd_listen_fds(3)). It must be
// one listening TCP socket. The variables are removed, so that hooks do
// not take the socket for theirs.
func activatedListener() (net.Listener, bool, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, false, nil
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	n, err := strconv.Atoi(fds)
	switch {
	case err != nil || n < 1:
		return nil, false, fmt.Errorf("LISTEN_FDS=%q is not a number of sockets", fds)
	case n > 1:
		return nil, false, fmt.Errorf("%d sockets were passed; ipprotd serves one (one ListenStream= in the .socket unit)", n)
	}
	f := os.NewFile(listenFD, "LISTEN_FDS socket")
	defer f.Close() // FileListener made a descriptor of its own
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, false, fmt.Errorf("descriptor %d: %w", listenFD, err)
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		ln.Close()
		return nil, false, fmt.Errorf("descriptor %d is a %s socket, not TCP (ListenStream= needs an address and port)", listenFD, ln.Addr().Network())
	}
	return ln, true, nil
}

// parseHostPort reads --metrics-listen's HOST:PORT: the host may be empty
// (every address), a name or an address, IPv6 in brackets; the port
// 1-65535.
func parseHostPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not HOST:PORT (such as :9100, 127.0.0.1:9100 or [::1]:9100)", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || strings.HasPrefix(port, "+") {
		return "", fmt.Errorf("port %q is not a number", port)
	}
	if p < 1 || p > 65535 {
		return "", fmt.Errorf("port %d is outside 1-65535", p)
	}
	if host != "" {
		if _, err := proxy.ParseHost(host); err != nil {
			return "", err
		}
	}
	return net.JoinHostPort(host, port), nil
}
