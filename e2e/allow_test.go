package e2e

import (
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// countingEcho is an echo destination that counts the connections it
// accepted.
type countingEcho struct{ accepted atomic.Int64 }

func (e *countingEcho) handle(c *net.TCPConn) {
	e.accepted.Add(1)
	echoHandler(c)
}

// TestAllowListMatrix drives the allow-list through the binary with clients
// bound to chosen loopback addresses (127.0.0.1, 127.0.0.2, ::1), on an
// IPv4 listener and on the dual-stack one of `-p PORT`, where IPv4 clients
// arrive as ::ffff:a.b.c.d. Each admitted client gets its echo; each
// rejected one a reset, a "rejected" line naming its plain IPv4 or IPv6
// address, no data file — and the destination never sees a connection
// for it.
func TestAllowListMatrix(t *testing.T) {
	ipv6 := true
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Logf("no IPv6 loopback (%v): the ::1 clients are left out", err)
		ipv6 = false
	} else {
		l.Close()
	}
	type client struct {
		from  string
		admit bool
	}
	tests := []struct {
		name      string
		allow     []string
		dualStack bool
		clients   []client
	}{
		{"exact IPv4", []string{"127.0.0.1"}, false,
			[]client{{"127.0.0.1", true}, {"127.0.0.2", false}}},
		{"exact IPv4 on dual stack", []string{"127.0.0.1"}, true,
			[]client{{"127.0.0.1", true}, {"127.0.0.2", false}, {"::1", false}}},
		{"IPv4-mapped entry", []string{"::ffff:127.0.0.1"}, true,
			[]client{{"127.0.0.1", true}, {"127.0.0.2", false}, {"::1", false}}},
		{"/31 edges", []string{"127.0.0.0/31"}, true,
			[]client{{"127.0.0.1", true}, {"127.0.0.2", false}}},
		{"IPv4-mapped /127", []string{"::ffff:127.0.0.0/127"}, true,
			[]client{{"127.0.0.1", true}, {"127.0.0.2", false}}},
		{"IPv6 address only", []string{"::1"}, true,
			[]client{{"::1", true}, {"127.0.0.1", false}}},
		{"all of IPv6", []string{"::/0"}, true,
			[]client{{"::1", true}, {"127.0.0.1", false}, {"127.0.0.2", false}}},
		{"all of IPv4 as mapped", []string{"::ffff:0.0.0.0/96"}, true,
			[]client{{"127.0.0.2", true}, {"::1", false}}},
		{"all of IPv4", []string{"0.0.0.0/0"}, true,
			[]client{{"127.0.0.2", true}, {"::1", false}}},
		{"several", []string{"127.0.0.2", "::1"}, true,
			[]client{{"127.0.0.2", true}, {"::1", true}, {"127.0.0.1", false}}},
		{"no list", nil, true,
			[]client{{"127.0.0.2", true}, {"::1", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !ipv6 {
				var v4 []client
				for _, c := range tt.clients {
					if !strings.Contains(c.from, ":") {
						v4 = append(v4, c)
					}
				}
				if tt.clients = v4; len(v4) == 0 {
					t.Skip("IPv6 clients only, and no IPv6 loopback")
				}
			}
			dir := t.TempDir()
			up := &countingEcho{}
			u := startUpstream(t, up.handle)
			port := testkit.FreePort(t)
			listen := fmt.Sprintf("%d@127.0.0.1", port)
			if tt.dualStack {
				listen = fmt.Sprint(port)
			}
			args := []string{"-p", listen, "-P", u.out(), "-f", dir + "/prot", "-c", dir + "/conn.log", "-C", "%N %x %i%n"}
			for _, a := range tt.allow {
				args = append(args, "-r", a)
			}
			d := startDaemonOn(t, port, args...)
			var want []string
			admitted := 0
			for i, c := range tt.clients {
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				if strings.Contains(c.from, ":") {
					addr = fmt.Sprintf("[::1]:%d", port)
				}
				msg := []byte(fmt.Sprintf("from %s", c.from))
				got, err := exchangeFrom(c.from, addr, msg)
				outcome := "ok"
				if c.admit {
					admitted++
					if err != nil || string(got) != string(msg) {
						t.Errorf("%s: got %q, %v; want the echo", c.from, got, err)
					}
				} else {
					outcome = "rejected"
					if !isReset(err) || len(got) != 0 {
						t.Errorf("%s: got %q, %v; want a reset and nothing", c.from, got, err)
					}
				}
				want = append(want, fmt.Sprintf("%d %s %s", i+1, outcome, c.from))
				waitLines(t, dir+"/conn.log", i+1)
			}
			d.stop()
			if got := strings.Join(readLines(t, dir+"/conn.log"), "|"); got != strings.Join(want, "|") {
				t.Errorf("log\n got %s\nwant %s", got, strings.Join(want, "|"))
			}
			if n := up.accepted.Load(); n != int64(admitted) {
				t.Errorf("the destination accepted %d connections; want %d, one per admitted client", n, admitted)
			}
			files := dataFiles(t, dir+"/prot")
			if len(files) != admitted {
				t.Errorf("%d data files; want %d", len(files), admitted)
			}
			// Each admitted client's file is named by its plain address,
			// IPv6 with '-' for ':'.
			for i, c := range tt.clients {
				name := fmt.Sprintf("%s/prot_*_%d_%s", dir, i+1, strings.ReplaceAll(c.from, ":", "-"))
				if m, _ := filepath.Glob(name); len(m) != map[bool]int{true: 1}[c.admit] {
					t.Errorf("files %v for client %d from %s; want one %s if admitted, else none", m, i+1, c.from, name)
				}
			}
		})
	}
}

// exchangeFrom is exchange from the local address ip. A reset that comes
// before the dial returned is the dial's error.
func exchangeFrom(ip, addr string, msg []byte) ([]byte, error) {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	errc := make(chan error, 1)
	go writeAndCloseWrite(c, msg, errc)
	got, err := io.ReadAll(c)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

// TestAllowListBadEntries: every spelling that could widen or dodge an
// entry is refused at start with exit status 2 and one line, before the
// daemon listens: host bits, zones, an empty entry, shorthand and octal
// or hex IPv4 forms, blanks, names.
func TestAllowListBadEntries(t *testing.T) {
	tests := []struct{ entry, want string }{
		{"127.0.0.1/8", `"127.0.0.1/8" has bits set beyond /8 (did you mean 127.0.0.0/8?)`},
		{"::ffff:127.0.0.1/8", `"::ffff:127.0.0.1/8" has bits set beyond /8 (did you mean ::/8?)`},
		{"::ffff:127.0.0.0/96", `"::ffff:127.0.0.0/96" has bits set beyond /96 (did you mean ::ffff:0.0.0.0/96?)`},
		{"fe80::1%lo", `"fe80::1%lo": zones are not allowed (give the address alone)`},
		{"", `empty address`},
		{"127.1", `"127.1" is not an IP address or CIDR prefix`},
		{"0x7f.0.0.1", `"0x7f.0.0.1" is not an IP address or CIDR prefix`},
		{"127.000.000.001", `"127.000.000.001" is not an IP address or CIDR prefix`},
		{" 127.0.0.1", `" 127.0.0.1" is not an IP address or CIDR prefix`},
		{"127.0.0.1/33", `"127.0.0.1/33" is not an IP address or CIDR prefix`},
		{"localhost", `"localhost" is not an IP address or CIDR prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			port := testkit.FreePort(t)
			out, err := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-r", "127.0.0.1", "-r", tt.entry).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v; want status 2 (output %q)", err, out)
			}
			if want := "ipprotd: -r/--allow: " + tt.want + "\n"; string(out) != want {
				t.Errorf("output %q; want %q", out, want)
			}
		})
	}
}
