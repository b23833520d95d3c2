package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// AllowList is the set of clients allowed to connect (-r). The zero value
// and an empty list allow every client. It is read-only after it is built
// and safe for concurrent use.
//
// Addresses compare in their canonical form: an IPv4-mapped IPv6 address
// (a v4 client on a dual-stack listener, or an entry written as
// ::ffff:a.b.c.d) is an IPv4 address, and an IPv6 zone is ignored, so no
// spelling of a client's address can avoid an entry or match one it should
// not.
type AllowList struct {
	prefixes []netip.Prefix
}

// NewAllowList returns the list of prefixes. Entries must come from
// ParseAllow.
func NewAllowList(prefixes ...netip.Prefix) *AllowList {
	return &AllowList{prefixes: prefixes}
}

// Len returns the number of entries.
func (l *AllowList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.prefixes)
}

// Allows reports whether a client at addr may connect.
func (l *AllowList) Allows(addr netip.Addr) bool {
	if l.Len() == 0 {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseAllow reads one -r value: an IPv4 or IPv6 address, or a CIDR prefix
// with no bits set beyond its length. An IPv4-mapped entry becomes the IPv4
// address or prefix it maps. Zones are refused: the list names hosts, not
// interfaces.
func ParseAllow(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty address")
	}
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed (give the address alone)", s)
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set beyond /%d (did you mean %s?)", s, p.Bits(), p.Masked())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least /96", s)
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}
