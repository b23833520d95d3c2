package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

// The tests of this file are the findings of a hostile reading of the
// daemon: each failed before its fix (docs/reliability.md lists them).

// TestSlowHookStopBounded: a hook slower than the connections fills the
// queue; runs beyond --post-queue are not made and are named, the stop
// ends within --drain-timeout (plus the grace of the running hook), and
// every run not made is named. A full queue once blocked the end of every
// session, and with it the stop: the daemon did not end at all.
func TestSlowHookStopBounded(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, "exec sleep 400\n")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook,
		"--post-jobs", "1", "--post-queue", "5", "--drain-timeout", "2s")
	const n = 20
	for i := range n {
		if got, err := exchange(d.addr(), []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("connection %d: %q, %v", i+1, got, err)
		}
	}
	d.waitLog("connection", n)
	d.signal(syscall.SIGTERM)
	if code := d.exit(60 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	notRun := d.logLines(`"post-cmd not run"`)
	full, deadline := 0, 0
	for _, l := range notRun {
		switch {
		case strings.Contains(l, "queue full"):
			full++
		case strings.Contains(l, "shutdown deadline passed"):
			deadline++
		}
		if !strings.Contains(l, " file="+dir+"/prot_") {
			t.Errorf("line %q does not name the data file", l)
		}
	}
	// One ran (and was ended), five waited, fourteen found the queue full.
	if full != n-6 || deadline != 5 {
		t.Errorf("%d runs refused as the queue was full, %d not run at the stop; want %d and 5:\n%s", full, deadline, n-6, strings.Join(notRun, "\n"))
	}
	if l := d.logLines(`"post-cmd exited"`); len(l) != 1 || !strings.Contains(l[0], "signal=terminated") {
		t.Errorf("exit lines %q; want the one running hook ended", l)
	}
}

// TestHookStartRetried: hooks that cannot start for want of descriptors
// are started again once descriptors are free, instead of being dropped
// for good (6 of 13 once never ran).
func TestHookStartRetried(t *testing.T) {
	testkit.Need(t, "prlimit")
	dir := t.TempDir()
	hook := writeScript(t, fmt.Sprintf(": > %s/ran.$IPPROT_CONN\n", dir))
	up := startUpstream(t, echoHandler)
	const limit = 48
	port := testkit.FreePort(t)
	d := startCommand(t, port, exec.Command("prlimit", fmt.Sprintf("--nofile=%d:%d", limit, limit), binary,
		"-p", fmt.Sprintf("%d@127.0.0.1", port), "-P", up.out(), "-f", dir+"/prot", "-u", hook))
	// Hold sessions until a short one still has room (3 descriptors: its
	// two sockets and its file) but a hook does not (about 7: /dev/null,
	// two pipes, exec's own pipe).
	free := limit - openFDs(t, d.pid())
	var held []net.Conn
	for free-3*len(held) > 5 {
		c, err := net.Dial("tcp", d.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("h"))
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Short connections, each of which ends at once and wants its hook.
	// A retrying hook takes descriptors for a moment at each try, so a
	// connection may meet none left: it is refused, and then has no data
	// file and no hook, or its recording fails, and it has both.
	for range 5 {
		exchange(d.addr(), []byte("s"))
	}
	d.waitLog(`"post-cmd cannot start yet, retrying"`, 1)
	for _, c := range held {
		c.Close()
	}
	d.stop()
	files, _ := filepath.Glob(dir + "/prot_*")
	ran, _ := filepath.Glob(dir + "/ran.*")
	if len(files) < len(held)+1 || len(ran) != len(files) {
		t.Errorf("%d hooks ran for %d data files; want one each:\n%s", len(ran), len(files), d.stderr)
	}
	if l := d.logLines(`"post-cmd not run"`); len(l) != 0 {
		t.Errorf("runs not made: %q", l)
	}
}

// openFDs counts the descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestSighupOntoFIFO: a FIFO put at the connection log's path does not
// hang SIGHUP (its open waited for a reader, on the goroutine that must see
// SIGTERM: the daemon could not be stopped); the reopen is refused, the old
// file stays in use, and SIGTERM stops the daemon. At start, a FIFO there
// is a usage error.
func TestSighupOntoFIFO(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "conn.log")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-c", logPath, "-C", "%N %x%n")
	if _, err := exchange(d.addr(), []byte("a")); err != nil {
		t.Fatal(err)
	}
	d.waitLog("connection", 1)
	os.Rename(logPath, logPath+".1")
	if err := syscall.Mkfifo(logPath, 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	if l := d.waitLog(`"reload after SIGHUP failed; the previous one stays in use"`, 1); !strings.Contains(l[0], "not a regular file") && !strings.Contains(l[0], "no such device or address") {
		t.Errorf("reopen error %q; want the FIFO refused", l[0])
	}
	if _, err := exchange(d.addr(), []byte("b")); err != nil {
		t.Fatal(err)
	}
	d.waitLog("connection", 2)
	d.signal(syscall.SIGTERM)
	if code := d.exit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	if got := strings.Join(readLines(t, logPath+".1"), "|"); got != "1 ok|2 ok" {
		t.Errorf("log %q; want both lines in the file still in use", got)
	}

	out, err := exec.Command(binary, "-p", "1@127.0.0.1", "-c", logPath).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "-c/--conn-log:") {
		t.Errorf("start with a FIFO as -c: %v, %q; want exit 2 naming -c", err, out)
	}
}

// TestSecondSignalEndsEverything: with an open connection and a hook that
// hangs, the second SIGTERM ends both and the daemon exits (it once waited
// for a third).
func TestSecondSignalEndsEverything(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, fmt.Sprintf(": > %s/started.$IPPROT_CONN; exec sleep 400\n", dir))
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook)
	if _, err := exchange(d.addr(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	waitFileExists(t, dir+"/started.1")
	c, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("open"))
	c.Read(make([]byte, 4))
	d.signal(syscall.SIGTERM)
	d.waitLog("stopping", 1)
	d.signal(syscall.SIGTERM)
	if code := d.exit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	if l := d.logLines("connection"); len(l) != 2 || !strings.Contains(l[1], "outcome=aborted") {
		t.Errorf("connection lines %q; want the open one aborted", l)
	}
}

// TestInheritedDescriptorsClosed: a descriptor the daemon inherited (a
// shell's exec 7>file) does not reach the hooks of a daemon in the
// foreground (it once did; only -D closed them).
func TestInheritedDescriptorsClosed(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, fmt.Sprintf("ls /proc/$$/fd > %s/fds.$IPPROT_CONN\n", dir))
	up := startUpstream(t, echoHandler)
	stray, err := os.Create(filepath.Join(dir, "stray"))
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	port := testkit.FreePort(t)
	cmd := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-P", up.out(), "-f", dir+"/prot", "-u", hook)
	cmd.ExtraFiles = []*os.File{stray, w} // descriptors 3 and 4
	d := startCommand(t, port, cmd)
	if _, err := exchange(d.addr(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFileExists(t, dir+"/fds.1")
	d.stop()
	b, err := os.ReadFile(dir + "/fds.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		if n, _ := strconv.Atoi(f); n == 3 || n == 4 {
			t.Errorf("the hook has descriptor %d the daemon inherited (its descriptors: %s)", n, strings.Fields(string(b)))
		}
	}
}

// TestDetachedDaemonInRoot: a detached daemon changes to / (it kept the
// folder it was started in busy); a relative -u command still runs.
func TestDetachedDaemonInRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.sh"), []byte("#!/bin/sh\n: > \"$1.ran\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	cmd := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-P", up.out(), "-f", "rec/prot",
		"-u", "./hook.sh", "--log-file", "daemon.log", "-Dp", "run/pid")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("-Dp: %v\n%s", err, out)
	}
	pid := pidOf(t, dir+"/run/pid")
	defer syscall.Kill(pid, syscall.SIGKILL)
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != "/" {
		t.Errorf("the daemon's working folder is %q, %v; want /", cwd, err)
	}
	if _, err := exchange(fmt.Sprintf("127.0.0.1:%d", port), []byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ran, _ := filepath.Glob(dir + "/rec/prot_*.ran"); len(ran) == 1 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(dir + "/daemon.log")
			t.Fatalf("the relative hook did not run:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	waitGone(t, pid, 30*time.Second)
}

// TestListenFailureLeavesNothing: the manual's first example with an
// address that cannot be bound exits 1 and leaves no folder behind (an
// empty data folder once was).
func TestListenFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(binary, "-p", "5432@192.0.2.1", "-h", "127.0.0.1", "-P", "3333", "-l",
		"-f", dir+"/conn_rec/prot", "-z", "-c", dir+"/logs/conn.log", "-Dp", dir+"/run/ipprot_pid_5432").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "-p/--listen") {
		t.Fatalf("exit %v, %q; want status 1 naming -p", err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a daemon that could not listen left %v behind", entries)
	}
}

// TestDataFolderSymlinked: the data folder replaced by a symlink while the
// daemon runs is not followed (recordings once landed where it pointed):
// the session ends record-error, nothing is forwarded unrecorded, and
// nothing lands in the symlink's target.
func TestDataFolderSymlinked(t *testing.T) {
	dd := t.TempDir()
	elsewhere := filepath.Join(dd, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-l", "-f", dd+"/data/prot", "-c", dd+"/conn.log", "-C", "%N %x%n")
	if _, err := exchange(d.addr(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitLines(t, dd+"/conn.log", 1)
	os.RemoveAll(dd + "/data")
	if err := os.Symlink(elsewhere, dd+"/data"); err != nil {
		t.Fatal(err)
	}
	if got, err := exchange(d.addr(), []byte("after")); err == nil && len(got) > 0 {
		t.Errorf("the client got %q through a session that could not be recorded", got)
	}
	lines := waitLines(t, dd+"/conn.log", 2)
	d.stop()
	if lines[1] != "2 record-error" {
		t.Errorf("line %q; want 2 record-error", lines[1])
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("recordings landed where the symlink points: %v", entries)
	}
	if l := d.logLines("connection"); len(l) != 2 || !strings.Contains(l[1], "symlink") {
		t.Errorf("daemon log %q; want the symlink named", l)
	}
}

// TestRejectedFlood: a client outside the allow-list connecting in a loop
// gets a connection-log line per connection, but the daemon's log does not
// grow with each (20,000 rejections once wrote 3.6 MB to it).
func TestRejectedFlood(t *testing.T) {
	dir := t.TempDir()
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-r", "10.0.0.0/8", "-c", dir+"/conn.log")
	const n = 2000
	for range n {
		if c, err := net.Dial("tcp", d.addr()); err == nil {
			c.Read(make([]byte, 1))
			c.Close()
		}
	}
	waitLines(t, dir+"/conn.log", n)
	d.stop()
	log := d.stderr.String()
	conn, _ := os.Stat(dir + "/conn.log")
	rejected := strings.Count(log, "outcome=rejected")
	t.Logf("%d rejected connections: connection log %d bytes, daemon log %d bytes (%d lines about them)", n, conn.Size(), len(log), rejected)
	if rejected > 3 {
		t.Errorf("%d daemon log lines about %d rejections from one address; want one per 10 s", rejected, n)
	}
}
