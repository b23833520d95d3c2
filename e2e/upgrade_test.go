package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

// migrateReq is the sysctl that lets the kernel move the connections
// waiting in a closing SO_REUSEPORT listener's queue to another listener
// of its group, instead of resetting them (Linux 5.14).
const migrateReq = "/proc/sys/net/ipv4/tcp_migrate_req"

// needMigrateReq sets net.ipv4.tcp_migrate_req to 1 for the test, or
// skips it where that cannot be done: without it, connections that the
// kernel had queued for the old daemon when it closed its socket are
// reset, and the test would count failures that docs/deploy.md warns of.
func needMigrateReq(t *testing.T) {
	t.Helper()
	old, err := os.ReadFile(migrateReq)
	if err != nil {
		t.Skipf("no %s (Linux 5.14 or later has it): %v", migrateReq, err)
	}
	if strings.TrimSpace(string(old)) == "1" {
		return
	}
	if err := os.WriteFile(migrateReq, []byte("1"), 0); err != nil {
		msg := fmt.Sprintf("net.ipv4.tcp_migrate_req is 0 and cannot be set (%v): without it the connections queued for the old daemon when it stops listening are reset, which is what this test shows does not happen", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { os.WriteFile(migrateReq, old, 0) })
}

// TestRollingUpgrade: with --reuse-port a new daemon starts on the port
// the old one listens on; the old one is told to stop (SIGTERM) and
// drains. A long session on the old daemon finishes intact, short
// connections made all along never fail, and the new daemon serves
// them all once the old one is gone.
func TestRollingUpgrade(t *testing.T) {
	needMigrateReq(t)
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	listen := fmt.Sprintf("%d@127.0.0.1", port)
	a := startDaemonOn(t, port, "-p", listen, "-P", up.out(), "--reuse-port")
	addr := a.addr()

	// A long session, on the old daemon: it streams until told to stop.
	long, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	stopLong := make(chan struct{})
	sent := make(chan []byte, 1)
	go streamUntil(long.(*net.TCPConn), stopLong, sent)
	echoed := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(long); echoed <- b }()
	a.waitLog("listening", 1)

	// Short connections, all along.
	var made, failed atomic.Int64
	var firstErr atomic.Value
	stopShort := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go shortConnections(addr, w, stopShort, &wg, &made, &failed, &firstErr)
	}
	waitCount := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 60 s: %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitCount("100 short connections to the old daemon", func() bool { return made.Load() >= 100 })

	// The new daemon, on the same port; without --reuse-port it could
	// not start.
	other := exec.Command(binary, "-p", listen, "-P", up.out())
	if out, err := other.CombinedOutput(); !strings.Contains(string(out), "address already in use") {
		t.Errorf("a daemon without --reuse-port on the same port: %v, %q; want address already in use", err, out)
	}
	b := startDaemonOn(t, port, "-p", listen, "-P", up.out(), "--reuse-port")
	waitCount("the new daemon serves a share of them", func() bool { return len(b.logLines("connection")) >= 50 })

	// The old daemon stops listening and drains.
	madeAtStop := made.Load()
	a.signal(syscall.SIGTERM)
	stopping := a.waitLog("stopping", 1)[0]
	if !strings.Contains(stopping, "active=") || strings.Contains(stopping, "active=0") {
		t.Errorf("stopping line %q; want the long session active", stopping)
	}
	servedByA := len(a.logLines("connection"))
	servedByB := len(b.logLines("connection"))
	waitCount("200 more short connections", func() bool { return made.Load() >= madeAtStop+200 })
	if n := len(a.logLines("connection")); n > servedByA+16 {
		// At most the few the old daemon had accepted before it closed.
		t.Errorf("the old daemon served %d connections after it stopped listening", n-servedByA)
	}
	if n := len(b.logLines("connection")); n < servedByB+150 {
		t.Errorf("the new daemon served %d of the last 200 connections", n-servedByB)
	}

	// The long session ends; only then does the old daemon exit.
	select {
	case <-a.done:
		t.Fatalf("the old daemon ended before its long session:\n%s", a.stderr)
	default:
	}
	close(stopLong)
	want := <-sent
	if got := <-echoed; !bytes.Equal(got, want) {
		t.Errorf("long session: %d bytes came back of %d sent (equal: %v)", len(got), len(want), bytes.Equal(got, want[:min(len(got), len(want))]))
	}
	if code := a.exit(60 * time.Second); code != 0 {
		t.Errorf("old daemon: exit status %d", code)
	}
	madeAfterExit := made.Load()
	waitCount("100 short connections after the old daemon exited", func() bool { return made.Load() >= madeAfterExit+100 })
	close(stopShort)
	wg.Wait()
	t.Logf("%d short connections, %d failed; the long session moved %d bytes each way", made.Load(), failed.Load(), len(want))
	if failed.Load() != 0 {
		t.Errorf("%d of %d short connections failed; the first: %v", failed.Load(), made.Load(), firstErr.Load())
	}
	if lines := a.logLines("connection"); !strings.Contains(lines[len(lines)-1], "outcome=ok") {
		t.Errorf("the old daemon's last connection: %s", lines[len(lines)-1])
	}
}

// streamUntil writes 1000-byte chunks of random bytes to c, one every
// 5 ms, until stop is closed; then it half-closes c and sends what it
// wrote on sent.
func streamUntil(c *net.TCPConn, stop <-chan struct{}, sent chan<- []byte) {
	var all []byte
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			c.CloseWrite()
			sent <- all
			return
		case <-tick.C:
			chunk := make([]byte, 1000)
			rand.Read(chunk)
			if _, err := c.Write(chunk); err != nil {
				sent <- all
				return
			}
			all = append(all, chunk...)
		}
	}
}

// shortConnections makes one echo exchange after another with addr until
// stop is closed, counting them and their failures.
func shortConnections(addr string, w int, stop <-chan struct{}, wg *sync.WaitGroup, made, failed *atomic.Int64, firstErr *atomic.Value) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		msg := fmt.Appendf(nil, "worker %d, connection %d", w, i)
		got, err := exchange(addr, msg)
		made.Add(1)
		if err == nil && !bytes.Equal(got, msg) {
			err = fmt.Errorf("echo %q of %q", got, msg)
		}
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
	}
}

// TestSocketActivation: under systemd's socket activation ipprotd serves
// the socket it is given (LISTEN_FDS), not -p's, and its hooks do not
// inherit the variables.
func TestSocketActivation(t *testing.T) {
	testkit.Need(t, "systemd-socket-activate")
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	dir := t.TempDir()
	hookOut := filepath.Join(dir, "hook.env")
	hook := writeScript(t, fmt.Sprintf("env | grep ^LISTEN_ > %s; echo done >> %s\n", hookOut, hookOut))
	cmd := exec.Command("systemd-socket-activate", "-l", fmt.Sprintf("127.0.0.1:%d", port),
		binary, "-p", "1", "-P", up.out(), "-L", "-f", filepath.Join(dir, "prot"), "-u", hook)
	// systemd-socket-activate starts ipprotd when the first connection
	// comes; that connection waits in the socket's queue meanwhile.
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	done := make(chan error, 1)
	go func() {
		var err error
		for range 500 { // until systemd-socket-activate listens
			var got []byte
			if got, err = exchange(addr, []byte("first")); err == nil {
				if string(got) != "first" {
					err = fmt.Errorf("echo %q", got)
				}
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		done <- err
	}()
	d := startCommand(t, port, cmd)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(addr, []byte("second")); err != nil || string(got) != "second" {
		t.Errorf("second connection: %q, %v", got, err)
	}
	if l := d.logLines("listening")[0]; !strings.Contains(l, " addr="+addr+" ") {
		t.Errorf("listening line %q; want the socket it was given, %s", l, addr)
	}
	if lines := waitLines(t, hookOut, 1); lines[0] != "done" {
		t.Errorf("the hook saw %q; want no LISTEN_ variables", lines)
	}
	d.signal(syscall.SIGTERM)
	if code := d.exit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d", code)
	}
}
