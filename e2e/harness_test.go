// Package e2e drives the real ipprotd binary as a user would: it builds it
// once, starts it with the manual's command lines, talks through it with
// real clients and servers and reads what it writes with real tools.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binary is the ipprotd under test, built by TestMain.
var binary string

// atExit holds what TestMain runs after the tests, last registered first:
// servers shared by the whole package (PostgreSQL) are stopped there.
var (
	atExitMu sync.Mutex
	atExit   []func()
)

func registerAtExit(f func()) {
	atExitMu.Lock()
	defer atExitMu.Unlock()
	atExit = append(atExit, f)
}

func runAtExit() {
	atExitMu.Lock()
	defer atExitMu.Unlock()
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // only listing: no binary needed
	}
	// The load test holds thousands of sockets in this process and in the
	// daemon, which inherits the limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	dir, err := os.MkdirTemp("", "ipprotd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ipprotd")
	args := []string{"build", "-o", binary}
	if os.Getenv("IPPROT_E2E_NORACE") == "" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/ipprot/ipprot")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ipprotd:", err)
		os.Exit(1)
	}
	code := m.Run()
	runAtExit()
	os.RemoveAll(dir)
	// Every test's servers and clients ended with it.
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// daemon is a running ipprotd in the foreground.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *testkit.SyncBuffer
	port   int // where it listens
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// startDaemon runs ipprotd listening on a free loopback port with args
// (which must not contain -p) and waits until it listens.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	port := testkit.FreePort(t)
	return startDaemonOn(t, port, append([]string{"-p", fmt.Sprintf("%d@127.0.0.1", port)}, args...)...)
}

// startDaemonOn runs ipprotd with args as they are, and waits for the
// listening line of its log.
func startDaemonOn(t *testing.T, port int, args ...string) *daemon {
	t.Helper()
	return startCommand(t, port, exec.Command(binary, args...))
}

func startCommand(t *testing.T, port int, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{t: t, cmd: cmd, stderr: &testkit.SyncBuffer{}, port: port, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	// A -race binary sleeps a second before it exits; the daemon's races
	// are reported on its stderr all the same, and checked at cleanup.
	cmd.Env = append(cmd.Env, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go d.wait()
	t.Cleanup(d.cleanup)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), "msg=listening") {
		select {
		case <-d.done:
			t.Fatalf("ipprotd %v ended before listening (%v):\n%s", cmd.Args[1:], d.err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipprotd did not listen within 30 s:\n%s", d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

func (d *daemon) wait() {
	d.err = d.cmd.Wait()
	close(d.done)
}

// cleanup kills the daemon if it still runs and fails the test if the
// race detector reported anything in it.
func (d *daemon) cleanup() {
	d.kill()
	if log := d.stderr.String(); strings.Contains(log, "WARNING: DATA RACE") {
		d.t.Errorf("the race detector found a data race in ipprotd:\n%s", log)
	}
}

func (d *daemon) kill() {
	select {
	case <-d.done:
	default:
		d.cmd.Process.Kill()
		<-d.done
	}
}

// addr is the daemon's listening address.
func (d *daemon) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

func (d *daemon) signal(s syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(s); err != nil {
		d.t.Fatal(err)
	}
}

// exit waits for the daemon to end and returns its exit status.
func (d *daemon) exit(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("ipprotd did not end within %v:\n%s", timeout, d.stderr)
	}
	if d.err == nil {
		return 0
	}
	if ee, ok := d.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	d.t.Fatal(d.err)
	return -1
}

// logLines returns the lines of the daemon's log with msg=<msg>.
func (d *daemon) logLines(msg string) []string {
	var out []string
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(l, " msg="+msg) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits until the daemon's log has n lines with msg=<msg>.
func (d *daemon) waitLog(msg string, n int) []string {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := d.logLines(msg); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("fewer than %d %q lines within 30 s:\n%s", n, msg, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upstream is a destination server on loopback.
type upstream struct {
	ln   net.Listener
	port int
	wg   sync.WaitGroup
}

// startUpstream serves each connection with handle in its own goroutine.
func startUpstream(t *testing.T, handle func(*net.TCPConn)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	u.wg.Add(1)
	go u.serve(handle)
	t.Cleanup(u.close)
	return u
}

func (u *upstream) serve(handle func(*net.TCPConn)) {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.wg.Add(1)
		go u.serveConn(c.(*net.TCPConn), handle)
	}
}

func (u *upstream) serveConn(c *net.TCPConn, handle func(*net.TCPConn)) {
	defer u.wg.Done()
	defer c.Close()
	handle(c)
}

func (u *upstream) close() {
	u.ln.Close()
	u.wg.Wait()
}

// out is the -P value that forwards to the upstream.
func (u *upstream) out() string { return fmt.Sprintf("%d@127.0.0.1", u.port) }

// echoHandler writes back everything until EOF, then half-closes.
func echoHandler(c *net.TCPConn) {
	io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
	c.CloseWrite()
}

// exchange connects to addr, sends msg, half-closes and returns all it
// reads back.
func exchange(addr string, msg []byte) ([]byte, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	errc := make(chan error, 1)
	go writeAndCloseWrite(c.(*net.TCPConn), msg, errc)
	got, err := io.ReadAll(c)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

func writeAndCloseWrite(c *net.TCPConn, msg []byte, errc chan<- error) {
	_, err := c.Write(msg)
	if err == nil {
		err = c.CloseWrite()
	}
	errc <- err
}

// readLines reads a file's lines.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	return lines
}

// pidOf reads a pid file.
func pidOf(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s holds %q", path, b)
	}
	return pid
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// waitGone waits until pid has ended.
func waitGone(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs after %v", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dataFiles lists the files whose names start with prefix+"_".
func dataFiles(t *testing.T, prefix string) []string {
	t.Helper()
	m, err := filepath.Glob(prefix + "_*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// nameRE matches a data file's name: prefix_yyyy-mm-dd_HHMMSS_n_ip[.gz|.bz2].
var nameRE = regexp.MustCompile(`_(\d{4}-\d{2}-\d{2}_\d{6})_(\d+)_([0-9a-f.\-]+?)(\.gz|\.bz2)?$`)

// run runs a command and returns its stdout, failing the test on error.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s %v: %v\n%s", name, args, err, msg)
	}
	return out
}
