package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

func TestParseAllow(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "10.1.2.3", want: "10.1.2.3/32"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::1", want: "::1/128"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:0.0.0.0/96", want: "0.0.0.0/0"},
		{in: "10.1.2.3/8", err: `"10.1.2.3/8" has bits set beyond /8 (did you mean 10.0.0.0/8?)`},
		{in: "2001:db8::1/32", err: `"2001:db8::1/32" has bits set beyond /32 (did you mean 2001:db8::/32?)`},
		{in: "fe80::1%eth0", err: `"fe80::1%eth0": zones are not allowed (give the address alone)`},
		{in: "::ffff:0.0.0.0/95", err: `"::ffff:0.0.0.0/95" has bits set beyond /95 (did you mean ::fffe:0:0/95?)`},
		{in: "::ffff:0:0/80", err: `"::ffff:0:0/80" has bits set beyond /80 (did you mean ::/80?)`},
		{in: "", err: "empty address"},
		{in: "10.1.2", err: `"10.1.2" is not an IP address or CIDR prefix`},
		{in: "10.1.2.3/33", err: `"10.1.2.3/33" is not an IP address or CIDR prefix`},
		{in: "host.example", err: `"host.example" is not an IP address or CIDR prefix`},
		{in: "010.1.2.3", err: `"010.1.2.3" is not an IP address or CIDR prefix`},
		{in: "10.0.0.0/08", err: `"10.0.0.0/08" is not an IP address or CIDR prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseAllow(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("got %v, %v; want error %s", p, err, tt.err)
				}
				return
			}
			if err != nil || p.String() != tt.want {
				t.Errorf("got %v, %v; want %s", p, err, tt.want)
			}
		})
	}
}

// TestAllowListMatrix tries the known ways around an allow-list: mapped
// addresses, zones, neighbours of a prefix's edges, the other family.
func TestAllowListMatrix(t *testing.T) {
	list := func(entries ...string) *AllowList {
		var ps []netip.Prefix
		for _, e := range entries {
			p, err := ParseAllow(e)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return NewAllowList(ps...)
	}
	tests := []struct {
		name   string
		list   *AllowList
		client string
		want   bool
	}{
		{"no list allows all", nil, "203.0.113.9", true},
		{"empty list allows all", list(), "2001:db8::9", true},
		{"exact v4", list("10.1.2.3"), "10.1.2.3", true},
		{"other v4", list("10.1.2.3"), "10.1.2.4", false},
		{"mapped client of v4 entry", list("10.1.2.3"), "::ffff:10.1.2.3", true},
		{"mapped client, other address", list("10.1.2.3"), "::ffff:10.1.2.4", false},
		{"mapped entry, v4 client", list("::ffff:10.1.2.3"), "10.1.2.3", true},
		{"prefix first", list("192.168.4.0/22"), "192.168.4.0", true},
		{"prefix last", list("192.168.4.0/22"), "192.168.7.255", true},
		{"below prefix", list("192.168.4.0/22"), "192.168.3.255", false},
		{"above prefix", list("192.168.4.0/22"), "192.168.8.0", false},
		{"v6 exact", list("2001:db8::1"), "2001:db8::1", true},
		{"v6 zone on client", list("fe80::1"), "fe80::1%eth0", true},
		{"v6 prefix edge", list("2001:db8::/127"), "2001:db8::1", true},
		{"v6 beyond edge", list("2001:db8::/127"), "2001:db8::2", false},
		{"v6 all does not admit v4", list("::/0"), "10.1.2.3", false},
		{"v6 all does not admit mapped v4", list("::/0"), "::ffff:10.1.2.3", false},
		{"v4 all does not admit v6", list("0.0.0.0/0"), "2001:db8::1", false},
		{"v4-compatible is not v4", list("10.1.2.3"), "::10.1.2.3", false},
		{"NAT64 is not v4", list("10.1.2.3"), "64:ff9b::a01:203", false},
		{"zero address", list("0.0.0.0/0"), "", false},
		{"several entries", list("10.0.0.0/8", "2001:db8::/32"), "2001:db8:1::5", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a netip.Addr
			if tt.client != "" {
				a = netip.MustParseAddr(tt.client)
			}
			if got := tt.list.Allows(a); got != tt.want {
				t.Errorf("Allows(%s) = %v; want %v", tt.client, got, tt.want)
			}
		})
	}
}

// FuzzParseAllow: whatever is accepted is a canonical, masked prefix that
// contains the address it was written from, and no mapped prefix remains.
func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{"10.1.2.3", "10.0.0.0/8", "::ffff:10.0.0.0/104", "fe80::1%lo", "2001:db8::/32", "::", "1.2.3.4/32", "::ffff:1.2.3.4/128", "", "/", "1.2.3.4/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAllow(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParseAllow(%q) = %v: not a canonical prefix", s, p)
		}
		addr, _, _ := strings.Cut(s, "/")
		if a, err := netip.ParseAddr(addr); err == nil && !NewAllowList(p).Allows(a) {
			t.Fatalf("ParseAllow(%q) = %v does not allow %v", s, p, a)
		}
	})
}

func TestAllowListRejectsBeforeDialing(t *testing.T) {
	h := newHarness(t, "tcp4", Config{Allow: NewAllowList(netip.MustParsePrefix("10.0.0.0/8"))})
	h.expectReset()
	f := h.wait()
	if f.Outcome != Rejected || f.Dest.IsValid() || f.File != "" {
		t.Errorf("facts %+v; want rejected, no destination, no file", f)
	}
	// The upstream must never have seen a connection.
	h.upstream.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := h.upstream.Accept(); err == nil {
		c.Close()
		t.Errorf("the upstream was dialed for a rejected client")
	}
}

func TestAllowListAdmitsIPv4OnDualStack(t *testing.T) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ln, err := net.Listen("tcp", "[::]:0") // dual stack: IPv4 clients appear as ::ffff:a.b.c.d
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	ap := up.Addr().(*net.TCPAddr).AddrPort()
	ended := make(chan *Facts, 1)
	srv := New(Config{
		OutHost: ap.Addr().String(), OutPort: ap.Port(),
		Allow:  NewAllowList(netip.MustParsePrefix("127.0.0.0/8")),
		OnEnd:  func(f *Facts) { ended <- f },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	s, err := up.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	f := <-ended
	if f.Outcome != OK || !f.Client.Addr().Is4() {
		t.Errorf("outcome %v, client %v; want ok from an IPv4 address", f.Outcome, f.Client)
	}
}

// TestNotAllowedBeforeMaxConns: a client that is not allowed is rejected
// for that, also when the proxy is full.
func TestNotAllowedBeforeMaxConns(t *testing.T) {
	h := newHarness(t, "tcp4", Config{MaxConns: 1, Allow: NewAllowList(netip.MustParsePrefix("127.0.0.1/32"))})
	first := h.dial()
	h.accept()
	first.Write([]byte("x")) // the first session surely counts
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if c, err := d.Dial("tcp4", h.addr); err == nil {
		io.ReadAll(c)
		c.Close()
	}
	if f := h.wait(); f.Outcome != Rejected || !errors.Is(f.Err, errNotAllow) {
		t.Errorf("outcome %v (%v); want rejected as not allowed", f.Outcome, f.Err)
	}
}

// TestRejectedLogRateLimited: a client outside the allow-list that
// connects in a loop gets every connection rejected and reported (the
// connection log has a line each), but the daemon's log has one line per
// address per period, not one per connection (20,000 rejections once
// wrote 3.6 MB to it in 2 s).
func TestRejectedLogRateLimited(t *testing.T) {
	var log testkit.SyncBuffer
	h := newHarness(t, "tcp4", Config{
		Allow:  NewAllowList(netip.MustParsePrefix("10.0.0.0/8")),
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	for range 50 {
		h.expectReset()
		if f := h.wait(); f.Outcome != Rejected {
			t.Fatalf("outcome %v; want rejected", f.Outcome)
		}
	}
	if n := strings.Count(log.String(), "msg=connection"); n != 1 {
		t.Errorf("%d log lines about the 50 rejections; want 1:\n%s", n, log.String())
	}
}

// TestRejectLog: one line per address per period, the next saying how many
// went unlogged; other addresses are not held back; the memory is bounded.
func TestRejectLog(t *testing.T) {
	var l rejectLog
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	steps := []struct {
		addr     netip.Addr
		at       time.Duration
		log      bool
		unlogged int
	}{
		{a, 0, true, 0},
		{a, time.Second, false, 0},
		{b, time.Second, true, 0},
		{a, 9 * time.Second, false, 0},
		{a, 10 * time.Second, true, 2},
		{a, 11 * time.Second, false, 0},
		{b, 30 * time.Second, true, 0},
	}
	for i, s := range steps {
		if log, unlogged := l.note(s.addr, s.at); log != s.log || unlogged != s.unlogged {
			t.Errorf("step %d: got %v, %d; want %v, %d", i, log, unlogged, s.log, s.unlogged)
		}
	}
	for i := range 3 * rejectAddrs {
		l.note(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40*time.Second)
	}
	if n := len(l.addrs); n > rejectAddrs {
		t.Errorf("%d addresses remembered; want at most %d", n, rejectAddrs)
	}
}
