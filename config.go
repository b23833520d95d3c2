package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ipprot/ipprot/audit"
	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/postproc"
	"github.com/ipprot/ipprot/proxy"
	"github.com/ipprot/ipprot/recorder"
	"github.com/ipprot/ipprot/tlsfiles"
)

// config is the checked configuration the daemon runs with.
type config struct {
	listenAddr string
	outHost    string
	outPort    uint16
	allow      *proxy.AllowList
	proxy      proxy.Config

	record       *recorder.Config // nil without -f
	connLog      string
	connFormat   *connlog.Format
	auditLog     string             // "" without --audit-log
	auditKey     ed25519.PrivateKey // nil: entries unsigned
	auditKeyFile string
	post         *postproc.Config // nil without -u/-uT
	postOpt      string           // -u/--post-cmd or -uT/--post-cmd-times, for errors

	tlsServer   *tlsfiles.Server   // --tls-cert: reloaded on SIGHUP
	tlsUpstream *tlsfiles.Upstream // --upstream-tls
	insecure    bool               // --upstream-insecure

	daemon       bool
	pidFile      string
	logFormat    string
	logFile      string
	drainTimeout time.Duration
	reusePort    bool   // --reuse-port
	metricsAddr  string // --metrics-listen; "" without
}

// config checks the parsed options against each other and turns them into
// a config. Every error names the option and is a usage error.
func (c *serveCmd) config() (*config, error) {
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
			return nil, cmdline.Usagef("%s needs -f", o.name)
		}
	}
	switch {
	case c.LogIn && c.LogBoth:
		return nil, cmdline.Usagef("-l and -L cannot be used together")
	case c.Gzip && c.Bzip2:
		return nil, cmdline.Usagef("-z and -j cannot be used together")
	case c.PostCmd != "" && c.PostCmdTimes != "":
		return nil, cmdline.Usagef("-u and -uT cannot be used together")
	case c.ConnLogFormat != nil && c.ConnLog == "":
		return nil, cmdline.Usagef("-C needs -c")
	case c.AuditKey != "" && c.AuditLog == "":
		return nil, cmdline.Usagef("--audit-key needs --audit-log")
	case c.AuditLog != "" && !utf8.ValidString(string(c.DataLog)):
		// The journal is JSON: a path that is not UTF-8 could not be
		// written as it is, nor found again by ipprotd verify.
		return nil, cmdline.Usagef("-f/--data-log: %q is not UTF-8, which --audit-log entries cannot hold", string(c.DataLog))
	case c.BufferSize < 1 || c.BufferSize > maxBuffer:
		return nil, cmdline.Usagef("-b/--buffer-size: %d is outside 1-%d", c.BufferSize, maxBuffer)
	case c.StampInterval != nil && *c.StampInterval < 1:
		return nil, cmdline.Usagef("-t: %d is not a number of seconds (1 or more)", *c.StampInterval)
	case c.ConnectTimeout <= 0:
		return nil, cmdline.Usagef("--connect-timeout: %v must be positive", c.ConnectTimeout)
	case c.WriteTimeout < 0:
		return nil, cmdline.Usagef("--write-timeout: %v cannot be negative", c.WriteTimeout)
	case c.IdleTimeout < 0:
		return nil, cmdline.Usagef("--idle-timeout: %v cannot be negative", c.IdleTimeout)
	case c.PostTimeout < 0:
		return nil, cmdline.Usagef("--post-timeout: %v cannot be negative", c.PostTimeout)
	case c.DrainTimeout < 0:
		return nil, cmdline.Usagef("--drain-timeout: %v cannot be negative", c.DrainTimeout)
	case c.MaxConns < 0:
		return nil, cmdline.Usagef("--max-conns: %d cannot be negative", c.MaxConns)
	case c.PostJobs < 1:
		return nil, cmdline.Usagef("--post-jobs: %d must be 1 or more", c.PostJobs)
	case c.PostQueue < 1:
		return nil, cmdline.Usagef("--post-queue: %d must be 1 or more", c.PostQueue)
	case c.FlushInterval <= 0:
		return nil, cmdline.Usagef("--flush-interval: %v must be positive", c.FlushInterval)
	case c.GzipLevel != nil && !c.Gzip:
		return nil, cmdline.Usagef("--gzip-level needs -z")
	case c.GzipLevel != nil && (*c.GzipLevel < 1 || *c.GzipLevel > 9):
		return nil, cmdline.Usagef("--gzip-level: %d is outside 1-9", *c.GzipLevel)
	}
	outHost := string(c.OutHost)
	var err error
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
		reusePort:    c.ReusePort,
		metricsAddr:  string(c.MetricsListen),
	}
	prefixes := make([]netip.Prefix, len(c.Allow))
	for i, a := range c.Allow {
		prefixes[i] = a.Prefix
	}
	cfg.allow = proxy.NewAllowList(prefixes...)
	if c.ConnLog != "" {
		if cfg.connFormat, err = connlog.CompileGiven(c.ConnLogFormat); err != nil {
			return nil, cmdline.Usagef("-C/--conn-log-format: %v", err)
		}
		if err := checkWritableDir(filepath.Dir(string(c.ConnLog))); err != nil {
			return nil, cmdline.Usagef("-c/--conn-log: %v", err)
		}
	}
	if c.AuditLog != "" {
		cfg.auditLog = string(c.AuditLog)
		if err := checkWritableDir(filepath.Dir(cfg.auditLog)); err != nil {
			return nil, cmdline.Usagef("--audit-log: %v", err)
		}
	}
	if c.AuditKey != "" {
		if cfg.auditKey, err = audit.LoadPrivateKey(string(c.AuditKey)); err != nil {
			return nil, cmdline.Usagef("--audit-key: %v", err)
		}
		cfg.auditKeyFile = string(c.AuditKey)
	}
	for _, o := range []struct{ opt, path string }{{"--pid-file", string(c.PidFile)}, {"--log-file", string(c.LogFile)}} {
		if o.path == "" {
			continue
		}
		if err := checkWritableDir(filepath.Dir(o.path)); err != nil {
			return nil, cmdline.Usagef("%s: %v", o.opt, err)
		}
	}
	if c.DataLog != "" {
		cfg.record = c.recorderConfig()
		// Hashing costs CPU for every byte of a plain file: only where
		// the sum is used.
		cfg.record.Hash = cfg.connFormat != nil && cfg.connFormat.Has('h') ||
			c.PostCmd != "" || c.PostCmdTimes != "" || cfg.auditLog != ""
	}
	if cmd, times := string(c.PostCmd), c.PostCmdTimes != ""; cmd != "" || times {
		opt := "-u/--post-cmd"
		if times {
			cmd, opt = string(c.PostCmdTimes), "-uT/--post-cmd-times"
		}
		if err := postproc.Check(cmd); err != nil {
			return nil, cmdline.Usagef("%s: %v", opt, err)
		}
		cmd = postproc.AbsCommand(cmd)
		cfg.post = &postproc.Config{Command: cmd, Times: times, Jobs: c.PostJobs, Queue: c.PostQueue, Timeout: c.PostTimeout}
		cfg.postOpt = opt
	}
	if err := c.tlsConfig(cfg); err != nil {
		return nil, err
	}
	cfg.proxy = proxy.Config{
		OutHost:               cfg.outHost,
		OutPort:               cfg.outPort,
		Allow:                 cfg.allow,
		BufferSize:            c.BufferSize,
		ConnectTimeout:        c.ConnectTimeout,
		IdleTimeout:           c.IdleTimeout,
		WriteTimeout:          c.WriteTimeout,
		MaxConns:              c.MaxConns,
		ContinueOnRecordError: c.OnRecordError == "continue",
		SendProxy:             int(c.SendProxy),
	}
	if len(c.ProxyProtocolFrom) > 0 {
		from := make([]netip.Prefix, len(c.ProxyProtocolFrom))
		for i, a := range c.ProxyProtocolFrom {
			from[i] = a.Prefix
		}
		cfg.proxy.ProxyFrom = proxy.NewAllowList(from...)
	}
	if cfg.tlsServer != nil || cfg.tlsUpstream != nil || c.StartTLS != "" {
		t := &proxy.TLS{Postgres: c.StartTLS == "postgres", Required: c.TLSRequired}
		if cfg.tlsServer != nil {
			t.Client = cfg.tlsServer.Config()
		}
		if cfg.tlsUpstream != nil {
			t.Upstream = cfg.tlsUpstream.Config()
		}
		cfg.proxy.TLS = t
	}
	return cfg, nil
}

// maxBuffer bounds -b: two blocks of it may be in flight per connection.
const maxBuffer = 64 << 20

func (c *serveCmd) recorderConfig() *recorder.Config {
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

// tlsConfig checks the TLS options and loads their files into cfg.
func (c *serveCmd) tlsConfig(cfg *config) error {
	upstreamOnly := []struct {
		set  bool
		name string
	}{
		{c.UpstreamCA != "", "--upstream-ca"}, {c.UpstreamServerName != "", "--upstream-server-name"},
		{c.UpstreamCert != "", "--upstream-cert"}, {c.UpstreamKey != "", "--upstream-key"},
		{c.UpstreamInsecure, "--upstream-insecure"},
	}
	for _, o := range upstreamOnly {
		if o.set && !c.UpstreamTLS {
			return cmdline.Usagef("%s needs --upstream-tls", o.name)
		}
	}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return cmdline.Usagef("--tls-cert and --tls-key go together")
	case c.TLSClientCA != "" && c.TLSCert == "":
		return cmdline.Usagef("--tls-client-ca needs --tls-cert")
	case (c.UpstreamCert == "") != (c.UpstreamKey == ""):
		return cmdline.Usagef("--upstream-cert and --upstream-key go together")
	case c.StartTLS != "" && c.StartTLS != "postgres":
		return cmdline.Usagef("--starttls: %q is not a protocol ipprotd speaks (postgres)", c.StartTLS)
	case c.TLSRequired && (c.StartTLS != "postgres" || c.TLSCert == ""):
		return cmdline.Usagef("--tls-required needs --starttls postgres and --tls-cert")
	case c.UpstreamInsecure && c.UpstreamCA != "":
		return cmdline.Usagef("--upstream-insecure and --upstream-ca cannot be used together")
	}
	if c.UpstreamServerName != "" && !validServerName(c.UpstreamServerName) {
		return cmdline.Usagef("--upstream-server-name: %q is not a host name or IP address", c.UpstreamServerName)
	}
	var alpn []string
	if c.StartTLS == "postgres" {
		alpn = []string{"postgresql"}
	}
	if c.TLSCert != "" {
		srv, err := tlsfiles.NewServer(tlsfiles.ServerFiles{Cert: string(c.TLSCert), Key: string(c.TLSKey), ClientCA: string(c.TLSClientCA), ALPN: alpn})
		if err != nil {
			return cmdline.Usagef("--tls-cert: %v", err)
		}
		cfg.tlsServer = srv
	}
	if c.UpstreamTLS {
		name := c.UpstreamServerName
		if name == "" {
			name = cfg.outHost
		}
		up, err := tlsfiles.NewUpstream(tlsfiles.UpstreamFiles{CA: string(c.UpstreamCA), ServerName: name,
			Cert: string(c.UpstreamCert), Key: string(c.UpstreamKey), Insecure: c.UpstreamInsecure})
		if err != nil {
			return cmdline.Usagef("--upstream-tls: %v", err)
		}
		cfg.tlsUpstream, cfg.insecure = up, c.UpstreamInsecure
	}
	return nil
}

// validServerName reports whether s can be a TLS server name: a host name
// or an IP address.
func validServerName(s string) bool {
	_, err := proxy.ParseHost(s)
	return err == nil && !strings.ContainsAny(s, "[]")
}
