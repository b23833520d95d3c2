package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt) lets a load balancer
// in front of ipprotd tell it whom it accepted: a header before the
// client's first byte. Version 1 is a line of text, version 2 binary.
// Config.ProxyFrom names the peers whose connections must begin with
// one; Config.SendProxy sends one to the destination.

// ProxyHeader is what a PROXY protocol header says.
type ProxyHeader struct {
	Version int // 1 or 2
	// Local is set where the header carries no address to use: a v2
	// LOCAL command (the balancer's own health check), a v1 UNKNOWN, or
	// a family other than TCP over IPv4 or IPv6. The connection's own
	// peer is the client then.
	Local bool
	// Src is the client's address and port, Dst the address and port it
	// connected to; both zero where Local. IPv4-mapped addresses are
	// unmapped.
	Src, Dst netip.AddrPort
}

// The limits and magic of both versions.
const (
	proxyV1Max = 107 // the longest v1 line, CRLF included
	proxyV2Fix = 16  // v2's fixed part: signature, version and command, family, length
)

var (
	proxyV1Prefix = []byte("PROXY ")
	proxyV2Sig    = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// errIncomplete says that more bytes are needed to read a header.
var errIncomplete = errors.New("incomplete PROXY protocol header")

// proxyHeaderLen returns the length of the header b begins with, once b
// holds enough of it to tell (v1: its CRLF; v2: its fixed part), or
// errIncomplete. It fails as soon as b cannot begin a header.
func proxyHeaderLen(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, errIncomplete
	case b[0] == proxyV2Sig[0]:
		if n := min(len(b), len(proxyV2Sig)); !bytes.Equal(b[:n], proxyV2Sig[:n]) {
			return 0, errors.New("not a PROXY protocol header")
		}
		if len(b) < proxyV2Fix {
			return 0, errIncomplete
		}
		return proxyV2Fix + int(binary.BigEndian.Uint16(b[14:16])), nil
	default:
		if n := min(len(b), len(proxyV1Prefix)); !bytes.Equal(b[:n], proxyV1Prefix[:n]) {
			return 0, errors.New("not a PROXY protocol header")
		}
		line := b[:min(len(b), proxyV1Max)]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			if i == 0 || line[i-1] != '\r' {
				return 0, errors.New("PROXY v1 header: a line feed without a carriage return")
			}
			return i + 1, nil
		}
		if len(b) >= proxyV1Max {
			return 0, fmt.Errorf("PROXY v1 header: no CRLF within %d bytes", proxyV1Max)
		}
		return 0, errIncomplete
	}
}

// ParseProxyHeader reads the PROXY protocol header (v1 or v2) that b
// begins with and returns it with its length; the bytes after it are the
// client's. It returns an error if b does not begin with a whole, valid
// header.
func ParseProxyHeader(b []byte) (ProxyHeader, int, error) {
	n, err := proxyHeaderLen(b)
	if err != nil {
		return ProxyHeader{}, 0, err
	}
	if len(b) < n {
		return ProxyHeader{}, 0, errIncomplete
	}
	var h ProxyHeader
	if b[0] == proxyV2Sig[0] {
		h, err = parseProxyV2(b[:n])
	} else {
		h, err = parseProxyV1(b[:n])
	}
	if err != nil {
		return ProxyHeader{}, 0, err
	}
	return h, n, nil
}

// parseProxyV1 reads a whole v1 line, "PROXY TCP4 src dst sport dport\r\n".
func parseProxyV1(line []byte) (ProxyHeader, error) {
	h := ProxyHeader{Version: 1}
	body := string(line[len(proxyV1Prefix) : len(line)-2])
	for i := 0; i < len(body); i++ {
		if c := body[i]; c < 0x20 || c > 0x7e {
			return h, fmt.Errorf("PROXY v1 header: byte %#02x is not printable", c)
		}
	}
	fields := bytes.Split([]byte(body), []byte{' '})
	switch string(fields[0]) {
	case "UNKNOWN":
		// What follows is to be ignored (proxy-protocol.txt, 2.1).
		h.Local = true
		return h, nil
	case "TCP4", "TCP6":
	default:
		return h, fmt.Errorf("PROXY v1 header: protocol %q is not TCP4, TCP6 or UNKNOWN", fields[0])
	}
	if len(fields) != 5 {
		return h, fmt.Errorf("PROXY v1 header: %d fields after PROXY; want 5, single spaces between", len(fields))
	}
	v4 := string(fields[0]) == "TCP4"
	var addrs [2]netip.Addr
	for i, f := range fields[1:3] {
		a, err := netip.ParseAddr(string(f))
		if err != nil || a.Zone() != "" || a.Is4() != v4 {
			return h, fmt.Errorf("PROXY v1 header: %q is not an %s address", f, map[bool]string{true: "IPv4", false: "IPv6"}[v4])
		}
		addrs[i] = a.Unmap()
	}
	var ports [2]uint16
	for i, f := range fields[3:5] {
		p, err := parseProxyPort(f)
		if err != nil {
			return h, err
		}
		ports[i] = p
	}
	h.Src = netip.AddrPortFrom(addrs[0], ports[0])
	h.Dst = netip.AddrPortFrom(addrs[1], ports[1])
	return h, nil
}

// parseProxyPort reads a v1 port: 1 to 5 decimal digits, at most 65535.
func parseProxyPort(f []byte) (uint16, error) {
	if len(f) == 0 || len(f) > 5 {
		return 0, fmt.Errorf("PROXY v1 header: port %q is not 0-65535", f)
	}
	for _, c := range f {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("PROXY v1 header: port %q is not 0-65535", f)
		}
	}
	p, err := strconv.ParseUint(string(f), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("PROXY v1 header: port %q is not 0-65535", f)
	}
	return uint16(p), nil
}

// parseProxyV2 reads a whole v2 header.
func parseProxyV2(b []byte) (ProxyHeader, error) {
	h := ProxyHeader{Version: 2}
	if v := b[12] >> 4; v != 2 {
		return h, fmt.Errorf("PROXY v2 header: version %d; want 2", v)
	}
	addr := b[proxyV2Fix:]
	switch b[12] & 0x0f {
	case 0x0: // LOCAL: the balancer's own connection; the rest is skipped
		h.Local = true
		return h, nil
	case 0x1: // PROXY
	default:
		return h, fmt.Errorf("PROXY v2 header: command %#x is not LOCAL or PROXY", b[12]&0x0f)
	}
	var size int
	switch b[13] {
	case 0x11: // TCP over IPv4
		size = 12
	case 0x21: // TCP over IPv6
		size = 36
	default:
		// UNSPEC, UDP, UNIX sockets: nothing ipprotd can use as a
		// client's address; as HAProxy does, the peer's address stays.
		h.Local = true
		return h, nil
	}
	if len(addr) < size {
		return h, fmt.Errorf("PROXY v2 header: %d bytes of addresses for family %#02x; want %d", len(addr), b[13], size)
	}
	alen := (size - 4) / 2
	src, _ := netip.AddrFromSlice(addr[:alen])
	dst, _ := netip.AddrFromSlice(addr[alen : 2*alen])
	h.Src = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(addr[2*alen:]))
	h.Dst = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(addr[2*alen+2:]))
	// What follows the addresses are TLVs (ALPN, TLS, a unique ID):
	// ipprotd uses none of them.
	return h, nil
}

// AppendProxyHeader appends to b a PROXY protocol header of version 1 or
// 2 carrying src, the client, and dst, the address it connected to. Where
// one is IPv4 and the other IPv6, the IPv4 one is sent IPv4-mapped, as
// HAProxy does.
func AppendProxyHeader(b []byte, version int, src, dst netip.AddrPort) []byte {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	v4 := sa.Is4() && da.Is4()
	if !v4 {
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	}
	if version == 1 {
		proto := "TCP6"
		if v4 {
			proto = "TCP4"
		}
		b = append(b, proxyV1Prefix...)
		b = append(b, proto...)
		b = append(b, ' ')
		b = sa.AppendTo(b)
		b = append(b, ' ')
		b = da.AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, '\r', '\n')
	}
	b = append(b, proxyV2Sig...)
	b = append(b, 0x21) // version 2, PROXY
	if v4 {
		b = append(b, 0x11, 0, 12)
		s, d := sa.As4(), da.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		b = append(b, 0x21, 0, 36)
		s, d := sa.As16(), da.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// readProxyHeader reads the PROXY protocol header c must begin with, and
// not one byte more: what follows is the client's stream, which the
// session reads from the socket itself, so nothing may stay behind in a
// buffer. It peeks (MSG_PEEK) until the header's length is known, then
// reads exactly that many bytes. It waits until c's read deadline at most.
func readProxyHeader(c *net.TCPConn) (ProxyHeader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return ProxyHeader{}, err
	}
	var peek [proxyV1Max]byte
	var n, got int
	var perr error // the header's fault, or the peer's end
	var serr error // recvfrom's
	peekFn := func(fd uintptr) bool {
		for {
			m, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			case nil:
			default:
				serr = os.NewSyscallError("recvfrom", err)
				return true
			}
			got = m
			if m == 0 {
				perr = io.ErrUnexpectedEOF
				return true
			}
			n, perr = proxyHeaderLen(peek[:m])
			if perr == errIncomplete && peerClosed(fd) {
				// A peek never shows the FIN behind the data.
				perr = io.ErrUnexpectedEOF
			}
			// Until the length is known, wait for more bytes: the
			// poller calls again when they come (or the FIN).
			return perr != errIncomplete
		}
	}
	if err := rc.Read(peekFn); err != nil {
		return ProxyHeader{}, proxyReadError(err, got)
	}
	if err := errors.Join(serr, perr); err != nil {
		return ProxyHeader{}, proxyReadError(err, got)
	}
	hdr := make([]byte, n)
	if m, err := io.ReadFull(c, hdr); err != nil {
		return ProxyHeader{}, proxyReadError(err, m)
	}
	h, _, err := ParseProxyHeader(hdr)
	return h, err
}

// peerClosed reports whether the peer of the socket fd has ended its
// sending (a FIN), with or without bytes still unread before it.
func peerClosed(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// proxyReadError says why no header could be read after got bytes came.
func proxyReadError(err error, got int) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no whole PROXY protocol header within --connect-timeout (%d bytes came)", got)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("the peer closed before a whole PROXY protocol header (%d bytes came)", got)
	}
	return err
}
