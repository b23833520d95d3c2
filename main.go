// Command ipprotd is a recording TCP proxy: it listens on a port, forwards
// every connection transparently to one destination, and can write a line
// per connection to a log, record the traffic of each connection in a file
// of its own and run a command when a connection ends. It is a drop-in
// replacement for the original C daemon of the same name: the original's
// command lines work unchanged and its files look the same.
//
//	ipprotd -p 5432 -h 127.0.0.1 -P 3333 -l -f /var/log/conn_rec/prot -z -Dp /var/log/conn_rec/ipprot_pid_5432
//
// See docs/ipprotd.md for the manual.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/sync/errgroup"

	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/postproc"
	"github.com/ipprot/ipprot/proxy"
	"github.com/ipprot/ipprot/recorder"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// cli is the command line. Every option of the original daemon has its
// short form; the two-letter -Dp and -uT and the -? of help are rewritten
// into long forms by normaliseArgs before kong sees them.
type cli struct {
	Listen  portAt       `short:"p" placeholder:"PORT[@HOST]" default:"8080" group:"fwd" help:"Listen on PORT, on all addresses (IPv4 and IPv6) or only on HOST (default: ${default})."`
	OutHost string       `short:"h" placeholder:"HOST" default:"localhost" group:"fwd" help:"Forward to HOST, a name (resolved at each connection) or an address (default: ${default})."`
	Out     portAt       `short:"P" placeholder:"PORT[@HOST]" default:"80" group:"fwd" help:"Forward to PORT; @HOST overrides -h (default: ${default})."`
	Allow   []allowEntry `short:"r" placeholder:"IP|CIDR" sep:"none" group:"fwd" help:"Allow only this client address or prefix; repeatable (default: everyone)."`

	BufferSize     int           `short:"b" placeholder:"BYTES" default:"300000" group:"fwd" help:"Read, record and write at most BYTES as one block (default: ${default})."`
	ConnectTimeout time.Duration `placeholder:"DURATION" default:"10s" group:"fwd" help:"Give up dialing the destination after DURATION (default: ${default})."`
	IdleTimeout    time.Duration `placeholder:"DURATION" default:"0" group:"fwd" help:"End a connection idle for DURATION (default: never; database sessions idle for hours)."`
	MaxConns       int           `placeholder:"N" default:"0" group:"fwd" help:"Refuse connections beyond N at once (default: no limit)."`

	DataLog       pathArg       `short:"f" placeholder:"PREFIX" group:"rec" help:"Record each connection in its own file PREFIX_<yyyy-mm-dd_HHMMSS>_<n>_<client_ip>."`
	LogIn         bool          `short:"l" group:"rec" help:"Record only client-to-server traffic (default: only server-to-client)."`
	LogBoth       bool          `short:"L" group:"rec" help:"Record both directions in the same file."`
	Printable     bool          `short:"s" group:"rec" help:"Record printable characters only; a run of others becomes one blank."`
	Gzip          bool          `short:"z" group:"rec" help:"Compress data files with gzip while they are written (.gz)."`
	GzipLevel     *int          `placeholder:"1-9" group:"rec" help:"With -z: deflate's level; 1 compresses SQL text about twice as fast as 5, into files 8 % larger (default: 5)."`
	Bzip2         bool          `short:"j" name:"bzip2" group:"rec" help:"Compress data files with bzip2 while they are written (.bz2)."`
	StampInterval *int          `short:"t" placeholder:"SECS" group:"rec" help:"Insert an ISO timestamp line when the client sends data and SECS passed since the last."`
	BlockStamps   bool          `short:"M" group:"rec" help:"Precede each block by a line with its time in microseconds."`
	FlushInterval time.Duration `placeholder:"DURATION" default:"1s" group:"rec" help:"Flush compressed data files at least this often while data flows (default: ${default})."`
	OnRecordError string        `enum:"stop,continue" default:"stop" placeholder:"stop|continue" group:"rec" help:"When a data file cannot be written: end the connection (stop) or forward unrecorded (continue) (default: ${default})."`

	PostCmd      commandArg    `short:"u" placeholder:"CMD" group:"post" help:"Run CMD after each recorded connection, with file, client IP and port, destination host and port as $1..$5."`
	PostCmdTimes commandArg    `placeholder:"CMD" group:"post" help:"(-uT) Like -u, adding start, end, bytes received and bytes sent as $6..$9."`
	PostJobs     int           `placeholder:"N" default:"4" group:"post" help:"Run at most N post-processing commands at once (default: ${default})."`
	PostTimeout  time.Duration `placeholder:"DURATION" default:"0" group:"post" help:"End a post-processing command, with its process group, after DURATION (default: never)."`

	ConnLog       pathArg `short:"c" placeholder:"FILE" group:"log" help:"Append one line per connection to FILE."`
	ConnLogFormat *string `short:"C" placeholder:"FORMAT" group:"log" help:"Format of that line; see docs/ipprotd.md (default: \"${connlog_format}\")."`

	Daemon       bool          `short:"D" group:"run" help:"Detach and run in the background."`
	PidFile      pathArg       `placeholder:"FILE" group:"run" help:"Write the pid to FILE (-Dp FILE detaches too)."`
	LogFormat    string        `enum:"text,json" default:"text" placeholder:"text|json" group:"run" help:"Format of the daemon's own log (default: ${default})."`
	LogFile      pathArg       `placeholder:"FILE" group:"run" help:"Write the daemon's own log to FILE (default: stderr; with -D, syslog)."`
	DrainTimeout time.Duration `placeholder:"DURATION" default:"0" group:"run" help:"On SIGTERM, wait at most DURATION for connections, then for commands, before ending them (default: wait)."`

	Help    helpFlag         `short:"?" group:"run" help:"Show this help."`
	Version kong.VersionFlag `short:"v" group:"run" help:"Show the version."`

	Serve struct{} `cmd:"" default:"1" hidden:"" help:"Run the proxy (the default)."`
	Cat   catCmd   `cmd:"" help:"Read recordings: ipprotd cat --help."`
}

var groups = []kong.Group{
	{Key: "fwd", Title: "Listening and forwarding:"},
	{Key: "rec", Title: "Recording (need -f):"},
	{Key: "post", Title: "Post-processing (need -f):"},
	{Key: "log", Title: "Connection log:"},
	{Key: "run", Title: "Running:"},
}

const description = `A recording TCP proxy. ipprotd listens on a port and forwards every
connection to one destination; it can log each connection (-c), record its
traffic in a file of its own (-f) and run a command when it ends (-u).

  ipprotd -p 5432 -h 127.0.0.1 -P 3333 -l -f /var/log/conn_rec/prot -z -Dp /var/log/conn_rec/ipprot_pid_5432

Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot listen or start,
2 on bad usage.`

// helpFlag is -?/--help. kong's own help flag is -h, which the original
// daemon uses for the destination host.
type helpFlag bool

// BeforeReset prints the help and exits 0.
func (helpFlag) BeforeReset(ctx *kong.Context) error {
	if err := ctx.PrintUsage(false); err != nil {
		return err
	}
	ctx.Kong.Exit(0)
	return nil
}

// IgnoreDefault lets --help apply before the default command is chosen.
func (helpFlag) IgnoreDefault() {}

// portAt is a PORT[@HOST] option value.
type portAt struct{ proxy.PortAt }

func (p *portAt) UnmarshalText(b []byte) error {
	v, err := proxy.ParsePortAt(string(b))
	p.PortAt = v
	return err
}

// allowEntry is one -r value.
type allowEntry struct{ netip.Prefix }

func (a *allowEntry) UnmarshalText(b []byte) error {
	v, err := proxy.ParseAllow(string(b))
	a.Prefix = v
	return err
}

// pathArg is a file or prefix option, made absolute and never empty. A
// trailing slash is kept: -f DIR/ names the folder of the data files.
type pathArg string

func (p *pathArg) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		return errors.New("empty path")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return err
	}
	if strings.HasSuffix(s, "/") && !strings.HasSuffix(abs, "/") {
		abs += "/"
	}
	*p = pathArg(abs)
	return nil
}

// commandArg is -u or -uT: a command that is not blank.
type commandArg string

func (c *commandArg) UnmarshalText(b []byte) error {
	if strings.TrimSpace(string(b)) == "" {
		return errors.New("empty command")
	}
	*c = commandArg(b)
	return nil
}

// usageError is bad input: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode carries kong's exit requests (help, version) out of Parse.
type exitCode int

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain parses args and runs the daemon; it returns the exit status.
func realMain(args []string, stdout, stderr io.Writer) (code int) {
	var c cli
	parser, err := newParser(&c, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ipprotd: %v\n", err)
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			ec, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			code = int(ec)
		}
	}()
	words := normaliseArgs(args, flagTakesValue(parser))
	if name := missingValue(words, valueFlagOf(parser)); name != "" {
		fmt.Fprintf(stderr, "ipprotd: %s\n", optionNames("--"+name+": missing value"))
		return 2
	}
	kctx, err := parser.Parse(words)
	if err != nil {
		fmt.Fprintf(stderr, "ipprotd: %s\n", optionNames(err.Error()))
		return 2
	}
	if strings.HasPrefix(kctx.Command(), "cat") {
		return c.Cat.run(string(c.ConnLog), c.ConnLogFormat, stdout, stderr)
	}
	cfg, err := c.config()
	if err != nil {
		fmt.Fprintf(stderr, "ipprotd: %v\n", err)
		return 2
	}
	if cfg.daemon && os.Getenv(notifyEnv) == "" {
		return detach(stderr)
	}
	if err := run(context.Background(), cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "ipprotd: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func newParser(c *cli, stdout, stderr io.Writer) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("ipprotd"),
		kong.Description(description),
		kong.NoDefaultHelp(),
		// As getopt(3) does: the word after an option that takes a value is
		// its value, also when it begins with "-" (-C "-- %d").
		kong.WithHyphenPrefixedParameters(true),
		kong.ExplicitGroups(groups),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{NoExpandSubcommands: true, WrapUpperBound: 100}),
		kong.Help(helpPrinter),
		kong.Vars{
			"version":        versionString(),
			"connlog_format": connlog.DefaultFormat,
		},
	)
}

// helpPrinter is kong's, with a usage line that says the proxy needs no
// command word: kong's own would be "ipprotd <command> [flags]".
func helpPrinter(o kong.HelpOptions, ctx *kong.Context) error {
	if ctx.Selected() != nil {
		return kong.DefaultHelpPrinter(o, ctx)
	}
	var b bytes.Buffer
	out := ctx.Stdout
	ctx.Stdout = &b
	err := kong.DefaultHelpPrinter(o, ctx)
	ctx.Stdout = out
	help := strings.Replace(b.String(), "Usage: ipprotd <command> [flags]",
		"Usage: ipprotd [flags]\n       ipprotd cat <FILE> ... [flags]", 1)
	_, werr := io.WriteString(out, help)
	return errors.Join(err, werr)
}

func versionString() string {
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return "ipprotd " + v
}

// shortNames maps long option names to the original's short ones, so that
// every error names the option the way the user probably wrote it.
var shortNames = map[string]string{
	"listen": "-p", "out-host": "-h", "out": "-P", "buffer-size": "-b",
	"data-log": "-f", "log-in": "-l", "log-both": "-L", "printable": "-s",
	"gzip": "-z", "bzip2": "-j", "stamp-interval": "-t", "block-stamps": "-M",
	"post-cmd": "-u", "post-cmd-times": "-uT", "conn-log": "-c",
	"conn-log-format": "-C", "allow": "-r", "daemon": "-D", "pid-file": "-Dp",
}

// optionNames rewrites kong's "--listen" into "-p/--listen" in a message,
// and shortens kong's wordier messages to what a user needs.
func optionNames(msg string) string {
	if i := strings.Index(msg, ", did you mean one of"); i >= 0 {
		msg = msg[:i] + " (see ipprotd --help)"
	}
	if i := strings.Index(msg, `expected `); i >= 0 && strings.HasSuffix(msg, `but got "EOL" (<EOL>)`) {
		msg = msg[:i] + "missing value"
	}
	for long, short := range shortNames {
		for _, sep := range []string{": ", " ", "=", ""} {
			old := "--" + long + sep
			if strings.HasPrefix(msg, old) || strings.Contains(msg, " "+old) {
				if sep == "" && !strings.HasSuffix(msg, old) {
					continue
				}
				return strings.Replace(msg, old, short+"/"+old, 1)
			}
		}
	}
	return msg
}

// config is the checked configuration the daemon runs with.
type config struct {
	listenAddr string
	outHost    string
	outPort    uint16
	allow      *proxy.AllowList
	proxy      proxy.Config

	record     *recorder.Config // nil without -f
	connLog    string
	connFormat *connlog.Format
	post       *postproc.Config // nil without -u/-uT
	postOpt    string           // -u/--post-cmd or -uT/--post-cmd-times, for errors

	daemon       bool
	pidFile      string
	logFormat    string
	logFile      string
	drainTimeout time.Duration
}

// config checks the parsed options against each other and turns them into
// a config. Every error names the option and is a usage error.
func (c *cli) config() (*config, error) {
	needsF := []struct {
		set  bool
		name string
	}{
		{c.LogIn, "-l"}, {c.LogBoth, "-L"}, {c.Printable, "-s"}, {c.Gzip, "-z"},
		{c.Bzip2, "-j"}, {c.StampInterval != nil, "-t"}, {c.BlockStamps, "-M"},
		{c.PostCmd != "", "-u"}, {c.PostCmdTimes != "", "-uT"},
	}
	for _, o := range needsF {
		if o.set && c.DataLog == "" {
			return nil, usagef("%s needs -f", o.name)
		}
	}
	switch {
	case c.LogIn && c.LogBoth:
		return nil, usagef("-l and -L cannot be used together")
	case c.Gzip && c.Bzip2:
		return nil, usagef("-z and -j cannot be used together")
	case c.PostCmd != "" && c.PostCmdTimes != "":
		return nil, usagef("-u and -uT cannot be used together")
	case c.ConnLogFormat != nil && c.ConnLog == "":
		return nil, usagef("-C needs -c")
	case c.BufferSize < 1 || c.BufferSize > maxBuffer:
		return nil, usagef("-b/--buffer-size: %d is outside 1-%d", c.BufferSize, maxBuffer)
	case c.StampInterval != nil && *c.StampInterval < 1:
		return nil, usagef("-t: %d is not a number of seconds (1 or more)", *c.StampInterval)
	case c.ConnectTimeout <= 0:
		return nil, usagef("--connect-timeout: %v must be positive", c.ConnectTimeout)
	case c.IdleTimeout < 0:
		return nil, usagef("--idle-timeout: %v cannot be negative", c.IdleTimeout)
	case c.PostTimeout < 0:
		return nil, usagef("--post-timeout: %v cannot be negative", c.PostTimeout)
	case c.DrainTimeout < 0:
		return nil, usagef("--drain-timeout: %v cannot be negative", c.DrainTimeout)
	case c.MaxConns < 0:
		return nil, usagef("--max-conns: %d cannot be negative", c.MaxConns)
	case c.PostJobs < 1:
		return nil, usagef("--post-jobs: %d must be 1 or more", c.PostJobs)
	case c.FlushInterval <= 0:
		return nil, usagef("--flush-interval: %v must be positive", c.FlushInterval)
	case c.GzipLevel != nil && !c.Gzip:
		return nil, usagef("--gzip-level needs -z")
	case c.GzipLevel != nil && (*c.GzipLevel < 1 || *c.GzipLevel > 9):
		return nil, usagef("--gzip-level: %d is outside 1-9", *c.GzipLevel)
	}
	outHost, err := proxy.ParseHost(c.OutHost)
	if err != nil {
		return nil, usagef("-h/--out-host: %v", err)
	}
	if c.Out.Host != "" {
		outHost = c.Out.Host
	}
	cfg := &config{
		listenAddr:   proxy.JoinHostPort(c.Listen.Host, c.Listen.Port),
		outHost:      outHost,
		outPort:      c.Out.Port,
		daemon:       c.Daemon,
		pidFile:      string(c.PidFile),
		logFormat:    c.LogFormat,
		logFile:      string(c.LogFile),
		drainTimeout: c.DrainTimeout,
		connLog:      string(c.ConnLog),
	}
	prefixes := make([]netip.Prefix, len(c.Allow))
	for i, a := range c.Allow {
		prefixes[i] = a.Prefix
	}
	cfg.allow = proxy.NewAllowList(prefixes...)
	if c.ConnLog != "" {
		format := connlog.DefaultFormat
		if c.ConnLogFormat != nil {
			format = *c.ConnLogFormat
		}
		if cfg.connFormat, err = connlog.Compile(format); err != nil {
			return nil, usagef("-C/--conn-log-format: %v", err)
		}
		if err := checkWritableDir(filepath.Dir(string(c.ConnLog))); err != nil {
			return nil, usagef("-c/--conn-log: %v", err)
		}
	}
	for _, o := range []struct{ opt, path string }{{"--pid-file", string(c.PidFile)}, {"--log-file", string(c.LogFile)}} {
		if o.path == "" {
			continue
		}
		if err := checkWritableDir(filepath.Dir(o.path)); err != nil {
			return nil, usagef("%s: %v", o.opt, err)
		}
	}
	if c.DataLog != "" {
		cfg.record = c.recorderConfig()
	}
	if cmd, times := string(c.PostCmd), c.PostCmdTimes != ""; cmd != "" || times {
		opt := "-u/--post-cmd"
		if times {
			cmd, opt = string(c.PostCmdTimes), "-uT/--post-cmd-times"
		}
		if err := postproc.Check(cmd); err != nil {
			return nil, usagef("%s: %v", opt, err)
		}
		cfg.post = &postproc.Config{Command: cmd, Times: times, Jobs: c.PostJobs, Timeout: c.PostTimeout}
		cfg.postOpt = opt
	}
	cfg.proxy = proxy.Config{
		OutHost:               cfg.outHost,
		OutPort:               cfg.outPort,
		Allow:                 cfg.allow,
		BufferSize:            c.BufferSize,
		ConnectTimeout:        c.ConnectTimeout,
		IdleTimeout:           c.IdleTimeout,
		MaxConns:              c.MaxConns,
		ContinueOnRecordError: c.OnRecordError == "continue",
	}
	return cfg, nil
}

// maxBuffer bounds -b: two blocks of it may be in flight per connection.
const maxBuffer = 64 << 20

func (c *cli) recorderConfig() *recorder.Config {
	rc := &recorder.Config{
		Prefix:        string(c.DataLog),
		Printable:     c.Printable,
		BlockStamps:   c.BlockStamps,
		FlushInterval: c.FlushInterval,
	}
	if c.StampInterval != nil {
		rc.StampInterval = time.Duration(*c.StampInterval) * time.Second
	}
	switch {
	case c.LogBoth:
		rc.Record = [2]bool{datafile.In: true, datafile.Out: true}
	case c.LogIn:
		rc.Record[datafile.In] = true
	default:
		rc.Record[datafile.Out] = true
	}
	switch {
	case c.Gzip:
		rc.Compression = datafile.Gzip
		if c.GzipLevel != nil {
			rc.GzipLevel = *c.GzipLevel
		}
	case c.Bzip2:
		rc.Compression = datafile.Bzip2
	}
	return rc
}

// checkWritableDir reports why files cannot be created in dir, if they
// cannot. A missing folder is fine where its nearest existing ancestor is
// writable: it will be created.
func checkWritableDir(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
				return fmt.Errorf("directory %s is not writable: %w", dir, err)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return err
		}
		dir = parent
	}
}

// run starts the daemon with cfg and serves until SIGTERM or SIGINT. Its
// errors are usageErrors where the configuration cannot work.
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

	logOut, closeLog, err := openDaemonLog(cfg, stderr, ready)
	if err != nil {
		return err
	}
	defer closeLog()
	logger := newLogger(logOut, cfg.logFormat)

	var clog *connlog.Log
	if cfg.connLog != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.connLog), 0o750); err != nil {
			return usagef("-c/--conn-log: %v", err)
		}
		if clog, err = connlog.Open(cfg.connLog); err != nil {
			return usagef("-c/--conn-log: %v", err)
		}
		defer clog.Close()
	}
	var rec *recorder.Opener
	if cfg.record != nil {
		if rec, err = recorder.New(*cfg.record); err != nil {
			return usagef("-f/--data-log: %v", err)
		}
	}
	var runner *postproc.Runner
	if cfg.post != nil {
		pc := *cfg.post
		pc.Logger = logger
		if runner, err = postproc.New(pc); err != nil {
			return usagef("%s: %v", cfg.postOpt, err)
		}
	}

	var pid *pidFile
	if cfg.pidFile != "" {
		if pid, err = claimPidFile(cfg.pidFile); err != nil {
			return err
		}
		defer pid.remove()
	}

	ln, err := proxy.Listen(context.Background(), cfg.listenAddr)
	if err != nil {
		return fmt.Errorf("-p/--listen: %w", err)
	}

	pcfg := cfg.proxy
	pcfg.Logger = logger
	pcfg.OnEnd = connectionEnded(clog, cfg.connFormat, runner, logger)
	if rec != nil {
		pcfg.OpenRecorder = openRecorder(rec)
	}
	srv := proxy.New(pcfg)

	if pid != nil {
		if err := pid.write(); err != nil {
			ln.Close()
			return err
		}
	}
	logger.Info("listening", "addr", ln.Addr().String(), "dest", proxy.JoinHostPort(cfg.outHost, cfg.outPort), "version", versionString())
	ready.ok()

	reopen := func() {
		for _, l := range []*connlog.Log{clog, logFileOf(logOut)} {
			if l == nil {
				continue
			}
			if err := l.Reopen(); err != nil {
				logger.Error("reopen log after SIGHUP", "err", err)
			}
		}
		logger.Info("logs reopened")
	}

	// Two tasks: the accept loop, and the wait for a stop followed by the
	// drain. An accept loop that fails ends the wait, so the drain runs
	// either way; its error is the exit status.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(srv, ln, cfg.listenAddr) })
	g.Go(func() error {
		waitForStop(gctx, signals, reopen, logger, srv)
		return stop(srv, runner, logger, cfg.drainTimeout, signals, reopen)
	})
	return g.Wait()
}

// serve runs the accept loop until Shutdown (nil) or a failure.
func serve(srv *proxy.Server, ln net.Listener, addr string) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		return fmt.Errorf("accept on %s: %w", addr, err)
	}
	return nil
}

// waitForStop returns at SIGTERM or SIGINT, or when ctx ends; SIGHUP
// reopens the logs meanwhile.
func waitForStop(ctx context.Context, signals <-chan os.Signal, reopen func(), logger *slog.Logger, srv *proxy.Server) {
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping", "reason", context.Cause(ctx).Error(), "active", srv.Active())
			return
		case s := <-signals:
			if s == syscall.SIGHUP {
				reopen()
				continue
			}
			logger.Info("stopping", "signal", s.String(), "active", srv.Active())
			return
		}
	}
}

// stop drains: sessions first, then post-processing commands. Each wait is
// bounded by drain (if not zero) and cut short by the next SIGTERM/SIGINT;
// sessions then end as aborted, commands are ended.
func stop(srv *proxy.Server, runner *postproc.Runner, logger *slog.Logger, drain time.Duration, signals <-chan os.Signal, reopen func()) error {
	wait := func(what string, shutdown func(context.Context) error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if drain > 0 {
			ctx, cancel = context.WithTimeout(ctx, drain)
			defer cancel()
		}
		done := make(chan error, 1)
		go func() { done <- shutdown(ctx) }()
		for {
			select {
			case err := <-done:
				if err != nil {
					logger.Warn("stopped waiting for "+what, "reason", err)
				}
				return
			case s := <-signals:
				if s == syscall.SIGHUP {
					reopen()
					continue
				}
				logger.Info("ending "+what+" now", "signal", s.String())
				cancel()
			}
		}
	}
	wait("connections", srv.Shutdown)
	if runner != nil {
		wait("post-processing commands", runner.Shutdown)
	}
	logger.Info("stopped")
	return nil
}

// connectionEnded returns the proxy's OnEnd: the connection-log line, then
// the post-processing command, in that order (SPEC §2).
func connectionEnded(clog *connlog.Log, format *connlog.Format, runner *postproc.Runner, logger *slog.Logger) func(*proxy.Facts) {
	return func(f *proxy.Facts) {
		if clog != nil {
			line := format.Append(make([]byte, 0, 256), f)
			if err := clog.Write(line); err != nil {
				logger.Error("connection log", "conn", f.N, "err", err)
			}
		}
		if runner != nil {
			runner.Enqueue(f)
		}
	}
}

func openRecorder(o *recorder.Opener) func(proxy.Session) (proxy.Recorder, string, error) {
	return func(s proxy.Session) (proxy.Recorder, string, error) {
		r, err := o.Open(recorder.Session{N: s.N, Start: s.Start, Client: s.Client.Addr(), Fail: s.Fail})
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
