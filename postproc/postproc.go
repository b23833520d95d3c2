// Package postproc runs the post-processing command of -u and -uT after
// each recorded connection: the facts of an ended connection go in, and out
// comes a run of /bin/sh -c 'CMD "$@"' with the facts as positional
// parameters and IPPROT_* variables, never pasted into the command string,
// its output and exit status in the daemon's log. Runs are queued and made
// at most Config.Jobs at a time, each in a process group of its own.
// docs/ipprotd.md lists the parameters and shows an example hook.
//
//	if err := postproc.Check(cmd); err != nil { ... } // at start-up
//	r, err := postproc.New(postproc.Config{Command: cmd, Times: uT})
//	proxyConfig.OnEnd = r.Enqueue
//	...
//	srv.Shutdown(ctx) // no more sessions end after this
//	r.Shutdown(ctx)   // run what is queued, then return
package postproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/proxy"
)

// Config configures a Runner. Command must be set; the zero value of every
// other field is documented.
type Config struct {
	// Command is CMD as given to -u or -uT. It runs as
	// /bin/sh -c 'CMD "$@"', so it may hold arguments and shell syntax of
	// its own; the facts follow as "$@". It must not end in a comment,
	// which would swallow "$@", nor in ;, & or |, which New refuses.
	Command string

	// Times selects -uT: nine parameters instead of five.
	Times bool

	// Jobs is the number of commands that may run at once. If zero, 4.
	Jobs int

	// Queue is the number of runs that may wait beyond Jobs. A run that
	// finds the queue full is not made: it is logged at error level with
	// its connection and file (left in place for the operator) and
	// counted; Enqueue never waits, so a slow hook never holds up the end
	// of a session or a stop. If zero, 10000.
	Queue int

	// Timeout bounds each command; at its end the command's process group
	// gets SIGTERM, then SIGKILL after Grace. If zero, commands may run for
	// ever.
	Timeout time.Duration

	// Grace is the time between SIGTERM to a command's process group and
	// SIGKILL, and the time the command's output pipes may stay open after
	// it exited (held by a process that left its group). If zero, 5 s.
	Grace time.Duration

	// Shell runs the command with -c. If empty, /bin/sh.
	Shell string

	// Logger receives the commands' output, their exit statuses and the
	// runs that could not be made. If nil, slog.Default() is used.
	Logger *slog.Logger
}

const (
	defaultJobs  = 4
	defaultQueue = 10000
	defaultGrace = 5 * time.Second
	defaultShell = "/bin/sh"
)

var (
	errTimeout  = errors.New("timeout")
	errShutdown = errors.New("shutdown")
)

// Runner runs the post-processing command for every connection handed to
// Enqueue, at most Config.Jobs at once, in the order they were enqueued. It
// is safe for concurrent use. Its goroutines live only while runs are queued
// or running; Shutdown waits for them.
type Runner struct {
	log     *slog.Logger
	now     func() time.Time
	shell   string
	script  string   // CMD "$@"
	times   bool     // -uT
	env     []string // the daemon's environment without the IPPROT_* names set here
	jobs    int
	queue   int
	timeout time.Duration
	grace   time.Duration

	// abortCtx is cancelled with errShutdown when Shutdown gives up
	// waiting; every running command is ended.
	abortCtx context.Context
	abort    context.CancelCauseFunc

	// startRetry is the longest wait between attempts to start a command
	// that could not start for want of descriptors, processes or memory.
	startRetry time.Duration
	// start starts a command; tests replace it.
	start func(*exec.Cmd) error

	counts counters

	mu        sync.Mutex
	waiting   []*run // runs not yet started, first in first out
	running   int    // runs started and not yet ended
	workers   int    // goroutines taking runs from waiting
	draining  bool   // Shutdown began
	abandoned bool   // Shutdown's ctx ended: nothing more starts
	stopped   bool   // idle is closed: Enqueue runs nothing more
	idle      chan struct{}
	wg        sync.WaitGroup // the workers
}

// counters count runs by how they ended.
type counters struct {
	ok, failed, notRun atomic.Int64
}

// Counts is what a Runner did so far: commands that exited 0, commands
// that failed (a non-zero status, a signal, a timeout), and runs not made
// (the queue was full, the command could not be started, or a stop gave
// up on them), and the runs waiting now.
type Counts struct {
	OK, Failed, NotRun int64
	Queued             int
}

// Counts returns what r did so far. It is safe to call at any time.
func (r *Runner) Counts() Counts {
	r.mu.Lock()
	queued := len(r.waiting)
	r.mu.Unlock()
	return Counts{OK: r.counts.ok.Load(), Failed: r.counts.failed.Load(), NotRun: r.counts.notRun.Load(), Queued: queued}
}

// run is what one command needs, copied from the Facts.
type run struct {
	conn   uint64
	file   string
	params []string // $1, $2, …
	env    []string // the IPPROT_* variables
}

// envNames are the variables Runner sets; the daemon's own values of them
// are dropped, not duplicated.
var envNames = []string{
	"IPPROT_FILE", "IPPROT_CLIENT_IP", "IPPROT_CLIENT_PORT", "IPPROT_OUT_HOST",
	"IPPROT_OUT_PORT", "IPPROT_START", "IPPROT_END", "IPPROT_BYTES_IN",
	"IPPROT_BYTES_OUT", "IPPROT_OUTCOME", "IPPROT_CONN", "IPPROT_SHA256",
	"IPPROT_CLIENT_TLS", "IPPROT_UPSTREAM_TLS", "IPPROT_CLIENT_CERT",
}

// New returns a Runner for cfg. It fails if the command is empty, a number
// is negative or the shell cannot be run; it does not look for the command
// (see Check). The environment of the commands is the process's environment
// as it is when New is called.
func New(cfg Config) (*Runner, error) {
	if err := checkEnd(cfg.Command); err != nil {
		return nil, err
	}
	command := strings.TrimRight(cfg.Command, " \t\n")
	switch {
	case cfg.Jobs < 0:
		return nil, fmt.Errorf("post-processing jobs %d: must not be negative", cfg.Jobs)
	case cfg.Queue < 0:
		return nil, fmt.Errorf("post-processing queue %d: must not be negative", cfg.Queue)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("post-processing timeout %s: must not be negative", cfg.Timeout)
	case cfg.Grace < 0:
		return nil, fmt.Errorf("post-processing grace %s: must not be negative", cfg.Grace)
	}
	r := &Runner{
		log:     cfg.Logger,
		now:     time.Now,
		shell:   cfg.Shell,
		script:  command + ` "$@"`,
		times:   cfg.Times,
		env:     daemonEnv(os.Environ()),
		jobs:    cfg.Jobs,
		queue:   cfg.Queue,
		grace:   cfg.Grace,
		timeout: cfg.Timeout,
		idle:    make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.shell == "" {
		r.shell = defaultShell
	}
	if r.jobs == 0 {
		r.jobs = defaultJobs
	}
	if r.queue == 0 {
		r.queue = defaultQueue
	}
	if r.grace == 0 {
		r.grace = defaultGrace
	}
	r.startRetry = time.Second
	r.start = (*exec.Cmd).Start
	if err := checkWord(r.shell); err != nil {
		return nil, fmt.Errorf("shell: %w", err)
	}
	r.abortCtx, r.abort = context.WithCancelCause(context.Background())
	return r, nil
}

// daemonEnv returns env without the variables Runner sets itself.
func daemonEnv(env []string) []string {
	kept := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, name := range envNames {
			if strings.HasPrefix(kv, name+"=") {
				continue next
			}
		}
		kept = append(kept, kv)
	}
	return kept
}

// Enqueue runs the command for the connection f, if it has a data file;
// facts without one are ignored. It copies what it needs from f and never
// waits: a run that finds the queue full (Config.Queue runs waiting) is
// not made, and is logged at error level with its connection number and
// file, as is a run handed in after Shutdown gave up. After Shutdown
// began, runs are still accepted until Shutdown's ctx ends.
func (r *Runner) Enqueue(f *proxy.Facts) {
	if f == nil || f.File == "" {
		return
	}
	j := r.newRun(f)

	r.mu.Lock()
	var reason string
	switch {
	case r.abandoned:
		reason = "shutdown deadline passed"
	case r.stopped:
		reason = "post-processing stopped"
	case len(r.waiting)+r.running >= r.jobs+r.queue:
		reason = fmt.Sprintf("queue full (%d waiting: --post-queue)", r.queue)
	}
	if reason != "" {
		r.mu.Unlock()
		r.logNotRun(j, reason)
		return
	}
	r.waiting = append(r.waiting, j)
	if r.workers < r.jobs {
		r.workers++
		r.wg.Add(1)
		go r.work()
	}
	r.mu.Unlock()
}

// newRun copies the facts of f into a run.
func (r *Runner) newRun(f *proxy.Facts) *run {
	file := f.File
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	clientIP := ""
	if f.Client.IsValid() {
		clientIP = f.Client.Addr().String()
	}
	clientPort := strconv.Itoa(int(f.Client.Port()))
	outPort := strconv.Itoa(int(f.OutPort))
	start := f.Start.Format(datafile.ISOLayout)
	end := f.End.Format(datafile.ISOLayout)
	bytesIn := strconv.FormatInt(f.BytesIn, 10)
	bytesOut := strconv.FormatInt(f.BytesOut, 10)

	params := []string{file, clientIP, clientPort, f.OutHost, outPort}
	if r.times {
		params = append(params, start, end, bytesIn, bytesOut)
	}
	j := &run{
		conn:   f.N,
		file:   file,
		params: params,
		env: []string{
			"IPPROT_FILE=" + file,
			"IPPROT_CLIENT_IP=" + clientIP,
			"IPPROT_CLIENT_PORT=" + clientPort,
			"IPPROT_OUT_HOST=" + f.OutHost,
			"IPPROT_OUT_PORT=" + outPort,
			"IPPROT_START=" + start,
			"IPPROT_END=" + end,
			"IPPROT_BYTES_IN=" + bytesIn,
			"IPPROT_BYTES_OUT=" + bytesOut,
			"IPPROT_OUTCOME=" + f.Outcome.String(),
			"IPPROT_CONN=" + strconv.FormatUint(f.N, 10),
			"IPPROT_SHA256=" + f.SHA256,
		},
	}
	// Where the proxy spoke TLS: its version and cipher suite on each
	// side, the client certificate's subject.
	for _, v := range []struct{ name, value string }{
		{"IPPROT_CLIENT_TLS", f.ClientTLS}, {"IPPROT_UPSTREAM_TLS", f.ServerTLS}, {"IPPROT_CLIENT_CERT", f.ClientCert},
	} {
		if v.value != "" {
			j.env = append(j.env, v.name+"="+v.value)
		}
	}
	return j
}

// work runs waiting runs until none is left, as one of at most r.jobs
// goroutines.
func (r *Runner) work() {
	defer r.wg.Done()
	for {
		j := r.next()
		if j == nil {
			return
		}
		r.execute(j)
		r.done()
	}
}

// next takes the oldest waiting run, or returns nil and retires the worker
// when there is none or the queue was abandoned.
func (r *Runner) next() *run {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiting) == 0 || r.abandoned {
		r.workers--
		r.checkIdle()
		return nil
	}
	j := r.waiting[0]
	r.waiting[0] = nil
	r.waiting = r.waiting[1:]
	r.running++
	return j
}

// done records the end of a run.
func (r *Runner) done() {
	r.mu.Lock()
	r.running--
	r.mu.Unlock()
}

// checkIdle closes r.idle once Shutdown began and no worker is left. r.mu
// is held.
func (r *Runner) checkIdle() {
	if r.draining && r.workers == 0 && !r.stopped {
		r.stopped = true
		close(r.idle)
	}
}

// Shutdown waits for the queued and running commands, including those
// enqueued while it waits, and returns nil. If ctx ends first, it stops the
// running commands (SIGTERM to their process groups, SIGKILL after
// Config.Grace), logs every queued run that will not be made at error level
// with its connection number and file, waits for the commands to be gone
// and returns ctx.Err(). After Shutdown returned, Enqueue runs nothing and
// logs what it is given as not run. Shutdown may be called more than once.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	r.checkIdle()
	r.mu.Unlock()

	select {
	case <-r.idle:
		r.wg.Wait()
		return nil
	case <-ctx.Done():
	}
	select {
	case <-r.idle: // both ended: all ran
		r.wg.Wait()
		return nil
	default:
	}

	r.mu.Lock()
	r.abandoned = true
	unrun := r.waiting
	r.waiting = nil
	r.mu.Unlock()
	r.abort(errShutdown)
	for _, j := range unrun {
		r.logNotRun(j, "shutdown deadline passed")
	}
	<-r.idle
	r.wg.Wait()
	return ctx.Err()
}

// logNotRun says that j's command will not run, with what the operator
// needs to run it by hand, and counts it.
func (r *Runner) logNotRun(j *run, reason string) {
	r.counts.notRun.Add(1)
	r.log.Error("post-cmd not run", "conn", j.conn, "file", j.file, "reason", reason)
}
