package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ipprot/ipprot/cat"
	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/proxy"
	"github.com/ipprot/ipprot/replay"
	"github.com/ipprot/ipprot/verify"
)

// cli is ipprotd's command line: the proxy, run without a command word as
// the original daemon is, `ipprotd cat`, `ipprotd replay` and `ipprotd
// verify`. Every option of the original has its short form; its
// two-letter -Dp and -uT (tagged orig) are rewritten into long forms by
// normaliseArgs before kong sees them.
type cli struct {
	Help    helpFlag         `short:"?" help:"Show this help."`
	Version kong.VersionFlag `short:"v" help:"Show the version."`

	// Serve has no help of its own: ipprotd --help shows it, as the
	// program's.
	Serve   serveCmd   `cmd:"" default:"withargs" hidden:""`
	Cat     cat.Cmd    `cmd:"" help:"Read recordings: as text, raw bytes, a pcapng capture or the SQL of a PostgreSQL session."`
	Replay  replay.Cmd `cmd:"" help:"Play recordings again against a server: their bytes, or the statements of PostgreSQL sessions, reporting what differs."`
	Verify  verify.Cmd `cmd:"" help:"Check audit journals (--audit-log): their chain, signatures and data files."`
	HelpCmd helpCmd    `cmd:"" name:"help" hidden:"" help:"Show the help of ipprotd or of a command."`
}

// serveCmd is the proxy's options: the original daemon's, and those it
// lacked, with long forms only.
type serveCmd struct {
	Listen  portAt       `short:"p" placeholder:"PORT[@HOST]" default:"8080" group:"fwd" help:"Listen on PORT, on all addresses (IPv4 and IPv6) or only on HOST (default: ${default})."`
	OutHost hostArg      `short:"h" placeholder:"HOST" default:"localhost" group:"fwd" help:"Forward to HOST, a name (resolved at each connection) or an address (default: ${default})."`
	Out     portAt       `short:"P" placeholder:"PORT[@HOST]" default:"80" group:"fwd" help:"Forward to PORT; @HOST overrides -h (default: ${default})."`
	Allow   []allowEntry `short:"r" placeholder:"IP|CIDR" sep:"none" group:"fwd" help:"Allow only this client address or prefix; repeatable (default: everyone)."`

	BufferSize     int           `short:"b" placeholder:"BYTES" default:"300000" group:"fwd" help:"Read, record and write at most BYTES as one block (default: ${default})."`
	ConnectTimeout time.Duration `placeholder:"DURATION" default:"10s" group:"fwd" help:"Give up dialing the destination after DURATION (default: ${default})."`
	IdleTimeout    time.Duration `placeholder:"DURATION" default:"0" group:"fwd" help:"End a connection idle for DURATION (default: never; database sessions idle for hours)."`
	WriteTimeout   time.Duration `placeholder:"DURATION" default:"5m" group:"fwd" help:"End a connection whose client or destination has taken no byte for DURATION while ipprotd holds bytes for it; 0: never (default: ${default})."`
	MaxConns       int           `placeholder:"N" default:"0" group:"fwd" help:"Refuse connections beyond N at once (default: no limit)."`

	ProxyProtocolFrom []allowEntry `placeholder:"IP|CIDR" sep:"none" group:"fwd" help:"Connections from this peer (a load balancer) must begin with a PROXY protocol header, v1 or v2; the client it carries is the client for everything. Repeatable."`
	SendProxy         proxyVersion `placeholder:"v1|v2" group:"fwd" help:"Send the destination a PROXY protocol header with the client's address before its bytes (not recorded)."`
	ReusePort         bool         `group:"fwd" help:"Listen with SO_REUSEPORT (also --metrics-listen), so that a new ipprotd can start on the same port while this one drains: a rolling upgrade (docs/deploy.md)."`

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
	PostCmdTimes commandArg    `orig:"-uT" placeholder:"CMD" group:"post" help:"(-uT) Like -u, adding start, end, bytes received and bytes sent as $6..$9."`
	PostJobs     int           `placeholder:"N" default:"4" group:"post" help:"Run at most N post-processing commands at once (default: ${default})."`
	PostQueue    int           `placeholder:"N" default:"10000" group:"post" help:"Let at most N commands wait for their turn; a run beyond is not made and is logged with its file (default: ${default})."`
	PostTimeout  time.Duration `placeholder:"DURATION" default:"0" group:"post" help:"End a post-processing command, with its process group, after DURATION (default: never)."`

	ConnLog       pathArg `short:"c" placeholder:"FILE" group:"log" help:"Append one line per connection to FILE."`
	ConnLogFormat *string `short:"C" placeholder:"FORMAT" group:"log" help:"Format of that line; see docs/ipprotd.md (default: \"${connlog_format}\")."`
	AuditLog      pathArg `placeholder:"FILE" group:"log" help:"Append a tamper-evident JSON entry per connection to FILE: its facts, its data file's size and SHA-256, chained to the entry before; synced before the hook runs. See docs/integrity.md."`
	AuditKey      pathArg `placeholder:"FILE" group:"log" help:"Sign every --audit-log entry with this Ed25519 private key (PKCS#8 PEM: openssl genpkey -algorithm ed25519)."`

	TLSCert            pathArg `placeholder:"FILE" group:"tls" help:"Terminate the clients' TLS with this PEM certificate (chain), recording the plaintext; needs --tls-key. Re-read on SIGHUP."`
	TLSKey             pathArg `placeholder:"FILE" group:"tls" help:"The PEM private key of --tls-cert (ECDSA, RSA or Ed25519)."`
	TLSClientCA        pathArg `placeholder:"FILE" group:"tls" help:"Require client certificates, verified against these PEM CA certificates."`
	UpstreamTLS        bool    `group:"tls" help:"Speak TLS to the destination, verified against the system's CAs or --upstream-ca."`
	UpstreamCA         pathArg `placeholder:"FILE" group:"tls" help:"Verify the destination against these PEM CA certificates."`
	UpstreamServerName string  `placeholder:"NAME" group:"tls" help:"The name the destination's certificate must have; also the SNI (default: the destination host)."`
	UpstreamCert       pathArg `placeholder:"FILE" group:"tls" help:"Present this PEM client certificate to the destination; needs --upstream-key."`
	UpstreamKey        pathArg `placeholder:"FILE" group:"tls" help:"The PEM private key of --upstream-cert."`
	UpstreamInsecure   bool    `group:"tls" help:"Do not verify the destination's certificate (logged with every connection)."`
	StartTLS           string  `name:"starttls" placeholder:"postgres" group:"tls" help:"Speak the protocol's own TLS negotiation on both sides: postgres (SSLRequest)."`
	TLSRequired        bool    `group:"tls" help:"With --starttls postgres and --tls-cert: refuse clients that do not ask for TLS."`

	Daemon        bool          `short:"D" group:"run" help:"Detach and run in the background."`
	PidFile       pathArg       `orig:"-Dp" also:"--daemon" placeholder:"FILE" group:"run" help:"Write the pid to FILE (-Dp FILE detaches too)."`
	LogFormat     string        `enum:"text,json" default:"text" placeholder:"text|json" group:"run" help:"Format of the daemon's own log (default: ${default})."`
	LogFile       pathArg       `placeholder:"FILE" group:"run" help:"Write the daemon's own log to FILE (default: stderr; with -D, syslog)."`
	DrainTimeout  time.Duration `placeholder:"DURATION" default:"0" group:"run" help:"On SIGTERM, wait at most DURATION for connections, then for commands, before ending them (default: wait)."`
	MetricsListen hostPort      `placeholder:"HOST:PORT" group:"run" help:"Serve Prometheus metrics at http://HOST:PORT/metrics (default: none)."`
}

var groups = []kong.Group{
	{Key: "fwd", Title: "Listening and forwarding:"},
	{Key: "rec", Title: "Recording (need -f):"},
	{Key: "post", Title: "Post-processing (need -f):"},
	{Key: "log", Title: "Connection log and audit journal:"},
	{Key: "tls", Title: "Seeing inside TLS (docs/ipprotd.md, Recording TLS):"},
	{Key: "run", Title: "Running:"},
}

// Help is the proxy's description, under the usage lines of ipprotd --help.
func (*serveCmd) Help() string {
	return `A recording TCP proxy. ipprotd listens on a port and forwards every connection to one destination; it can log each connection (-c), record its traffic in a file of its own (-f) and run a command when it ends (-u).

  ipprotd -p 5432 -h 127.0.0.1 -P 3333 -l -f /var/log/conn_rec/prot -z -Dp /var/log/conn_rec/ipprot_pid_5432

Exit status: 0 after SIGTERM or SIGINT, 1 when it cannot listen or start, 2 on bad usage.`
}

// usageLines open ipprotd --help: the proxy needs no command word.
const usageLines = "Usage: ipprotd [flags]\n       ipprotd cat <FILE> ... [flags]\n       ipprotd replay <FILE> ... [flags]\n       ipprotd verify [--pubkey FILE] <JOURNAL> ... [flags]\n"

// newParser returns the parser of c, writing help and version to stdout.
// exit receives kong's exit requests (help, version): cmdline.Exit.
func newParser(c *cli, stdout, stderr io.Writer, exit kong.Option) (*kong.Kong, error) {
	return kong.New(c, append(cmdline.Mappers(),
		kong.Name("ipprotd"),
		kong.NoDefaultHelp(),
		kong.WithHyphenPrefixedParameters(true), // a value may begin with "-", as getopt(3) takes it: -C "-- %d"
		kong.ExplicitGroups(groups),
		kong.Writers(stdout, stderr),
		exit,
		kong.ConfigureHelp(kong.HelpOptions{NoExpandSubcommands: true, WrapUpperBound: 100}),
		kong.Help(printHelp),
		kong.Vars{
			"version":        versionString(),
			"connlog_format": connlog.DefaultFormat,
		},
	)...)
}

// helpFlag is -?/--help. kong's own help flag is -h, which the original
// daemon uses for the destination host.
type helpFlag bool

// BeforeReset prints the help of the command on the line and exits 0.
func (helpFlag) BeforeReset(ctx *kong.Context) error {
	if err := ctx.PrintUsage(false); err != nil {
		return err
	}
	ctx.Kong.Exit(0)
	return nil
}

// IgnoreDefault lets --help apply before the default command is chosen.
func (helpFlag) IgnoreDefault() {}

// helpCmd is `ipprotd help [COMMAND]`.
type helpCmd struct {
	Command string `arg:"" optional:"" help:"The command to show the help of (cat, replay, verify)."`
}

// Run prints the help of the proxy or of the command named.
func (h *helpCmd) Run(kctx *kong.Context) error {
	args := []string{}
	if h.Command != "" {
		args = append(args, h.Command)
	}
	ctx, err := kong.Trace(kctx.Kong, args)
	if err == nil {
		err = ctx.Error
	}
	if err != nil {
		return cmdline.Usagef("help: %v (see ipprotd --help)", err)
	}
	return ctx.PrintUsage(false)
}

// printHelp is kong's help printer, except that the proxy's help (at the
// root, or with the hidden serve command selected) opens with
// usageLines: kong's own would be "ipprotd <command> [flags]".
func printHelp(o kong.HelpOptions, ctx *kong.Context) error {
	if sel := ctx.Selected(); sel != nil && sel.Name != "serve" {
		return kong.DefaultHelpPrinter(o, ctx)
	}
	serve, err := kong.Trace(ctx.Kong, []string{"serve"})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(ctx.Stdout, usageLines); err != nil {
		return err
	}
	o.NoAppSummary = true
	return kong.DefaultHelpPrinter(o, serve)
}

// portAt is a PORT[@HOST] option value.
type portAt struct{ proxy.PortAt }

func (p *portAt) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) (err error) {
		p.PortAt, err = proxy.ParsePortAt(s)
		return err
	})
}

// hostArg is a -h value: a name or an address, IPv6 with or without
// brackets.
type hostArg string

func (h *hostArg) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		host, err := proxy.ParseHost(s)
		*h = hostArg(host)
		return err
	})
}

// allowEntry is one -r value.
type allowEntry struct{ netip.Prefix }

func (a *allowEntry) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) (err error) {
		a.Prefix, err = proxy.ParseAllow(s)
		return err
	})
}

// proxyVersion is --send-proxy's value: v1 or v2, 0 where not given.
type proxyVersion int

func (v *proxyVersion) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		switch s {
		case "v1":
			*v = 1
		case "v2":
			*v = 2
		default:
			return fmt.Errorf("%q is not one of v1, v2", s)
		}
		return nil
	})
}

// hostPort is a HOST:PORT value, as Go's and Prometheus's exporters take
// it: ":9100" listens on every address.
type hostPort string

func (h *hostPort) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		addr, err := parseHostPort(s)
		*h = hostPort(addr)
		return err
	})
}

// pathArg is a file or prefix option, made absolute and never empty. A
// trailing slash is kept: -f DIR/ names the folder of the data files.
type pathArg string

func (p *pathArg) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
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
	})
}

// commandArg is -u or -uT: a command that is not blank.
type commandArg string

func (c *commandArg) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errors.New("empty command")
		}
		*c = commandArg(s)
		return nil
	})
}
