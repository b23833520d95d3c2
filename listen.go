package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/ipprot/ipprot/proxy"
)

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
