package e2e

import (
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

// v2Header is a PROXY protocol v2 header carrying TCP over IPv4 from
// src:sport to dst:dport, written by hand from HAProxy's specification.
func v2Header(src, dst [4]byte, sport, dport uint16) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	b = be.BigEndian.AppendUint16(b, sport)
	return be.BigEndian.AppendUint16(b, dport)
}

// replyBye reads the client's bytes to their end, then answers "bye".
func replyBye(c *net.TCPConn) {
	io.Copy(io.Discard, struct{ io.Reader }{c})
	c.Write([]byte("bye"))
	c.CloseWrite()
}

// sendThrough connects to addr, sends msg, half-closes and returns what
// came back and the client's local port.
func sendThrough(t *testing.T, addr string, msg []byte) (string, int) {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	return string(got), c.LocalAddr().(*net.TCPAddr).Port
}

// TestProxyProtocolIn: behind a balancer that sends PROXY headers, the
// client a header carries is the client of the connection log (%i %p),
// the data file's name, the hook's $2 $3 and the allow-list; the data
// file holds the client's bytes, not the header. From a peer not in
// --proxy-protocol-from a header is data; from a trusted peer, a missing,
// truncated or oversized header is rejected within --connect-timeout.
func TestProxyProtocolIn(t *testing.T) {
	up := startUpstream(t, replyBye)
	dir := t.TempDir()
	prefix, clog := filepath.Join(dir, "rec", "prot"), filepath.Join(dir, "conn.log")
	hookOut := filepath.Join(dir, "hook.out")
	hook := writeScript(t, fmt.Sprintf("echo \"$2 $3\" >> %s\n", hookOut))
	d := startDaemon(t, "-P", up.out(), "-L", "-f", prefix, "-c", clog, "-C", "%i %p %x %r %w %f%n",
		"-u", hook, "--connect-timeout", "1s",
		"--proxy-protocol-from", "127.0.0.1", "-r", "192.0.2.0/24")

	v1 := "PROXY TCP4 192.0.2.1 198.51.100.7 40001 5432\r\n"
	v2 := v2Header([4]byte{192, 0, 2, 2}, [4]byte{198, 51, 100, 7}, 40002, 5432)
	for _, hdr := range []string{v1, string(v2)} {
		if got, _ := sendThrough(t, d.addr(), []byte(hdr+"hello")); got != "bye" {
			t.Fatalf("reply %q; want %q", got, "bye")
		}
	}
	// A carried client outside -r, and headers that are no headers.
	rejected := []string{
		"PROXY TCP4 203.0.113.9 198.51.100.7 40003 5432\r\nhello",
		"GET / HTTP/1.0\r\n\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.7 40",               // truncated: the client half-closes
		"PROXY UNKNOWN " + strings.Repeat("x", 120) + "\r\n", // longer than 107 bytes
		string(v2[:20]),
	}
	var rejectedPorts []int
	for _, msg := range rejected {
		got, port := sendThrough(t, d.addr(), []byte(msg))
		if got != "" {
			t.Errorf("%q: reply %q; want none", msg, got)
		}
		rejectedPorts = append(rejectedPorts, port)
	}
	// A header that stalls: rejected when --connect-timeout runs out.
	c, err := net.Dial("tcp4", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PROXY TCP4 192.0."))
	if b, err := io.ReadAll(c); len(b) != 0 || err == nil {
		t.Errorf("stalled header: read %q, %v; want a reset", b, err)
	}
	stalledPort := c.LocalAddr().(*net.TCPAddr).Port
	c.Close()

	lines := waitLines(t, clog, 2+len(rejected)+1)
	slices.Sort(lines) // lines are written as connections end
	files, _ := filepath.Glob(prefix + "_*")
	if len(files) != 2 {
		t.Fatalf("data files %v; want 2", files)
	}
	var want []string
	for i, port := range append(rejectedPorts, stalledPort) {
		if i == 0 {
			want = append(want, "203.0.113.9 40003 rejected 0 0 -") // the carried client, refused by -r
			continue
		}
		want = append(want, fmt.Sprintf("127.0.0.1 %d rejected 0 0 -", port))
	}
	for i, client := range []string{"192.0.2.1 40001", "192.0.2.2 40002"} {
		file := files[i]
		if !strings.HasSuffix(file, "_"+strings.Fields(client)[0]) {
			t.Errorf("data file %s; want it named after the carried client %s", file, client)
		}
		if b, _ := os.ReadFile(file); string(b) != "hellobye" {
			t.Errorf("data file %s holds %q; want %q", file, b, "hellobye")
		}
		want = append(want, client+" ok 5 3 "+file)
	}
	slices.Sort(want)
	if !slices.Equal(lines, want) {
		t.Errorf("connection log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	hooks := waitLines(t, hookOut, 2)
	slices.Sort(hooks)
	if strings.Join(hooks, ",") != "192.0.2.1 40001,192.0.2.2 40002" {
		t.Errorf("hooks got %q; want the carried clients", hooks)
	}
	if log := d.logLines("connection")[0]; !strings.Contains(log, "client=192.0.2.1:40001 via=127.0.0.1:") {
		t.Errorf("daemon log %q; want the carried client and via", log)
	}

	// An untrusted peer: the header is the client's data, recorded.
	d2 := startDaemon(t, "-P", up.out(), "-L", "-f", filepath.Join(dir, "untrusted"), "--proxy-protocol-from", "10.0.0.0/8")
	if got, _ := sendThrough(t, d2.addr(), []byte(v1+"hello")); got != "bye" {
		t.Fatalf("reply %q; want %q", got, "bye")
	}
	d2.waitLog("connection", 1)
	files, _ = filepath.Glob(filepath.Join(dir, "untrusted_*_127.0.0.1"))
	if len(files) != 1 {
		t.Fatalf("data files %v; want one named after 127.0.0.1", files)
	}
	if b, _ := os.ReadFile(files[0]); string(b) != v1+"hellobye" {
		t.Errorf("data file holds %q; want the header as data", b)
	}
}

// TestSendProxy: with --send-proxy the destination reads exactly one
// header, carrying the client and the address it connected to, then
// exactly the client's bytes; the recording and %r have none of it.
func TestSendProxy(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			got := make(chan []byte, 1)
			up := startUpstream(t, func(c *net.TCPConn) {
				b, _ := io.ReadAll(struct{ io.Reader }{c})
				got <- b
				c.Write([]byte("bye"))
			})
			dir := t.TempDir()
			clog := filepath.Join(dir, "conn.log")
			d := startDaemon(t, "-P", up.out(), "-L", "-f", filepath.Join(dir, "prot"), "-c", clog, "-C", "%r %f%n", "--send-proxy", version)
			reply, port := sendThrough(t, d.addr(), []byte("hello"))
			if reply != "bye" {
				t.Fatalf("reply %q; want %q", reply, "bye")
			}
			var want []byte
			if version == "v1" {
				want = fmt.Appendf(nil, "PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", port, d.port)
			} else {
				want = v2Header([4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 1}, uint16(port), uint16(d.port))
			}
			want = append(want, "hello"...)
			if b := <-got; string(b) != string(want) {
				t.Errorf("destination read %q; want %q", b, want)
			}
			line := strings.Fields(waitLines(t, clog, 1)[0])
			if line[0] != "5" {
				t.Errorf("%%r %s; want 5", line[0])
			}
			if b, _ := os.ReadFile(line[1]); string(b) != "hellobye" {
				t.Errorf("data file holds %q; want %q", b, "hellobye")
			}
		})
	}
}

// TestHAProxySendsProxyV2: docs/deploy.md's set-up with a real HAProxy in
// front, send-proxy-v2 and health checks: the client HAProxy accepted is
// the client of the connection log, and the health checks, which carry a
// LOCAL header, are served (not rejected) as the balancer's own.
func TestHAProxySendsProxyV2(t *testing.T) {
	testkit.Need(t, "haproxy")
	up := startUpstream(t, echoHandler)
	dir := t.TempDir()
	clog := filepath.Join(dir, "conn.log")
	d := startDaemon(t, "-P", up.out(), "-c", clog, "-C", "%i %p %x %r %w%n", "--proxy-protocol-from", "127.0.0.1")
	front := testkit.FreePort(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(cfg, fmt.Appendf(nil, `global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend postgres
    bind 127.0.0.1:%d
    default_backend ipprotd
backend ipprotd
    server rec1 %s send-proxy-v2 check inter 100ms
`, front, d.addr()), 0o644)
	hap := exec.Command("haproxy", "-db", "-f", cfg)
	var hapOut testkit.SyncBuffer
	hap.Stdout, hap.Stderr = &hapOut, &hapOut
	if err := hap.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hap.Process.Kill(); hap.Wait() })

	// Two health checks at least, so that the server is up.
	waitLines(t, clog, 2)
	var c *net.TCPConn
	var err error
	for range 500 {
		if c, err = dialFrom("127.0.0.2", fmt.Sprintf("127.0.0.1:%d", front)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("HAProxy does not listen: %v\n%s", err, &hapOut)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.CloseWrite()
	if got, err := io.ReadAll(c); string(got) != "hello" {
		t.Fatalf("echo through HAProxy and ipprotd: %q, %v\n%s", got, err, &hapOut)
	}
	want := fmt.Sprintf("127.0.0.2 %d ok 5 5", c.LocalAddr().(*net.TCPAddr).Port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := readLines(t, clog)
		if slices.Contains(lines, want) {
			for _, l := range lines {
				if l != want && (!strings.HasPrefix(l, "127.0.0.1 ") || strings.Contains(l, "rejected")) {
					t.Errorf("line %q; want the client's line and health checks from 127.0.0.1, none rejected", l)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line %q in:\n%s", want, strings.Join(lines, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
