package e2e

import (
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// isoLayout is the time format of -uT's $6/$7, %s/%e and the -t lines.
const isoLayout = "2006-01-02 15:04:05-07:00"

// writeScript writes an executable shell script and returns its path.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// echoOnce sends msg through the daemon to an echo server, half-closes, and
// returns the client's local port after checking the echo.
func echoOnce(t *testing.T, addr string, msg []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
	return c.LocalAddr().(*net.TCPAddr).Port
}

// TestPostCmdParameters: -u gets five positional parameters and -uT nine,
// exactly as SPEC §5 lists them, and both the IPPROT_* environment; the
// data file is complete when the command runs (gzip -t/bzip2 -t pass inside
// it). -uT runs in a zone west of UTC, so the offset's sign shows.
func TestPostCmdParameters(t *testing.T) {
	testkit.Need(t, "gzip", "bzip2")
	tests := []struct {
		name   string
		opt    string
		flags  []string
		test   string // the integrity test run inside the hook
		suffix string
		tz     string
	}{
		{"u", "-u", []string{"-L", "-z"}, "gzip -t", ".gz", "UTC"},
		{"uT", "-uT", []string{"-l", "-j"}, "bzip2 -t", ".bz2", "America/New_York"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := time.LoadLocation(tt.tz)
			if err != nil {
				t.Skipf("no zone %s: %v", tt.tz, err)
			}
			dir := t.TempDir()
			h := newHook(t, fmt.Sprintf(`%s "$1" && echo integrity=ok`, tt.test))
			up := startUpstream(t, echoHandler)
			args := append([]string{"-P", up.out(), "-f", dir + "/prot", tt.opt, h.path}, tt.flags...)
			d := startDaemonEnv(t, []string{"TZ=" + tt.tz}, args...)

			before := time.Now().Truncate(time.Second)
			msg := []byte("SELECT 'parameters';\n")
			port := echoOnce(t, d.addr(), msg)
			runs := h.waitRuns(t, 1)
			after := time.Now()
			d.stop()

			files := dataFiles(t, dir+"/prot")
			if len(files) != 1 || !strings.HasSuffix(files[0], "_1_127.0.0.1"+tt.suffix) {
				t.Fatalf("data files %v; want one ..._1_127.0.0.1%s", files, tt.suffix)
			}
			if len(runs) != 1 {
				t.Fatalf("runs %v; want one, for connection 1", sortedKeys(runs))
			}
			r := runs[1]
			n := strconv.Itoa(len(msg))
			want := []string{files[0], "127.0.0.1", strconv.Itoa(port), "127.0.0.1", strconv.Itoa(up.port)}
			if tt.opt == "-uT" {
				if len(r.args) != 9 {
					t.Fatalf("-uT args %q; want 9", r.args)
				}
				want = append(want, r.args[5], r.args[6], n, n)
				checkTimes(t, r.args[5], r.args[6], loc, before, after)
			}
			if got, w := strings.Join(r.args, "|"), strings.Join(want, "|"); got != w {
				t.Errorf("args\n got %s\nwant %s", got, w)
			}
			wantEnv := map[string]string{
				"IPPROT_FILE": want[0], "IPPROT_CLIENT_IP": want[1], "IPPROT_CLIENT_PORT": want[2],
				"IPPROT_OUT_HOST": want[3], "IPPROT_OUT_PORT": want[4],
				"IPPROT_BYTES_IN": n, "IPPROT_BYTES_OUT": n, "IPPROT_OUTCOME": "ok", "IPPROT_CONN": "1",
				"IPPROT_START": r.env["IPPROT_START"], "IPPROT_END": r.env["IPPROT_END"],
				"IPPROT_SHA256": fileSHA256(t, files[0]),
			}
			if tt.opt == "-uT" {
				wantEnv["IPPROT_START"], wantEnv["IPPROT_END"] = r.args[5], r.args[6]
			} else {
				checkTimes(t, r.env["IPPROT_START"], r.env["IPPROT_END"], loc, before, after)
			}
			if got, w := fmt.Sprint(r.env), fmt.Sprint(wantEnv); got != w {
				t.Errorf("environment\n got %s\nwant %s", got, w)
			}
			if got := strings.Join(r.extra, "|"); got != "integrity=ok" {
				t.Errorf("%s inside the hook: %q; want integrity=ok", tt.test, got)
			}
		})
	}
}

// checkTimes checks a start and an end in the -uT format: in the daemon's
// zone with its offset, start ≤ end, both within the test's window.
func checkTimes(t *testing.T, start, end string, loc *time.Location, before, after time.Time) {
	t.Helper()
	var ts [2]time.Time
	for i, s := range []string{start, end} {
		tm, err := time.Parse(isoLayout, s)
		if err != nil {
			t.Errorf("time %q: %v", s, err)
			return
		}
		if want := tm.In(loc).Format(isoLayout); s != want {
			t.Errorf("time %q; want %q (the zone's offset)", s, want)
		}
		if tm.Before(before) || tm.After(after) {
			t.Errorf("time %s outside the test's window [%s, %s]", s, before.Format(isoLayout), after.Format(isoLayout))
		}
		ts[i] = tm
	}
	if ts[1].Before(ts[0]) {
		t.Errorf("end %s before start %s", end, start)
	}
}

// TestPostCmdHundredConnections: 100 quick connections, 10 at a time, give
// exactly 100 runs, one per connection number; each run's background child
// dies with its process group; afterwards the daemon has no child left,
// zombie or not.
func TestPostCmdHundredConnections(t *testing.T) {
	dir := t.TempDir()
	h := newHook(t, `echo "pgid=$$"; sleep 30 </dev/null >/dev/null 2>&1 &`)
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", h.path)

	const n, workers = 100, 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	for range workers {
		wg.Add(1)
		go quickExchanges(d.addr(), jobs, errs, &wg)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	runs := h.waitRuns(t, n)
	exits := d.waitLog(`"post-cmd exited"`, n)

	if len(runs) != n || sortedKeys(runs)[0] != 1 || sortedKeys(runs)[n-1] != n {
		t.Errorf("runs for connections %v; want 1..%d", sortedKeys(runs), n)
	}
	if len(exits) != n {
		t.Errorf("%d post-cmd exited lines; want %d", len(exits), n)
	}
	for _, l := range exits {
		if !strings.Contains(l, " status=0 ") {
			t.Errorf("hook failed: %s", l)
		}
	}
	files := map[string]bool{}
	for _, r := range runs {
		files[r.args[0]] = true
	}
	if len(files) != n {
		t.Errorf("%d distinct files among the runs; want %d", len(files), n)
	}
	if kids := childrenOf(t, d.pid()); len(kids) != 0 {
		t.Errorf("the daemon still has children after every run ended: %+v", kids)
	}
	for _, k := range sortedKeys(runs) {
		pgid, _ := strconv.Atoi(strings.TrimPrefix(runs[k].extra[0], "pgid="))
		for _, p := range groupMembers(t, pgid) {
			if p.state != 'Z' {
				t.Errorf("run %d left process %d (state %c) in its group", k, p.pid, p.state)
			}
		}
	}
	d.stop()
}

// quickExchanges does one short echo exchange per job.
func quickExchanges(addr string, jobs <-chan int, errs chan<- error, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := range jobs {
		msg := []byte(fmt.Sprintf("connection %d\n", i))
		got, err := exchange(addr, msg)
		if err != nil || string(got) != string(msg) {
			errs <- fmt.Errorf("exchange %d: got %q, %v; want %q", i, got, err, msg)
		}
	}
}

// TestPostTimeout: a hook that sleeps for ever is ended by --post-timeout
// with its whole process group; its output is in the daemon's log; the
// daemon serves on and the next run works.
func TestPostTimeout(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, fmt.Sprintf(`echo "started $IPPROT_CONN"
echo $$ > %s/pgid.$IPPROT_CONN
[ "$IPPROT_CONN" = 1 ] || exit 0
sleep 600 &
sleep 600
`, dir))
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook, "--post-timeout", "1s")

	echoOnce(t, d.addr(), []byte("one"))
	exits := d.waitLog(`"post-cmd exited"`, 1)
	if l := exits[0]; !strings.Contains(l, " conn=1 ") || !strings.Contains(l, " signal=terminated ") || !strings.Contains(l, " reason=timeout ") {
		t.Errorf("exit line %q; want conn=1 ended by SIGTERM for the timeout", l)
	}
	pgid := pidOf(t, dir+"/pgid.1")
	for _, p := range groupMembers(t, pgid) {
		if p.state != 'Z' {
			t.Errorf("process %d (state %c) of the timed-out hook still runs", p.pid, p.state)
		}
	}
	if out := d.logLines(`"post-cmd output"`); len(out) != 1 || !strings.Contains(out[0], ` conn=1 stream=stdout line="started 1"`) {
		t.Errorf("output lines %q; want the hook's \"started 1\" with conn=1", out)
	}

	echoOnce(t, d.addr(), []byte("two"))
	exits = d.waitLog(`"post-cmd exited"`, 2)
	if l := exits[1]; !strings.Contains(l, " conn=2 status=0 ") {
		t.Errorf("second exit line %q; want conn=2 status=0", l)
	}
	if kids := childrenOf(t, d.pid()); len(kids) != 0 {
		t.Errorf("children left: %+v", kids)
	}
	d.stop()
}

// TestStopRunsQueuedHooks: SIGTERM while hooks are queued (--post-jobs 1,
// each hook held at a gate the test opens) lets every one of them run, in
// order, before the daemon exits 0.
func TestStopRunsQueuedHooks(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	done := filepath.Join(dir, "done")
	hook := writeScript(t, fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done
echo "$IPPROT_CONN" >> %s
`, gate, done))
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook, "--post-jobs", "1", "-c", dir+"/conn.log", "-C", "%N %x%n")
	const n = 5
	for i := range n {
		echoOnce(t, d.addr(), []byte(fmt.Sprintf("c%d", i)))
		waitLines(t, dir+"/conn.log", i+1) // queued in this order
	}
	waitLines(t, dir+"/conn.log", n)
	d.signal(syscall.SIGTERM)
	d.waitLog("stopping", 1)
	// Every connection has ended; the daemon waits for the commands.
	if !alive(d.pid()) {
		t.Fatal("the daemon exited with 5 hooks still queued")
	}
	if _, err := os.Stat(done); !os.IsNotExist(err) {
		t.Fatalf("a hook passed the closed gate (%v)", err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := d.exit(60 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	if got := strings.Join(readLines(t, done), " "); got != "1 2 3 4 5" {
		t.Errorf("hooks ran for %q; want 1 2 3 4 5", got)
	}
	if got := len(d.logLines(`"post-cmd exited"`)); got != n {
		t.Errorf("%d exit lines; want %d", got, n)
	}
}

// TestHangingHook: a hook that never ends, without --post-timeout, blocks
// neither the accept loop nor the other runs (--post-jobs 2); SIGTERM waits
// for it, and a second SIGTERM ends it with its process group, and the
// daemon exits 0.
func TestHangingHook(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, fmt.Sprintf(`echo $$ > %[1]s/pgid.$IPPROT_CONN
[ "$IPPROT_CONN" = 1 ] && sleep 600
echo "$IPPROT_CONN" >> %[1]s/done
`, dir))
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook, "--post-jobs", "2")
	echoOnce(t, d.addr(), []byte("hangs"))
	waitFileExists(t, dir+"/pgid.1")
	for i := range 5 {
		echoOnce(t, d.addr(), []byte(fmt.Sprintf("after %d", i)))
	}
	d.waitLog(`"post-cmd exited"`, 5)
	waitLines(t, dir+"/done", 5)
	if got := sortedLines(t, dir+"/done"); got != "2|3|4|5|6" {
		t.Errorf("runs done %q; want 2|3|4|5|6 while 1 hangs", got)
	}
	d.signal(syscall.SIGTERM)
	d.waitLog("stopping", 1)
	if !alive(d.pid()) {
		t.Fatal("the daemon exited without waiting for the hanging hook")
	}
	d.signal(syscall.SIGTERM)
	if code := d.exit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	exits := d.logLines(`"post-cmd exited"`)
	if len(exits) != 6 || !strings.Contains(exits[5], " conn=1 ") || !strings.Contains(exits[5], " signal=terminated ") {
		t.Errorf("exit lines %q; want the sixth for conn=1, ended by SIGTERM", exits)
	}
	pgid := pidOf(t, dir+"/pgid.1")
	for _, p := range groupMembers(t, pgid) {
		if p.state != 'Z' {
			t.Errorf("process %d (state %c) of the hanging hook survived the daemon", p.pid, p.state)
		}
	}
}

// waitFileExists waits until path exists.
func waitFileExists(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 30 s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopRunsQueuedHooksDetached: the same with -Dp, the manual's way:
// the detached daemon, stopped with kill `cat pidfile`, runs every queued
// hook before it exits and removes its pid file.
func TestStopRunsQueuedHooksDetached(t *testing.T) {
	dir := t.TempDir()
	gate, done := filepath.Join(dir, "gate"), filepath.Join(dir, "done")
	hook := writeScript(t, fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.05; done
echo "$IPPROT_CONN" >> %s
`, gate, done))
	up := startUpstream(t, echoHandler)
	port := testkit.FreePort(t)
	pidFile, logFile := filepath.Join(dir, "pid"), filepath.Join(dir, "daemon.log")
	cmd := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-P", up.out(), "-f", dir+"/prot",
		"-u", hook, "--post-jobs", "1", "-c", dir+"/conn.log", "-C", "%N %x%n", "--log-file", logFile, "-Dp", pidFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	pid := pidOf(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	const n = 3
	for i := range n {
		echoOnce(t, fmt.Sprintf("127.0.0.1:%d", port), []byte(fmt.Sprintf("c%d", i)))
		waitLines(t, dir+"/conn.log", i+1) // queued in this order
	}
	waitLines(t, dir+"/conn.log", n)
	if out, err := exec.Command("sh", "-c", "kill `cat "+pidFile+"`").CombinedOutput(); err != nil {
		t.Fatalf("kill: %v %s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logFile); strings.Contains(string(b), " msg=stopping ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no stopping line within 30 s")
		}
	}
	if !alive(pid) {
		t.Fatal("the daemon exited with hooks still queued")
	}
	if _, err := os.Stat(done); !os.IsNotExist(err) {
		t.Fatalf("a hook passed the closed gate (%v)", err)
	}
	os.WriteFile(gate, nil, 0o644)
	waitGone(t, pid, 60*time.Second)
	if got := strings.Join(readLines(t, done), " "); got != "1 2 3" {
		t.Errorf("hooks ran for %q; want 1 2 3", got)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind (%v)", err)
	}
}

// TestHookGoneAtRun: a hook that was there at start and is removed later
// fails per run, with its exit status and the shell's message in the log;
// the daemon serves on.
func TestHookGoneAtRun(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, "exit 0\n")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-f", dir+"/prot", "-u", hook)
	if err := os.Remove(hook); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		echoOnce(t, d.addr(), []byte("x"))
		exits := d.waitLog(`"post-cmd exited"`, i)
		if l := exits[i-1]; !strings.Contains(l, fmt.Sprintf(" conn=%d status=127 ", i)) || !strings.Contains(l, " file="+dir+"/prot_") {
			t.Errorf("exit line %q; want conn=%d status=127 with the file", l, i)
		}
	}
	out := d.logLines(`"post-cmd output"`)
	if len(out) != 2 || !strings.Contains(out[0], " conn=1 stream=stderr ") || !strings.Contains(out[0], "not found") {
		t.Errorf("output lines %q; want the shell's \"not found\" on stderr, once per run", out)
	}
	d.stop()
}
