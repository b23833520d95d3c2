package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// PortAt is a port with an optional host, the original daemon's
// PORT[@HOST] notation of -p and -P. Host is "" where none was given.
type PortAt struct {
	Port uint16
	Host string
}

// ParsePortAt reads PORT[@HOST]. The port is 1-65535; the host is a name,
// an IPv4 address or an IPv6 address, with or without brackets
// ("5432@::1", "5432@[::1]").
func ParsePortAt(s string) (PortAt, error) {
	portText, host, hasHost := strings.Cut(s, "@")
	port, err := ParsePort(portText)
	if err != nil {
		return PortAt{}, err
	}
	if !hasHost {
		return PortAt{Port: port}, nil
	}
	host, err = ParseHost(host)
	if err != nil {
		return PortAt{}, err
	}
	return PortAt{Port: port, Host: host}, nil
}

// ParsePort reads a TCP port number, 1-65535.
func ParsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("missing port number")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is outside 1-65535", n)
	}
	return uint16(n), nil
}

// ParseHost checks a host: an IP address (IPv6 possibly in brackets, with a
// zone for link-local addresses) or a DNS name. It returns the host without
// brackets.
func ParseHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("missing host after @")
	}
	if strings.HasPrefix(s, "[") {
		if !strings.HasSuffix(s, "]") {
			return "", fmt.Errorf("host %q lacks its closing bracket", s)
		}
		inner := s[1 : len(s)-1]
		if a, err := netip.ParseAddr(inner); err != nil || !a.Is6() {
			return "", fmt.Errorf("host %q is not an IPv6 address", s)
		}
		return inner, nil
	}
	if strings.Contains(s, ":") {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", fmt.Errorf("host %q is not an IPv6 address (a port goes before the @)", s)
		}
		return s, nil
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return s, nil
	}
	if !isDNSName(s) {
		return "", fmt.Errorf("host %q is neither an IP address nor a host name", s)
	}
	return s, nil
}

// isDNSName reports whether s is a syntactically valid host name: labels of
// letters, digits, '-' and '_' (seen in practice), at most 63 bytes each,
// 253 in all, an optional final dot.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// JoinHostPort returns host and port as a dial or listen address.
func JoinHostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
