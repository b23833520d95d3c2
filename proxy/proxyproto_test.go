package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// v2Header builds a v2 header by hand: command, family and the bytes after
// the fixed part as given, the length taken from them.
func v2Header(verCmd, family byte, body []byte) []byte {
	b := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), verCmd, family)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestParseProxyHeader(t *testing.T) {
	v4body := []byte{192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x15, 0x38} // 192.0.2.1:12345 → 198.51.100.7:5432
	v6body := append(append(netip.MustParseAddr("2001:db8::1").AsSlice(), netip.MustParseAddr("2001:db8::2").AsSlice()...), 0, 80, 1, 187)
	tlv := []byte{0x01, 0, 2, 'h', '2'} // an ALPN TLV
	tests := []struct {
		name string
		in   []byte
		want ProxyHeader
		n    int
		err  string
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.7 12345 5432\r\nGET /"),
			ProxyHeader{Version: 1, Src: ap("192.0.2.1:12345"), Dst: ap("198.51.100.7:5432")}, 46, ""},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 80 443\r\n"),
			ProxyHeader{Version: 1, Src: ap("[2001:db8::1]:80"), Dst: ap("[2001:db8::2]:443")}, 43, ""},
		{"v1 TCP6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"),
			ProxyHeader{Version: 1, Src: ap("192.0.2.1:1"), Dst: ap("[::1]:2")}, 37, ""},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			ProxyHeader{Version: 1, Src: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Dst: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}, 104, ""},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\nx"), ProxyHeader{Version: 1, Local: true}, 15, ""},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), ProxyHeader{Version: 1, Local: true}, 35, ""},
		{"v2 TCP4", v2Header(0x21, 0x11, v4body), ProxyHeader{Version: 2, Src: ap("192.0.2.1:12345"), Dst: ap("198.51.100.7:5432")}, 28, ""},
		{"v2 TCP6", v2Header(0x21, 0x21, v6body), ProxyHeader{Version: 2, Src: ap("[2001:db8::1]:80"), Dst: ap("[2001:db8::2]:443")}, 52, ""},
		{"v2 TCP4 with a TLV", v2Header(0x21, 0x11, append(bytes.Clone(v4body), tlv...)), ProxyHeader{Version: 2, Src: ap("192.0.2.1:12345"), Dst: ap("198.51.100.7:5432")}, 33, ""},
		{"v2 LOCAL", v2Header(0x20, 0x00, nil), ProxyHeader{Version: 2, Local: true}, 16, ""},
		{"v2 LOCAL with addresses", v2Header(0x20, 0x11, v4body), ProxyHeader{Version: 2, Local: true}, 28, ""},
		{"v2 UNSPEC", v2Header(0x21, 0x00, nil), ProxyHeader{Version: 2, Local: true}, 16, ""},
		{"v2 UDP4", v2Header(0x21, 0x12, v4body), ProxyHeader{Version: 2, Local: true}, 28, ""},
		{"v2 UNIX", v2Header(0x21, 0x31, make([]byte, 216)), ProxyHeader{Version: 2, Local: true}, 232, ""},

		{"empty", nil, ProxyHeader{}, 0, "incomplete"},
		{"v1 partial", []byte("PROXY TCP4 192.0.2.1"), ProxyHeader{}, 0, "incomplete"},
		{"v1 prefix only", []byte("PROX"), ProxyHeader{}, 0, "incomplete"},
		{"v2 partial signature", []byte("\r\n\r\n\x00"), ProxyHeader{}, 0, "incomplete"},
		{"v2 partial addresses", v2Header(0x21, 0x11, v4body)[:20], ProxyHeader{}, 0, "incomplete"},
		{"not a header", []byte("GET / HTTP/1.1\r\n"), ProxyHeader{}, 0, "not a PROXY protocol header"},
		{"lower case", []byte("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), ProxyHeader{}, 0, "not a PROXY protocol header"},
		{"v2 bad signature", []byte("\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c"), ProxyHeader{}, 0, "not a PROXY protocol header"},
		{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("a", 100)), ProxyHeader{}, 0, "no CRLF within 107 bytes"},
		{"v1 CRLF too late", []byte("PROXY UNKNOWN " + strings.Repeat("a", 93) + "\r\n"), ProxyHeader{}, 0, "no CRLF within 107 bytes"},
		{"v1 LF alone", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"), ProxyHeader{}, 0, "line feed without a carriage return"},
		{"v1 CR inside", []byte("PROXY TCP4 1.2.3.4\r1.2.3.4 1 2\r\n"), ProxyHeader{}, 0, "not printable"},
		{"v1 no protocol", []byte("PROXY \r\n"), ProxyHeader{}, 0, `protocol "" is not`},
		{"v1 UDP4", []byte("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n"), ProxyHeader{}, 0, `protocol "UDP4"`},
		{"v1 four fields", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n"), ProxyHeader{}, 0, "4 fields"},
		{"v1 double space", []byte("PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n"), ProxyHeader{}, 0, "6 fields"},
		{"v1 TCP4 with IPv6", []byte("PROXY TCP4 ::1 ::1 1 2\r\n"), ProxyHeader{}, 0, `"::1" is not an IPv4 address`},
		{"v1 TCP6 with IPv4", []byte("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), ProxyHeader{}, 0, `"1.2.3.4" is not an IPv6 address`},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ProxyHeader{}, 0, "not an IPv6 address"},
		{"v1 bad address", []byte("PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n"), ProxyHeader{}, 0, `"1.2.3.400" is not an IPv4 address`},
		{"v1 port too big", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n"), ProxyHeader{}, 0, `port "65536" is not 0-65535`},
		{"v1 port sign", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n"), ProxyHeader{}, 0, `port "+1" is not 0-65535`},
		{"v1 port empty", []byte("PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n"), ProxyHeader{}, 0, `port "" is not 0-65535`},
		{"v2 version 1", v2Header(0x11, 0x11, v4body), ProxyHeader{}, 0, "version 1; want 2"},
		{"v2 command 2", v2Header(0x22, 0x11, v4body), ProxyHeader{}, 0, "command 0x2 is not LOCAL or PROXY"},
		{"v2 short TCP4", v2Header(0x21, 0x11, v4body[:11]), ProxyHeader{}, 0, "11 bytes of addresses for family 0x11; want 12"},
		{"v2 short TCP6", v2Header(0x21, 0x21, v6body[:12]), ProxyHeader{}, 0, "12 bytes of addresses for family 0x21; want 36"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := ParseProxyHeader(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v; want one with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want || n != tt.n {
				t.Errorf("got %+v, %d; want %+v, %d", h, n, tt.want, tt.n)
			}
		})
	}
}

func TestAppendProxyHeader(t *testing.T) {
	tests := []struct {
		version  int
		src, dst netip.AddrPort
		want     string
		back     ProxyHeader // what parsing it gives
	}{
		{1, ap("192.0.2.1:12345"), ap("127.0.0.1:5432"), "PROXY TCP4 192.0.2.1 127.0.0.1 12345 5432\r\n",
			ProxyHeader{Version: 1, Src: ap("192.0.2.1:12345"), Dst: ap("127.0.0.1:5432")}},
		{1, ap("[2001:db8::1]:1"), ap("[::1]:2"), "PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
			ProxyHeader{Version: 1, Src: ap("[2001:db8::1]:1"), Dst: ap("[::1]:2")}},
		{1, ap("192.0.2.1:1"), ap("[::1]:2"), "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
			ProxyHeader{Version: 1, Src: ap("192.0.2.1:1"), Dst: ap("[::1]:2")}},
		{2, ap("192.0.2.1:12345"), ap("127.0.0.1:5432"), string(v2Header(0x21, 0x11, []byte{192, 0, 2, 1, 127, 0, 0, 1, 0x30, 0x39, 0x15, 0x38})),
			ProxyHeader{Version: 2, Src: ap("192.0.2.1:12345"), Dst: ap("127.0.0.1:5432")}},
		{2, ap("[::1]:1"), ap("[::1]:2"), string(v2Header(0x21, 0x21, append(append(netip.IPv6Loopback().AsSlice(), netip.IPv6Loopback().AsSlice()...), 0, 1, 0, 2))),
			ProxyHeader{Version: 2, Src: ap("[::1]:1"), Dst: ap("[::1]:2")}},
	}
	for _, tt := range tests {
		got := AppendProxyHeader(nil, tt.version, tt.src, tt.dst)
		if string(got) != tt.want {
			t.Errorf("v%d %v %v: got %q; want %q", tt.version, tt.src, tt.dst, got, tt.want)
		}
		h, n, err := ParseProxyHeader(got)
		if err != nil || n != len(got) || h != tt.back {
			t.Errorf("parsed back: %+v, %d, %v; want %+v, %d", h, n, err, tt.back, len(got))
		}
	}
}

// FuzzParseProxyHeader: no input makes the parser panic or read beyond
// the header it reports; a header it accepts parses the same alone, and
// the addresses it carries survive a round trip through AppendProxyHeader.
func FuzzParseProxyHeader(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 198.51.100.7 12345 5432\r\nGET /",
		"PROXY TCP6 2001:db8::1 2001:db8::2 80 443\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
		"GET / HTTP/1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Add(v2Header(0x21, 0x11, []byte{192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x15, 0x38, 1, 0, 1, 'x'}))
	f.Add(v2Header(0x21, 0x21, make([]byte, 36)))
	f.Add(v2Header(0x20, 0x00, nil))
	f.Add(v2Header(0x21, 0x11, make([]byte, 3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, lerr := proxyHeaderLen(b)
		h, hn, err := ParseProxyHeader(b)
		if err != nil {
			return
		}
		if lerr != nil || hn != n || hn > len(b) || hn == 0 {
			t.Fatalf("header of %d bytes, length %d (%v), input %d bytes", hn, n, lerr, len(b))
		}
		if h.Version == 1 && (hn > proxyV1Max || !bytes.HasSuffix(b[:hn], []byte("\r\n"))) {
			t.Fatalf("v1 header %q", b[:hn])
		}
		h2, hn2, err := ParseProxyHeader(b[:hn])
		if err != nil || h2 != h || hn2 != hn {
			t.Fatalf("alone: %+v, %d, %v; want %+v, %d", h2, hn2, err, h, hn)
		}
		if h.Local {
			return
		}
		for _, v := range []int{1, 2} {
			out := AppendProxyHeader(nil, v, h.Src, h.Dst)
			back, bn, err := ParseProxyHeader(out)
			if err != nil || bn != len(out) || back.Src != h.Src || back.Dst != h.Dst {
				t.Fatalf("v%d round trip of %+v: %q gave %+v, %v", v, h, out, back, err)
			}
		}
	})
}

// TestProxyProtocolIn: a trusted peer's header names the client, for the
// allow-list and the facts, and the destination gets exactly the bytes
// after it, however the header and the data were split into segments.
func TestProxyProtocolIn(t *testing.T) {
	loopback := NewAllowList(netip.MustParsePrefix("127.0.0.0/8"))
	v1 := "PROXY TCP4 192.0.2.1 198.51.100.7 12345 5432\r\n"
	v2 := string(v2Header(0x21, 0x11, []byte{192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x15, 0x38, 0x01, 0, 2, 'h', '2'}))
	tests := []struct {
		name   string
		chunks []string // written with pauses between them
	}{
		{"v1 and data in one segment", []string{v1 + "hello"}},
		{"v1 byte by byte", append(strings.Split(v1, ""), "hello")},
		{"v1 then data", []string{v1, "hello"}},
		{"v2 and data in one segment", []string{v2 + "hello"}},
		{"v2 in three pieces", []string{v2[:10], v2[10:20], v2[20:] + "hel", "lo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &blockLog{}
			h := newHarness(t, "tcp4", Config{
				ProxyFrom:    loopback,
				Allow:        NewAllowList(netip.MustParsePrefix("192.0.2.0/24")),
				OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
			})
			c := h.dial()
			errc := make(chan error, 1)
			go writeChunks(c, tt.chunks, errc)
			up := h.accept()
			got, err := io.ReadAll(up)
			if err != nil || string(got) != "hello" {
				t.Fatalf("destination got %q, %v; want %q", got, err, "hello")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			up.CloseWrite()
			io.ReadAll(c)
			f := h.wait()
			if f.Outcome != OK || f.Client != ap("192.0.2.1:12345") || f.Via.Addr() != netip.MustParseAddr("127.0.0.1") || f.BytesIn != 5 {
				t.Errorf("facts: %v client %v via %v, %d bytes in; want ok client 192.0.2.1:12345 via 127.0.0.1, 5 bytes", f.Outcome, f.Client, f.Via, f.BytesIn)
			}
			if string(rec.blocks[datafile.In]) != "hello" {
				t.Errorf("recorded %q; want %q", rec.blocks[datafile.In], "hello")
			}
		})
	}
}

func writeChunks(c *net.TCPConn, chunks []string, errc chan<- error) {
	for i, s := range chunks {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := c.Write([]byte(s)); err != nil {
			errc <- err
			return
		}
	}
	errc <- c.CloseWrite()
}

// TestProxyProtocolInRefused: a trusted peer without a valid header is
// rejected with a reset, before any dial; the client a valid header
// carries is checked against the allow-list; a LOCAL or UNKNOWN header
// leaves the peer as the client.
func TestProxyProtocolInRefused(t *testing.T) {
	loopback := NewAllowList(netip.MustParsePrefix("127.0.0.0/8"))
	tests := []struct {
		name   string
		send   string
		close  bool // half-close after sending
		reason string
	}{
		{"no header", "GET / HTTP/1.1\r\n\r\n", false, "not a PROXY protocol header"},
		{"truncated", "PROXY TCP4 192.0.2.1 198.", true, "the peer closed before a whole PROXY protocol header (25 bytes came)"},
		{"truncated v2", string(v2Header(0x21, 0x11, make([]byte, 12))[:20]), true, "the peer closed before a whole PROXY protocol header"},
		{"stalled", "PROXY TCP4 192.0.2.1 198.", false, "no whole PROXY protocol header within --connect-timeout (25 bytes came)"},
		{"stalled v2 body", string(v2Header(0x21, 0x11, make([]byte, 200))[:120]), false, "no whole PROXY protocol header within --connect-timeout"},
		{"oversized", "PROXY UNKNOWN " + strings.Repeat("x", 200) + "\r\n", false, "no CRLF within 107 bytes"},
		{"nothing", "", false, "no whole PROXY protocol header within --connect-timeout (0 bytes came)"},
		{"carried client not allowed", "PROXY TCP4 203.0.113.9 198.51.100.7 1 2\r\nhi", false, "client not on the allow-list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "tcp4", Config{
				ProxyFrom:      loopback,
				Allow:          NewAllowList(netip.MustParsePrefix("192.0.2.0/24")),
				ConnectTimeout: 300 * time.Millisecond,
			})
			c := h.dial()
			if tt.send != "" {
				if _, err := c.Write([]byte(tt.send)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.close {
				c.CloseWrite()
			}
			f := h.wait()
			if f.Outcome != Rejected || f.Err == nil || !strings.Contains(f.Err.Error(), tt.reason) || f.Dest.IsValid() {
				t.Errorf("outcome %v (%v), dest %v; want rejected with %q and no dial", f.Outcome, f.Err, f.Dest, tt.reason)
			}
		})
	}
	for _, hdr := range []string{"PROXY UNKNOWN\r\n", string(v2Header(0x20, 0, nil))} {
		h := newHarness(t, "tcp4", Config{ProxyFrom: loopback})
		go echo(h.upstream)
		c := h.dial()
		c.Write([]byte(hdr))
		checkEcho(t, c, c, []byte("ping"))
		c.Close()
		f := h.wait()
		if f.Client.Addr() != netip.MustParseAddr("127.0.0.1") || f.Via.IsValid() || f.BytesIn != 4 {
			t.Errorf("%q: client %v via %v, %d bytes in; want the peer, no via, 4 bytes", hdr, f.Client, f.Via, f.BytesIn)
		}
	}
}

// TestProxyProtocolUntrusted: from a peer not on the list, a header is
// the client's data like any other.
func TestProxyProtocolUntrusted(t *testing.T) {
	h := newHarness(t, "tcp4", Config{ProxyFrom: NewAllowList(netip.MustParsePrefix("10.0.0.0/8"))})
	c := h.dial()
	msg := "PROXY TCP4 192.0.2.1 198.51.100.7 12345 5432\r\nhello"
	errc := make(chan error, 1)
	go writeChunks(c, []string{msg}, errc)
	up := h.accept()
	got, err := io.ReadAll(up)
	if err != nil || string(got) != msg {
		t.Fatalf("destination got %q, %v; want %q", got, err, msg)
	}
	<-errc
	up.CloseWrite()
	io.ReadAll(c)
	f := h.wait()
	if f.Client.Addr() != netip.MustParseAddr("127.0.0.1") || f.Via.IsValid() {
		t.Errorf("client %v via %v; want the peer itself", f.Client, f.Via)
	}
}

// TestSendProxy: the destination reads exactly one header, carrying the
// client and the address it connected to, then exactly the client's
// bytes; the recording and the counts have none of the header.
func TestSendProxy(t *testing.T) {
	for _, version := range []int{1, 2} {
		rec := &blockLog{}
		h := newHarness(t, "tcp4", Config{
			SendProxy:    version,
			OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
		})
		c := h.dial()
		errc := make(chan error, 1)
		go writeChunks(c, []string{"hello"}, errc)
		up := h.accept()
		got, err := io.ReadAll(up)
		if err != nil {
			t.Fatal(err)
		}
		<-errc
		up.CloseWrite()
		io.ReadAll(c)
		want := string(AppendProxyHeader(nil, version, ap(c.LocalAddr().String()), ap(h.addr))) + "hello"
		if string(got) != want {
			t.Errorf("v%d: destination got %q; want %q", version, got, want)
		}
		f := h.wait()
		if f.BytesIn != 5 || string(rec.blocks[datafile.In]) != "hello" {
			t.Errorf("v%d: %d bytes in, recorded %q; want 5, %q", version, f.BytesIn, rec.blocks[datafile.In], "hello")
		}
	}
}

// TestProxyProtocolChain: a header in carries on to the header out:
// client and the address it connected to, as the balancer saw them.
func TestProxyProtocolChain(t *testing.T) {
	h := newHarness(t, "tcp4", Config{ProxyFrom: NewAllowList(netip.MustParsePrefix("127.0.0.1/32")), SendProxy: 1})
	c := h.dial()
	errc := make(chan error, 1)
	go writeChunks(c, []string{string(v2Header(0x21, 0x21, append(append(netip.MustParseAddr("2001:db8::1").AsSlice(), netip.MustParseAddr("2001:db8::2").AsSlice()...), 0, 80, 1, 187))) + "x"}, errc)
	up := h.accept()
	got, _ := io.ReadAll(up)
	<-errc
	up.CloseWrite()
	io.ReadAll(c)
	h.wait()
	if want := "PROXY TCP6 2001:db8::1 2001:db8::2 80 443\r\nx"; string(got) != want {
		t.Errorf("destination got %q; want %q", got, want)
	}
}

// TestSendProxyBeforeTLS: the header is the first bytes on the
// destination's connection, in clear, before ipprotd's TLS handshake
// with it, as HAProxy sends it.
func TestSendProxyBeforeTLS(t *testing.T) {
	pki := newPKI(t)
	h := newHarness(t, "tcp4", Config{SendProxy: 2, TLS: &TLS{Upstream: &tls.Config{ServerName: "db.test", RootCAs: pki.pool}}})
	client := h.dial()
	up := h.accept()
	want := AppendProxyHeader(nil, 2, ap(client.LocalAddr().String()), ap(h.addr))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(up, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the destination's first bytes %q, %v; want the header %q", got, err, want)
	}
	server := tls.Server(up, &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "db.test")}})
	if err := server.Handshake(); err != nil {
		t.Fatalf("the handshake after the header: %v", err)
	}
	client.Write([]byte("hello"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "hello" {
		t.Fatalf("through TLS: %q, %v", b, err)
	}
	client.Close()
	server.Close()
	h.wait()
}

// TestProxyProtocolMutations: headers mutated at random, sent with the
// client's bytes behind them, through a real server: where the parser
// accepts the bytes, the destination gets exactly what follows the
// header; where it does not, the connection is rejected without a dial.
// The reader on the socket and the parser never disagree.
func TestProxyProtocolMutations(t *testing.T) {
	seeds := [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.7 12345 5432\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 80 443\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		v2Header(0x21, 0x11, []byte{192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x15, 0x38}),
		v2Header(0x20, 0x00, nil),
	}
	h := newHarness(t, "tcp4", Config{ProxyFrom: NewAllowList(netip.MustParsePrefix("127.0.0.0/8")), ConnectTimeout: 200 * time.Millisecond})
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	var accepted, rejected int
	defer func() { t.Logf("%d mutated headers accepted, %d rejected", accepted, rejected) }()
	for i := range 400 {
		hdr := bytes.Clone(seeds[i%len(seeds)])
		for range 1 + rng.IntN(3) {
			switch rng.IntN(3) {
			case 0: // change a byte
				hdr[rng.IntN(len(hdr))] = byte(rng.IntN(256))
			case 1: // drop one
				j := rng.IntN(len(hdr))
				hdr = append(hdr[:j], hdr[j+1:]...)
			case 2: // insert one
				j := rng.IntN(len(hdr) + 1)
				hdr = append(hdr[:j], append([]byte{byte(rng.IntN(256))}, hdr[j:]...)...)
			}
		}
		payload := fmt.Appendf(nil, "payload %d", i)
		msg := append(bytes.Clone(hdr), payload...)
		_, n, perr := ParseProxyHeader(msg)
		c := h.dial()
		c.Write(msg)
		c.CloseWrite()
		if perr != nil {
			if f := h.wait(); f.Outcome != Rejected || f.Dest.IsValid() {
				t.Fatalf("%q: outcome %v (%v), dest %v; want rejected without a dial, as the parser says: %v", msg, f.Outcome, f.Err, f.Dest, perr)
			}
			c.Close()
			rejected++
			continue
		}
		up := h.accept()
		got, _ := io.ReadAll(up)
		up.Close()
		io.ReadAll(c)
		c.Close()
		if f := h.wait(); !bytes.Equal(got, msg[n:]) {
			t.Fatalf("%q: the destination got %q (outcome %v, %v); want %q", msg, got, f.Outcome, f.Err, msg[n:])
		}
		accepted++
	}
}
