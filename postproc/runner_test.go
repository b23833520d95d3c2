package postproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ipprot/ipprot/proxy"
)

// children returns the processes whose parent is this test process.
func children(t *testing.T) []procStat {
	t.Helper()
	var kids []procStat
	for _, p := range processes(t) {
		if p.ppid == os.Getpid() {
			kids = append(kids, p)
		}
	}
	return kids
}

func TestHundredRunsNoZombie(t *testing.T) {
	dir := t.TempDir()
	// Each run leaves a marker and a background child that outlives it.
	hook := writeHook(t, dir, "hook", `: > "${0%/*}/ran.$IPPROT_CONN"; sleep 1000 &`+"\n")
	r, log := newRunner(t, Config{Command: quote(hook)})
	for n := uint64(1); n <= 100; n++ {
		r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	ran, err := filepath.Glob(filepath.Join(dir, "ran.*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 100 {
		t.Errorf("got %d runs; want 100", len(ran))
	}
	for n := uint64(1); n <= 100; n++ {
		if !exists(filepath.Join(dir, "ran."+itoa(n))) {
			t.Errorf("connection %d: no run", n)
		}
		want := fmt.Sprintf(`level=INFO msg="post-cmd exited" conn=%d status=0 duration=0s`, n)
		if got := log.lines(want); len(got) != 1 {
			t.Errorf("got %d lines %q; want 1", len(got), want)
		}
	}
	for _, p := range children(t) {
		if p.state == "Z" {
			t.Errorf("process %d is a zombie child", p.pid)
		} else {
			t.Errorf("process %d (state %s) is a child still running", p.pid, p.state)
		}
	}
}

// barrierHook counts the commands running at once in the file count, under
// flock, and logs each start with that count. Each waits until $1 commands
// ran at once, for 20 s at most so that a runner starting fewer makes the
// test fail instead of hang.
const barrierHook = `d=${0%/*}
jobs=$1
exec 9>>"$d/lock"
flock 9
n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$d/count"
echo "$IPPROT_CONN $n" >> "$d/starts"
[ $n -ge $jobs ] && : > "$d/reached"
flock -u 9
i=0
while [ ! -e "$d/reached" ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done
flock 9
echo $(( $(cat "$d/count") - 1 )) > "$d/count"
flock -u 9
`

func TestJobsLimit(t *testing.T) {
	for _, jobs := range []int{1, 3} {
		t.Run(strconv.Itoa(jobs), func(t *testing.T) {
			dir := t.TempDir()
			hook := writeHook(t, dir, "hook", barrierHook)
			r, _ := newRunner(t, Config{Command: quote(hook) + " " + strconv.Itoa(jobs), Jobs: jobs})
			const runs = 12
			for n := uint64(1); n <= runs; n++ {
				r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
			}
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "starts"))
			if err != nil {
				t.Fatal(err)
			}
			var conns []int
			most := 0
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var conn, n int
				if _, err := fmt.Sscan(line, &conn, &n); err != nil {
					t.Fatalf("starts line %q: %v", line, err)
				}
				conns = append(conns, conn)
				most = max(most, n)
			}
			if most != jobs {
				t.Errorf("got at most %d commands at once; want %d", most, jobs)
			}
			slices.Sort(conns)
			if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}; !slices.Equal(conns, want) {
				t.Errorf("got starts of connections %v; want %v", conns, want)
			}
		})
	}
}

func TestFIFO(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", `echo $IPPROT_CONN >> "${0%/*}/order"`+"\n")
	r, _ := newRunner(t, Config{Command: quote(hook), Jobs: 1})
	var want strings.Builder
	for n := uint64(1); n <= 20; n++ {
		r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
		fmt.Fprintln(&want, n)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want.String() {
		t.Errorf("got start order %q; want %q", b, want.String())
	}
}

// forever starts a grandchild that ignores SIGTERM, writes the pids and the
// process group, and sleeps for ever.
const forever = `d=${0%/*}
sh -c 'trap "" TERM; exec sleep 1000' &
echo $! > "$d/grandchild"
read -r _ _ _ _ pgid _ < /proc/$$/stat
echo $pgid > "$d/pgid"
sleep 1000
`

func TestTimeoutEndsGroup(t *testing.T) {
	cases := []struct {
		name    string
		command func(hook string) string
		want    string // the exit line after the file
	}{
		// SIGTERM ends the shell; the group is swept at once.
		{"sleeps", func(hook string) string { return quote(hook) },
			`level=WARN msg="post-cmd exited" conn=1 status=-1 signal=terminated reason=timeout duration=0s file=`},
		// The whole group ignores SIGTERM: SIGKILL after Grace.
		{"ignores TERM", func(hook string) string { return "trap '' TERM; " + quote(hook) },
			`level=WARN msg="post-cmd exited" conn=1 status=-1 signal=killed reason=timeout duration=0s file=`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			hook := writeHook(t, dir, "hook", forever)
			r, log := newRunner(t, Config{Command: c.command(hook), Timeout: time.Second, Grace: 300 * time.Millisecond})
			file := filepath.Join(dir, "data")
			r.Enqueue(facts(t, 1, file))
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if got, want := log.String(), c.want+file+"\n"; got != want {
				t.Errorf("got log %q; want %q", got, want)
			}
			grandchild := readInt(t, filepath.Join(dir, "grandchild"))
			pgid := readInt(t, filepath.Join(dir, "pgid"))
			// SIGKILL is delivered, not awaited: give the kernel its moment.
			waitFor(t, "the grandchild to die", func() bool { return !alive(grandchild) })
			waitFor(t, "the process group to be gone", func() bool {
				for _, p := range processes(t) {
					if p.pgrp == pgid && alive(p.pid) {
						return false
					}
				}
				return true
			})
		})
	}
}

// gateHook marks its start and waits for the file release, 20 s at most.
const gateHook = `d=${0%/*}
: > "$d/started.$IPPROT_CONN"
echo $IPPROT_CONN >> "$d/order"
i=0
while [ ! -e "$d/release" ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done
: > "$d/ran.$IPPROT_CONN"
`

func TestShutdownRunsQueued(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", `sleep 0.1; : > "${0%/*}/ran.$IPPROT_CONN"`+"\n")
	r, _ := newRunner(t, Config{Command: quote(hook), Jobs: 2})
	for n := uint64(1); n <= 20; n++ {
		r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for n := uint64(1); n <= 20; n++ {
		if !exists(filepath.Join(dir, "ran."+itoa(n))) {
			t.Errorf("connection %d: not run before Shutdown returned", n)
		}
	}
}

func TestEnqueueDuringShutdown(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", gateHook)
	r, log := newRunner(t, Config{Command: quote(hook), Jobs: 2})
	r.Enqueue(facts(t, 1, filepath.Join(dir, "data.1")))

	done := make(chan error)
	go shutdownTo(r, context.Background(), done)
	waitFor(t, "Shutdown to begin", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.draining
	})
	// Sessions that end during the drain are still run.
	for n := uint64(2); n <= 6; n++ {
		r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for n := uint64(1); n <= 6; n++ {
		if !exists(filepath.Join(dir, "ran."+itoa(n))) {
			t.Errorf("connection %d: not run", n)
		}
	}

	// Once Shutdown returned, nothing more runs, and the operator is told.
	file := filepath.Join(dir, "data.7")
	r.Enqueue(facts(t, 7, file))
	want := `level=ERROR msg="post-cmd not run" conn=7 file=` + file + ` reason="post-processing stopped"`
	if got := log.lines("conn=7"); !slices.Equal(got, []string{want}) {
		t.Errorf("got %q; want %q", got, want)
	}
}

func shutdownTo(r *Runner, ctx context.Context, done chan<- error) {
	done <- r.Shutdown(ctx)
}

func TestShutdownDeadline(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", `: > "${0%/*}/started.$IPPROT_CONN"; sleep 1000`+"\n")
	r, log := newRunner(t, Config{Command: quote(hook), Jobs: 1, Grace: 300 * time.Millisecond})
	for n := uint64(1); n <= 6; n++ {
		r.Enqueue(facts(t, n, filepath.Join(dir, "data."+itoa(n))))
	}
	waitFor(t, "the first command to start", func() bool { return exists(filepath.Join(dir, "started.1")) })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: got %v; want %v", err, context.Canceled)
	}
	// Late sessions are not run either.
	r.Enqueue(facts(t, 7, filepath.Join(dir, "data.7")))

	want := []string{
		`level=WARN msg="post-cmd exited" conn=1 status=-1 signal=terminated reason=shutdown duration=0s file=` + dir + `/data.1`,
	}
	for n := 2; n <= 7; n++ {
		want = append(want, fmt.Sprintf(`level=ERROR msg="post-cmd not run" conn=%d file=%s/data.%d reason="shutdown deadline passed"`, n, dir, n))
	}
	got := log.lines()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got log\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for n := 2; n <= 7; n++ {
		if exists(filepath.Join(dir, "started."+strconv.Itoa(n))) {
			t.Errorf("connection %d: started after Shutdown gave up", n)
		}
	}
	if kids := children(t); len(kids) != 0 {
		t.Errorf("got children %v; want none", kids)
	}
}

// TestQueueFull: runs beyond Jobs + Queue are not made, each logged with
// its file and counted, and Enqueue never waits (a hook slower than the
// connection rate once held up the end of every session and, with it, the
// stop: the daemon could not be stopped and its memory grew).
func TestQueueFull(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", gateHook)
	r, log := newRunner(t, Config{Command: quote(hook), Jobs: 1, Queue: 2})
	for n := uint64(1); n <= 6; n++ {
		done := make(chan struct{})
		go enqueueTo(r, facts(t, n, filepath.Join(dir, "data."+itoa(n))), done)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("Enqueue of connection %d did not return", n)
		}
		if n == 1 {
			waitFor(t, "the first run to start", func() bool { return exists(filepath.Join(dir, "started.1")) })
		}
	}
	for n := 4; n <= 6; n++ {
		want := []string{fmt.Sprintf(`level=ERROR msg="post-cmd not run" conn=%d file=%s/data.%d reason="queue full (2 waiting: --post-queue)"`, n, dir, n)}
		if got := log.lines("not run", fmt.Sprintf("conn=%d ", n)); !slices.Equal(got, want) {
			t.Errorf("got %q; want %q", got, want)
		}
	}
	if c := r.Counts(); c.NotRun != 3 || c.Queued != 2 {
		t.Errorf("counts %+v; want 3 not run, 2 queued", c)
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "1\n2\n3\n"; got != want {
		t.Errorf("got start order %q; want %q", got, want)
	}
	if c := r.Counts(); c.OK != 3 || c.Failed != 0 || c.NotRun != 3 || c.Queued != 0 {
		t.Errorf("counts %+v; want 3 ok, 3 not run", c)
	}
}

// TestQueueFullDeadline: a stop that gives up names every run not made.
func TestQueueFullDeadline(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", gateHook)
	r, log := newRunner(t, Config{Command: quote(hook), Jobs: 1, Queue: 1, Grace: 300 * time.Millisecond})
	r.Enqueue(facts(t, 1, filepath.Join(dir, "data.1")))
	r.Enqueue(facts(t, 2, filepath.Join(dir, "data.2")))
	r.Enqueue(facts(t, 3, filepath.Join(dir, "data.3"))) // over the queue
	waitFor(t, "the first run to start", func() bool { return exists(filepath.Join(dir, "started.1")) })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: got %v; want %v", err, context.Canceled)
	}
	for n, reason := range map[int]string{2: `"shutdown deadline passed"`, 3: `"queue full (1 waiting: --post-queue)"`} {
		want := []string{fmt.Sprintf(`level=ERROR msg="post-cmd not run" conn=%d file=%s/data.%d reason=%s`, n, dir, n, reason)}
		if got := log.lines("not run", fmt.Sprintf("conn=%d ", n)); !slices.Equal(got, want) {
			t.Errorf("got %q; want %q", got, want)
		}
	}
	if got := log.lines(`msg="post-cmd exited" conn=1 status=-1 signal=terminated reason=shutdown`); len(got) != 1 {
		t.Errorf("got %q; want the first command ended by the shutdown", got)
	}
}

// TestStartRetried: a command that cannot start for want of descriptors
// is started again with a back-off, and runs (such runs were once dropped
// for good); one that cannot start for another reason is not retried.
func TestStartRetried(t *testing.T) {
	dir := t.TempDir()
	r, log := newRunner(t, Config{Command: `: > "$1.ran"`})
	r.startRetry = 20 * time.Millisecond
	var tries atomic.Int32
	r.start = func(c *exec.Cmd) error {
		if tries.Add(1) <= 3 {
			return &os.PathError{Op: "fork/exec", Path: c.Path, Err: syscall.EMFILE}
		}
		return c.Start()
	}
	file := filepath.Join(dir, "data")
	r.Enqueue(facts(t, 9, file))
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !exists(file+".ran") || tries.Load() != 4 {
		t.Errorf("ran %v after %d tries; want a run after 4", exists(file+".ran"), tries.Load())
	}
	want := []string{`level=WARN msg="post-cmd cannot start yet, retrying" conn=9 err="fork/exec /bin/sh: too many open files"`}
	if got := log.lines("retrying"); !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
	if c := r.Counts(); c.OK != 1 || c.NotRun != 0 {
		t.Errorf("counts %+v; want 1 ok", c)
	}
}

// TestStartRetryGivesUpAtStop: a stop that gives up ends the retrying and
// names the run as not made.
func TestStartRetryGivesUpAtStop(t *testing.T) {
	dir := t.TempDir()
	r, log := newRunner(t, Config{Command: "true"})
	r.startRetry = 10 * time.Millisecond
	r.start = func(c *exec.Cmd) error { return &os.PathError{Op: "fork/exec", Path: c.Path, Err: syscall.EMFILE} }
	file := filepath.Join(dir, "data")
	r.Enqueue(facts(t, 3, file))
	waitFor(t, "a retry", func() bool { return len(log.lines("retrying")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: got %v; want the deadline", err)
	}
	want := []string{`level=ERROR msg="post-cmd not run" conn=3 file=` + file + ` reason="cannot start: fork/exec /bin/sh: too many open files; gave up: shutdown"`}
	if got := log.lines("not run"); !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
}

func enqueueTo(r *Runner, f *proxy.Facts, done chan<- struct{}) {
	r.Enqueue(f)
	close(done)
}

func TestOutputLogged(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", `echo "line one"
echo "to stderr" >&2
echo 'second "quoted" line'
printf 'crlf\r\n'
echo
echo "last of stderr" >&2
printf 'no newline'
exit 3
`)
	r, log := newRunner(t, Config{Command: quote(hook)})
	file := filepath.Join(dir, "data")
	r.Enqueue(facts(t, 5, file))
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The two streams are read side by side: their order is kept within
	// each.
	wantOut := []string{
		`level=INFO msg="post-cmd output" conn=5 stream=stdout line="line one"`,
		`level=INFO msg="post-cmd output" conn=5 stream=stdout line="second \"quoted\" line"`,
		`level=INFO msg="post-cmd output" conn=5 stream=stdout line=crlf`,
		`level=INFO msg="post-cmd output" conn=5 stream=stdout line=""`,
		`level=INFO msg="post-cmd output" conn=5 stream=stdout line="no newline"`,
	}
	if got := log.lines("stream=stdout"); !slices.Equal(got, wantOut) {
		t.Errorf("got stdout\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantOut, "\n"))
	}
	wantErr := []string{
		`level=WARN msg="post-cmd output" conn=5 stream=stderr line="to stderr"`,
		`level=WARN msg="post-cmd output" conn=5 stream=stderr line="last of stderr"`,
	}
	if got := log.lines("stream=stderr"); !slices.Equal(got, wantErr) {
		t.Errorf("got stderr\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantErr, "\n"))
	}
	wantExit := []string{`level=WARN msg="post-cmd exited" conn=5 status=3 duration=0s file=` + file}
	if got := log.lines(`msg="post-cmd exited"`); !slices.Equal(got, wantExit) {
		t.Errorf("got %q; want %q", got, wantExit)
	}
	if got := len(log.lines()); got != 8 {
		t.Errorf("got %d log lines; want 8:\n%s", got, log)
	}
}

func TestOutputFlood(t *testing.T) {
	dir := t.TempDir()
	// 100000 bytes of 11-byte lines, then one very long line on stderr.
	hook := writeHook(t, dir, "hook", `yes 0123456789 | head -c 100000`+"\n")
	r, log := newRunner(t, Config{Command: quote(hook)})
	r.Enqueue(facts(t, 1, filepath.Join(dir, "data")))
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	lines := log.lines(`msg="post-cmd output"`)
	// 65536 bytes are logged: 5957 whole lines and 9 bytes of the next.
	if len(lines) != 5958 {
		t.Fatalf("got %d output lines; want 5958", len(lines))
	}
	if want := `level=INFO msg="post-cmd output" conn=1 stream=stdout line=0123456789`; lines[0] != want {
		t.Errorf("got first line %q; want %q", lines[0], want)
	}
	if want := `level=INFO msg="post-cmd output" conn=1 stream=stdout line=012345678 cut=true`; lines[5957] != want {
		t.Errorf("got last line %q; want %q", lines[5957], want)
	}
	want := []string{`level=WARN msg="post-cmd output truncated" conn=1 limit=65536`}
	if got := log.lines("truncated"); !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
	if got := log.lines(`msg="post-cmd exited" conn=1 status=0`); len(got) != 1 {
		t.Errorf("got exit lines %q; want one with status 0", got)
	}
}

func TestNoFileIgnored(t *testing.T) {
	dir := t.TempDir()
	hook := writeHook(t, dir, "hook", `: > "${0%/*}/ran"`+"\n")
	r, log := newRunner(t, Config{Command: quote(hook)})
	r.Enqueue(&proxy.Facts{N: 1, Outcome: proxy.ConnectFailed})
	r.Enqueue(&proxy.Facts{N: 2, Outcome: proxy.Rejected, OutHost: "x"})
	r.Enqueue(nil)
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if exists(filepath.Join(dir, "ran")) {
		t.Error("the command ran for a connection without a data file")
	}
	if got := log.String(); got != "" {
		t.Errorf("got log %q; want none", got)
	}
}

func TestStartFailure(t *testing.T) {
	dir := t.TempDir()
	shell := filepath.Join(dir, "sh")
	if err := os.Symlink("/bin/sh", shell); err != nil {
		t.Fatal(err)
	}
	r, log := newRunner(t, Config{Command: "true", Shell: shell})
	if err := os.Remove(shell); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "data")
	r.Enqueue(facts(t, 4, file))
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	want := `level=ERROR msg="post-cmd not run" conn=4 file=` + file +
		` reason="cannot start: fork/exec ` + shell + `: no such file or directory"` + "\n"
	if got := log.String(); got != want {
		t.Errorf("got log %q; want %q", got, want)
	}
}

func TestOutputHeldOpen(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		hook string
		want string
	}{
		// A child left in the group is killed when the command exits, so
		// its stdout closes.
		{"child in group", `sleep 1000 & echo $! > "${0%/*}/child"` + "\n",
			`level=INFO msg="post-cmd exited" conn=1 status=0 duration=0s`},
		// A child in a session of its own is beyond reach: after Grace the
		// pipes are closed and the job slot is free.
		{"child in own session", `setsid sh -c 'echo $$ > "$1"; exec sleep 1000' sh "${0%/*}/child" &` + "\n" +
			`while [ ! -s "${0%/*}/child" ]; do sleep 0.01; done` + "\n",
			`level=WARN msg="post-cmd exited" conn=1 status=0 duration=0s file=` + dir + `/data err="exec: WaitDelay expired before I/O complete"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub := t.TempDir()
			hook := writeHook(t, sub, "hook", c.hook)
			r, log := newRunner(t, Config{Command: quote(hook), Jobs: 1, Grace: 300 * time.Millisecond})
			r.Enqueue(facts(t, 1, filepath.Join(dir, "data")))
			if err := r.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			child := readInt(t, filepath.Join(sub, "child"))
			t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
			if got := log.lines(); !slices.Equal(got, []string{c.want}) {
				t.Errorf("got log %q; want %q", got, c.want)
			}
		})
	}
}
