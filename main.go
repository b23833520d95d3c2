// Command ipprotd is a recording TCP proxy: it listens on a port, forwards
// every connection transparently to one destination, and can write a line
// per connection to a log, record the traffic of each connection in a file
// of its own and run a command when a connection ends. It is a drop-in
// replacement for the original C daemon of the same name: the original's
// command lines work unchanged and its files look the same.
//
//	ipprotd -p 5432 -h 127.0.0.1 -P 3333 -l -f /var/log/conn_rec/prot -z -Dp /var/log/conn_rec/ipprot_pid_5432
//
// This package wires the daemon: the command line (cli.go), its checks
// (config.go), the life cycle and its signals (here), detaching and the pid
// file (daemon.go). See docs/ipprotd.md for the manual.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/sync/errgroup"

	"github.com/ipprot/ipprot/audit"
	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/logfile"
	"github.com/ipprot/ipprot/metrics"
	"github.com/ipprot/ipprot/postproc"
	"github.com/ipprot/ipprot/proxy"
	"github.com/ipprot/ipprot/recorder"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain parses args and runs the command they name; it returns the exit
// status.
func realMain(args []string, stdout, stderr io.Writer) int {
	var c cli
	var exit cmdline.Exit
	parser, err := newParser(&c, stdout, stderr, exit.Option())
	if err != nil {
		fmt.Fprintf(stderr, "ipprotd: %v\n", err)
		return cmdline.StatusFailure
	}
	words := normaliseArgs(args, originalSpellings(parser), flagTakesValue(parser))
	return cmdline.Run(parser, &exit, words, stderr)
}

// Run runs the proxy until SIGTERM or SIGINT; with -D, detached.
func (c *serveCmd) Run(kctx *kong.Context) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	if cfg.daemon && os.Getenv(notifyEnv) == "" {
		return detach(kctx.Stderr)
	}
	return run(context.Background(), cfg, kctx.Stderr)
}

// run starts the daemon with cfg and serves until SIGTERM or SIGINT. Its
// errors are usage errors (cmdline.Error) where the configuration cannot
// work.
func run(ctx context.Context, cfg *config, stderr io.Writer) (err error) {
	// Before anything else: until Notify, SIGTERM or SIGHUP would kill the
	// process outright, also after a -D parent returned and the pid file
	// names us. SIGPIPE is caught so that a reader of stderr going away
	// costs log lines, not the daemon and its open recordings.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(signals)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	ready := notifier()
	defer func() { ready.fail(err) }()
	// Descriptors this process inherited (a shell's exec 7>file, a
	// caller's pipe) must not reach the hooks: every one is closed on exec.
	closeOnExecInherited()
	if ready.detached() {
		// A daemon keeps no folder busy (and a relative path means nothing
		// to it: every path was made absolute while parsing).
		if err := os.Chdir("/"); err != nil {
			return err
		}
	}

	// Listening comes first: a port that cannot be bound leaves nothing
	// behind, no folder created, no file opened.
	ln, err := listen(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	var mln net.Listener
	if cfg.metricsAddr != "" {
		if mln, err = (proxy.ListenConfig{ReusePort: cfg.reusePort}).Listen(context.Background(), cfg.metricsAddr); err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		defer func() {
			if err != nil {
				mln.Close()
			}
		}()
	}

	dlog, err := openDaemonLog(cfg, stderr, ready)
	if err != nil {
		return err
	}
	defer dlog.close()
	logger := newLogger(dlog.w, cfg.logFormat)
	// What SIGHUP reopens and re-reads.
	var reloads []reload
	if dlog.file != nil {
		reloads = append(reloads, reload{"--log-file", dlog.file.Reopen})
	}

	var clog *logfile.File
	if cfg.connLog != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.connLog), 0o750); err != nil {
			return cmdline.Usagef("-c/--conn-log: %v", err)
		}
		if clog, err = logfile.Open(cfg.connLog, "connection log"); err != nil {
			return cmdline.Usagef("-c/--conn-log: %v", err)
		}
		defer clog.Close()
		reloads = append(reloads, reload{"-c/--conn-log", clog.Reopen})
	}
	var journal *audit.Journal
	if cfg.auditLog != "" {
		if journal, err = openJournal(cfg, logger); err != nil {
			return err
		}
		defer journal.Close()
		reloads = append(reloads, reload{"--audit-log", journal.Reopen})
	}
	var rec *recorder.Opener
	if cfg.record != nil {
		if rec, err = recorder.New(*cfg.record); err != nil {
			return cmdline.Usagef("-f/--data-log: %v", err)
		}
		defer rec.Close()
	}
	var runner *postproc.Runner
	if cfg.post != nil {
		pc := *cfg.post
		pc.Logger = logger
		if runner, err = postproc.New(pc); err != nil {
			return cmdline.Usagef("%s: %v", cfg.postOpt, err)
		}
	}

	var pid *pidFile
	if cfg.pidFile != "" {
		if pid, err = claimPidFile(cfg.pidFile); err != nil {
			return err
		}
		defer pid.remove()
	}

	pcfg := cfg.proxy
	pcfg.Logger = logger
	pcfg.OnEnd = connectionEnded(clog, cfg.connFormat, journal, runner, logger)
	if journal != nil {
		pcfg.Admit = admitWhileWritable(journal)
	}
	if rec != nil {
		pcfg.OpenRecorder = openRecorder(rec)
	}
	if mln != nil {
		pcfg.Counters = new(proxy.Counters)
	}
	srv := proxy.New(pcfg)
	bi := readBuildInfo()
	var msrv *http.Server
	if mln != nil {
		msrv = metricsServer(pcfg.Counters, srv, runner, cfg, bi, logger)
	}

	if pid != nil {
		if err = pid.write(); err != nil {
			return err
		}
	}
	attrs := []any{"addr", ln.Addr().String(), "dest", proxy.JoinHostPort(cfg.outHost, cfg.outPort), "version", bi.Version, "commit", bi.Commit, "go", bi.GoVersion}
	if mln != nil {
		attrs = append(attrs, "metrics", "http://"+mln.Addr().String()+"/metrics")
	}
	logger.Info("listening", attrs...)
	ready.ok()

	if cfg.tlsServer != nil {
		reloads = append(reloads, reload{"--tls-cert", cfg.tlsServer.Reload})
	}
	if cfg.tlsUpstream != nil {
		reloads = append(reloads, reload{"--upstream-cert", cfg.tlsUpstream.Reload})
	}
	if cfg.insecure {
		logger.Warn("--upstream-insecure: the destination's certificate is not verified; anyone on the path can read and change the traffic")
	}
	life := watchSignals(signals, reloader(reloads, logger), logger)
	defer life.close()
	trimCtx, stopTrim := context.WithCancel(context.Background())
	defer stopTrim()
	go trimMemory(trimCtx)
	floorGC()

	// Two tasks: the accept loop, and the wait for a stop followed by the
	// drain. An accept loop that fails ends the wait, so the drain runs
	// either way; its error is the exit status.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(srv, ln) })
	if msrv != nil {
		g.Go(func() error { return serveMetrics(msrv, mln) })
	}
	g.Go(func() error {
		select {
		case <-life.stop:
			logger.Info("stopping", "signal", life.signal(), "active", srv.Active())
		case <-gctx.Done():
			logger.Info("stopping", "reason", context.Cause(gctx).Error(), "active", srv.Active())
		}
		if msrv != nil {
			// Stop listening at once on both ports: with --reuse-port,
			// the new daemon answers the scrapes from now on.
			msrv.Close()
		}
		drain(srv, runner, journal, logger, cfg.drainTimeout, life.abort)
		return nil
	})
	return g.Wait()
}

// serveMetrics serves /metrics on ln until Close.
func serveMetrics(msrv *http.Server, ln net.Listener) error {
	if err := msrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("--metrics-listen: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// metricsServer returns the HTTP server of --metrics-listen: /metrics,
// read from the proxy's counters, the server, the hook's runner (nil
// without -u) and the build.
func metricsServer(counters *proxy.Counters, srv *proxy.Server, runner *postproc.Runner, cfg *config, bi buildInfo, logger *slog.Logger) *http.Server {
	reg := metrics.New(metrics.Sources{
		Counters: counters,
		Server:   srv,
		Post:     runner,
		MaxConns: cfg.proxy.MaxConns,
		Build:    metrics.Build{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", reg.Handler())
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// serve runs the accept loop until Shutdown (nil) or a failure.
func serve(srv *proxy.Server, ln net.Listener) error {
	addr := ln.Addr().String()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		return fmt.Errorf("accept on %s: %w", addr, err)
	}
	return nil
}

// lifecycle is what the daemon's signals mean: SIGHUP reopens the logs;
// the first SIGTERM or SIGINT closes stop (drain), the second abort (end
// what remains).
type lifecycle struct {
	stop, abort chan struct{}
	done        chan struct{}  // closed to end the watch
	wg          sync.WaitGroup // the watch
	reopens     sync.WaitGroup // a reopen loop that runs
	mu          sync.Mutex
	first       string // the signal that closed stop
	reopening   bool   // a reopen runs
	reopenAgain bool   // a SIGHUP came while it ran
}

// watchSignals turns signals into a lifecycle until close. reopen runs for
// every SIGHUP, one at a time.
func watchSignals(signals <-chan os.Signal, reopen func(), logger *slog.Logger) *lifecycle {
	l := &lifecycle{stop: make(chan struct{}), abort: make(chan struct{}), done: make(chan struct{})}
	l.wg.Add(1)
	go l.watch(signals, reopen, logger)
	return l
}

func (l *lifecycle) watch(signals <-chan os.Signal, reopen func(), logger *slog.Logger) {
	defer l.wg.Done()
	stops := 0
	for {
		select {
		case <-l.done:
			return
		case s := <-signals:
			if s == syscall.SIGHUP {
				l.reopenSoon(reopen)
				continue
			}
			stops++
			switch stops {
			case 1:
				l.mu.Lock()
				l.first = s.String()
				l.mu.Unlock()
				close(l.stop)
			case 2:
				logger.Info("ending what remains now", "signal", s.String())
				close(l.abort)
			}
		}
	}
}

// reopenSoon runs reopen on a goroutine of its own, so that a reopen that
// hangs (a file system that does not answer) never keeps the watch from
// seeing the next signal. SIGHUPs that come while a reopen runs make one
// more reopen after it, not one each.
func (l *lifecycle) reopenSoon(reopen func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reopening {
		l.reopenAgain = true
		return
	}
	l.reopening = true
	l.reopens.Add(1)
	go l.reopenLoop(reopen)
}

func (l *lifecycle) reopenLoop(reopen func()) {
	defer l.reopens.Done()
	for {
		reopen()
		l.mu.Lock()
		again := l.reopenAgain
		l.reopenAgain, l.reopening = false, again
		l.mu.Unlock()
		if !again {
			return
		}
	}
}

// signal names the signal that closed stop.
func (l *lifecycle) signal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// close ends the watch. It waits for a reopen that runs, but not for ever:
// one stuck on a file system that does not answer must not keep a stopped
// daemon from exiting.
func (l *lifecycle) close() {
	close(l.done)
	l.wg.Wait()
	done := make(chan struct{})
	go func() { l.reopens.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// reload is one thing SIGHUP re-reads: a log file, a certificate.
type reload struct {
	what string
	do   func() error
}

// reloader returns the SIGHUP action: reopen every log file and re-read
// every certificate. What fails to reload stays as it was, and the log
// says why.
func reloader(reloads []reload, logger *slog.Logger) func() {
	return func() {
		failed := 0
		for _, r := range reloads {
			if err := r.do(); err != nil {
				failed++
				logger.Error("reload after SIGHUP failed; the previous one stays in use", "what", r.what, "err", err)
			}
		}
		logger.Info("reloaded after SIGHUP", "failed", failed)
	}
}

// drain stops the daemon: sessions first, then post-processing commands.
// Both waits together are bounded by drain (if not zero) and cut short when
// abort closes (a second signal); sessions then end as aborted, commands
// are ended, and every command not run is logged. Then, too, entries
// waiting for an audit journal that cannot be written give up (their
// connections' commands are not run, and logged).
func drain(srv *proxy.Server, runner *postproc.Runner, journal *audit.Journal, logger *slog.Logger, timeout time.Duration, abort <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if journal != nil {
		context.AfterFunc(ctx, journal.Abandon)
	}
	go func() {
		select {
		case <-abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("stopped waiting for connections", "reason", err)
	}
	if runner != nil {
		if err := runner.Shutdown(ctx); err != nil {
			logger.Warn("stopped waiting for post-processing commands", "reason", err)
		}
	}
	logger.Info("stopped")
}

// connectionEnded returns the proxy's OnEnd: the connection-log line, the
// audit entry, written and synced, then the post-processing command, in
// that order (SPEC §2, §9). A connection whose audit entry could not be
// written does not get its command: a hook that ships and deletes the
// recording would leave no trace of it at all.
func connectionEnded(clog *logfile.File, format *connlog.Format, journal *audit.Journal, runner *postproc.Runner, logger *slog.Logger) func(*proxy.Facts) {
	return func(f *proxy.Facts) {
		if clog != nil {
			line := format.Append(make([]byte, 0, 256), f)
			if _, err := clog.Write(line); err != nil {
				logger.Error("connection log", "conn", f.N, "err", err)
			}
		}
		if journal != nil {
			if err := journal.Append(f); err != nil {
				logger.Error("audit entry not written", "conn", f.N, "file", f.File, "sha256", f.SHA256, "err", err)
				if runner != nil && f.File != "" {
					logger.Error("post-cmd not run", "conn", f.N, "file", f.File, "reason", "its audit entry was not written")
				}
				return
			}
		}
		if runner != nil {
			runner.Enqueue(f)
		}
	}
}

// openJournal opens the audit journal of cfg; its errors are start errors
// naming --audit-log.
func openJournal(cfg *config, logger *slog.Logger) (*audit.Journal, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.auditLog), 0o750); err != nil {
		return nil, cmdline.Usagef("--audit-log: %v", err)
	}
	if cfg.auditKeyFile != "" {
		if fi, err := os.Stat(cfg.auditKeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("the audit key can be read by others than its owner; see docs/integrity.md", "file", cfg.auditKeyFile, "mode", fi.Mode().Perm().String())
		}
	}
	j, err := audit.Open(audit.Config{Path: cfg.auditLog, Key: cfg.auditKey, Logger: logger})
	if errors.Is(err, audit.ErrLocked) {
		return nil, cmdline.Failf("--audit-log: %v", err)
	}
	if err != nil {
		return nil, cmdline.Usagef("--audit-log: %v", err)
	}
	return j, nil
}

// admitWhileWritable returns the proxy's Admit: while the audit journal
// cannot be written, new connections are refused (outcome rejected), as
// a recording that cannot be written ends its connection — nothing passes
// unaudited. Sessions already running go on; their entries wait.
func admitWhileWritable(j *audit.Journal) func() error {
	return func() error {
		if err := j.Writable(); err != nil {
			return fmt.Errorf("refused while the audit journal cannot be written: %w", err)
		}
		return nil
	}
}

// openRecorder returns the proxy's OpenRecorder: a data file of o.
func openRecorder(o *recorder.Opener) func(*proxy.Facts, func(error)) (proxy.Recorder, string, error) {
	return func(f *proxy.Facts, fail func(error)) (proxy.Recorder, string, error) {
		r, err := o.Open(recorder.Conn{N: f.N, Start: f.Start, Client: f.Client.Addr(), Fail: fail})
		if err != nil {
			return nil, "", err
		}
		return r, r.Path(), nil
	}
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
