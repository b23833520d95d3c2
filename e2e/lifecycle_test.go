package e2e

import (
	"bytes"
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestManualFirstExample runs the manual's first command line as written,
// as a daemon with -Dp, and stops it the manual's way, `kill $(cat pid)`,
// while a connection is open: the connection goes on to its end, then the
// daemon exits and removes its pid file.
func TestManualFirstExample(t *testing.T) {
	testkit.Need(t, "gzip")
	dir := t.TempDir()
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	pidFile := filepath.Join(dir, "conn_rec", "ipprot_pid_"+strconv.Itoa(port))
	os.MkdirAll(filepath.Dir(pidFile), 0o755)
	cmd := exec.Command(binary, strings.Fields(fmt.Sprintf(
		"-p %d -h 127.0.0.1 -P %d -l -f %s/conn_rec/prot -z -Dp %s", port, up.port, dir, pidFile))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("starting the daemon: %v\n%s", err, stderr.String())
	}
	if got := withoutSyslogWarning(stderr.String()); got != "" {
		t.Errorf("the starting process printed %q; want nothing (or only the warning that there is no syslog)", got)
	}
	// It listens once the starting process returned; the pid file is there.
	pid := pidOf(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !alive(pid) {
		t.Fatalf("daemon pid %d is not running", pid)
	}

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := []byte("SELECT 1;\n")
	c.Write(first)
	if _, err := io.ReadFull(c, make([]byte, len(first))); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command("sh", "-c", "kill `cat "+pidFile+"`").CombinedOutput(); err != nil {
		t.Fatalf("kill: %v %s", err, out)
	}
	// No new connection is taken... (watched in /proc/net/tcp: a probing
	// dial could be taken before the signal arrives, and be recorded)
	deadline := time.Now().Add(10 * time.Second)
	for listening(t, port) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon still listens 10 s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		nc.Close()
		t.Fatal("a connection was taken after the daemon stopped listening")
	}
	// ...but the open one continues until it is closed normally.
	second := []byte("SELECT 2;\n")
	c.Write(second)
	if _, err := io.ReadFull(c, make([]byte, len(second))); err != nil {
		t.Fatalf("the open connection stopped after SIGTERM: %v", err)
	}
	if !alive(pid) {
		t.Fatal("the daemon ended with a connection open")
	}
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	waitGone(t, pid, 20*time.Second)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file still there after exit (%v)", err)
	}

	files := dataFiles(t, filepath.Join(dir, "conn_rec", "prot"))
	if len(files) != 1 || !strings.HasSuffix(files[0], "_1_127.0.0.1.gz") {
		t.Fatalf("data files %v; want one ..._1_127.0.0.1.gz", files)
	}
	run(t, "gzip", "-t", files[0])
	got := run(t, "gzip", "-dc", files[0])
	if want := "SELECT 1;\nSELECT 2;\n"; string(got) != want {
		t.Errorf("recorded %q; want %q (-l: client to server only)", got, want)
	}
}

// withoutSyslogWarning removes the line a detaching ipprotd prints where the
// machine has no syslog for the daemon's own log (test machines rarely do).
func withoutSyslogWarning(out string) string {
	var kept []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "ipprotd: warning: no syslog (") || !strings.HasSuffix(l, "the daemon's own log is discarded; give --log-file to keep it\n") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

// TestDaemonReportsStartFailure: -D exits non-zero with the daemon's own
// error when the daemon cannot listen, and leaves no pid file behind.
func TestDaemonReportsStartFailure(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-Dp", pidFile)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v; want status 1", err)
	}
	want := fmt.Sprintf("ipprotd: -p/--listen: listen tcp 127.0.0.1:%d: bind: address already in use\n", port)
	if withoutSyslogWarning(string(out)) != want {
		t.Errorf("output %q; want %q", out, want)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind (%v)", err)
	}
}

// TestPidFile: a live daemon's pid file is refused, a stale one replaced.
func TestPidFile(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	d := startDaemon(t, "--pid-file", pidFile)
	if pidOf(t, pidFile) != d.cmd.Process.Pid {
		t.Fatalf("pid file names %d; want %d", pidOf(t, pidFile), d.cmd.Process.Pid)
	}
	port := testkit.FreePort(t)
	out, err := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "--pid-file", pidFile).CombinedOutput()
	want := fmt.Sprintf("ipprotd: --pid-file: %s names pid %d, an ipprotd that is still running\n", pidFile, d.cmd.Process.Pid)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || string(out) != want {
		t.Errorf("second daemon: %v %q; want status 1 and %q", err, out, want)
	}
	d.signal(syscall.SIGTERM)
	if code := d.exit(10 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind (%v)", err)
	}

	// A stale file: the pid of a process that is not ipprotd (this test).
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	d = startDaemon(t, "--pid-file", pidFile)
	if pidOf(t, pidFile) != d.cmd.Process.Pid {
		t.Errorf("stale pid file not replaced")
	}
}

// TestSighupReopensConnectionLog: after `mv` of the log and SIGHUP, new
// lines go to a new file at the path; none is lost or torn.
func TestSighupReopensConnectionLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "conn.log")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-c", logPath, "-C", "%N %x%n")
	for range 3 {
		if _, err := exchange(d.addr(), []byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	d.waitLog("connection", 3)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	d.waitLog("\"reloaded after SIGHUP\"", 1)
	for range 2 {
		if _, err := exchange(d.addr(), []byte("b")); err != nil {
			t.Fatal(err)
		}
	}
	d.waitLog("connection", 5)
	d.signal(syscall.SIGTERM)
	d.exit(10 * time.Second)
	// A line is written once the daemon ended the session, which may be
	// after the client saw the end and began the next: compare as sets.
	if got := sortedLines(t, logPath+".1"); got != "1 ok|2 ok|3 ok" {
		t.Errorf("rotated log %q; want 1 ok|2 ok|3 ok", got)
	}
	if got := sortedLines(t, logPath); got != "4 ok|5 ok" {
		t.Errorf("new log %q; want 4 ok|5 ok", got)
	}
}

// TestStopDrainsThenAborts: SIGTERM stops listening and waits; the second
// SIGTERM aborts what remains, and every connection still gets its line.
func TestStopDrainsThenAborts(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "conn.log")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-c", logPath, "-C", "%N %x%n")
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", d.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		conns = append(conns, c)
	}
	d.signal(syscall.SIGTERM)
	d.waitLog("stopping", 1)
	conns[0].(*net.TCPConn).CloseWrite()
	io.ReadAll(conns[0])
	d.waitLog("connection", 1)
	d.signal(syscall.SIGTERM)
	if code := d.exit(10 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	for _, c := range conns[1:] {
		if _, err := io.ReadAll(c); err == nil {
			t.Errorf("aborted connection ended cleanly; want a reset")
		}
	}
	if got := strings.Join(readLines(t, logPath), "|"); got != "1 ok|2 aborted|3 aborted" && got != "1 ok|3 aborted|2 aborted" {
		t.Errorf("log %q; want 1 ok, then 2 and 3 aborted", got)
	}
}

// TestDrainTimeout: --drain-timeout ends the wait by itself.
func TestDrainTimeout(t *testing.T) {
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "--drain-timeout", "500ms")
	c, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	d.signal(syscall.SIGTERM)
	if code := d.exit(10 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	if l := d.logLines("connection"); len(l) != 1 || !strings.Contains(l[0], "outcome=aborted") {
		t.Errorf("connection lines %q; want one, aborted", l)
	}
}

// TestListenFailure: a port in use exits 1 with the reason.
func TestListenFailure(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	out, err := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v; want status 1", err)
	}
	if want := fmt.Sprintf("ipprotd: -p/--listen: listen tcp 127.0.0.1:%d: bind: address already in use\n", port); !strings.HasSuffix(string(out), want) {
		t.Errorf("output %q; want it to end with %q", out, want)
	}
}

// TestUsageErrorBinary: the real binary exits 2 with one line and starts
// nothing (no log file, no data folder is created).
func TestUsageErrorBinary(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(binary, "-c", dir+"/conn.log", "-C", "%s %y", "-f", dir+"/data/prot").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v; want status 2", err)
	}
	if want := "ipprotd: -C/--conn-log-format: unknown expression \"%y\" at byte 3\n"; string(out) != want {
		t.Errorf("output %q; want %q", out, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("bad usage created %v", entries)
	}
}

// TestEMFILE: with a hard limit of 64 descriptors, a burst of connections
// exhausts them; the accept loop backs off, and once the burst is gone the
// daemon serves again.
func TestEMFILE(t *testing.T) {
	testkit.Need(t, "prlimit")
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	d := startCommand(t, port, exec.Command("prlimit", "--nofile=64:64", binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-P", up.out()))
	var conns []net.Conn
	for range 80 {
		c, err := net.DialTimeout("tcp", d.addr(), 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	d.waitLog("\"accept failed, retrying\"", 1)
	for _, c := range conns {
		c.Close()
	}
	// The daemon recovers: a new connection goes through.
	var got []byte
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if got, err = exchange(d.addr(), []byte("after")); err == nil && string(got) == "after" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got) != "after" {
		t.Fatalf("no echo after the burst: %q %v\n%s", got, err, d.stderr)
	}
	if !strings.Contains(d.stderr.String(), "too many open files") {
		t.Errorf("the log does not name EMFILE:\n%s", d.stderr)
	}
	d.signal(syscall.SIGTERM)
	if code := d.exit(20 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
}
