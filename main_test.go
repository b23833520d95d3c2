package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testParser returns the real parser's rewrites of the original's
// two-letter options and its idea of which words take a value.
func testParser(t testing.TB) (map[string][]string, func(string) bool) {
	t.Helper()
	var c cli
	var exit cmdline.Exit
	p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, exit.Option())
	if err != nil {
		t.Fatal(err)
	}
	return originalSpellings(p), flagTakesValue(p)
}

func TestNormaliseArgs(t *testing.T) {
	originals, takes := testParser(t)
	tests := []struct {
		in, want string
	}{
		{"-p 5432 -Dp /run/x.pid", "-p 5432 --daemon --pid-file /run/x.pid"},
		{"-uT /bin/send -f p", "--post-cmd-times /bin/send -f p"},
		{"-?", "-?"},
		{"-D -p 80", "-D -p 80"},
		// Values are never rewritten, whatever they look like.
		{"-C -uT -c log", "-C -uT -c log"},
		{"-u -Dp -f p", "-u -Dp -f p"},
		{"-Dp -uT", "--daemon --pid-file -uT"},
		{"-uT -Dp -f p", "--post-cmd-times -Dp -f p"},
		{"--conn-log-format -Dp", "--conn-log-format -Dp"},
		{"--conn-log-format=x -Dp f", "--conn-log-format=x --daemon --pid-file f"},
		// A cluster of one-letter options ending in one with a value.
		{"-Lsp 80 -Dp f", "-Lsp 80 --daemon --pid-file f"},
		{"-p80 -Dp f", "-p80 --daemon --pid-file f"},
		// A bool cluster takes no value.
		{"-Lsz -Dp f", "-Lsz --daemon --pid-file f"},
		{"-- -Dp", "-- -Dp"},
		{"-Dp", "--daemon --pid-file"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := strings.Join(normaliseArgs(strings.Fields(tt.in), originals, takes), " ")
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// parse runs the command-line half of realMain: the proxy's options,
// checked.
func parse(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	var c cli
	var exit cmdline.Exit
	p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, exit.Option())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(normaliseArgs(args, originalSpellings(p), flagTakesValue(p))); err != nil {
		return nil, err
	}
	return c.Serve.config()
}

// TestHyphenValues: a value that begins with "-" is taken as the value,
// as getopt(3) takes it, not as the next option.
func TestHyphenValues(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parse(t, "-f", dir+"/-x", "-c", dir+"/log", "-C", "-- %N %x", "-r", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.record == nil || cfg.record.Prefix != dir+"/-x" {
		t.Errorf("-f: %+v", cfg.record)
	}
	if got := string(cfg.connFormat.Append(nil, &proxy.Facts{N: 7})); got != "-- 7 ok\n" {
		t.Errorf("-C: an entry renders as %q; want %q", got, "-- 7 ok\n")
	}
	if _, err := parse(t, "-f", "-L"); err != nil {
		t.Errorf("-f -L: %v; want -L taken as the prefix", err)
	}
}

// TestManualCommandLines: both examples of the manual parse as written.
func TestManualCommandLines(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parse(t, strings.Fields("-p 5432 -h 127.0.0.1 -P 3333 -l -f "+dir+"/conn_rec/prot -z -Dp "+dir+"/conn_rec/ipprot_pid_5432")...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listenAddr != ":5432" || cfg.outHost != "127.0.0.1" || cfg.outPort != 3333 || !cfg.daemon || cfg.pidFile != dir+"/conn_rec/ipprot_pid_5432" {
		t.Errorf("first example: %+v", cfg)
	}
	if r := cfg.record; r == nil || r.Prefix != dir+"/conn_rec/prot" || r.Record != [2]bool{datafile.In: true} || r.Compression != datafile.Gzip {
		t.Errorf("first example recording: %+v", r)
	}

	hook := filepath.Join(dir, "send_ipprot")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err = parse(t, strings.Fields("-p 7777@10.1.2.33 -P 5678@10.1.2.34 -L -s -f "+dir+"/prot -j -u "+hook+" -Dp "+dir+"/pid_7777")...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listenAddr != "10.1.2.33:7777" || cfg.outHost != "10.1.2.34" || cfg.outPort != 5678 || !cfg.daemon {
		t.Errorf("second example: %+v", cfg)
	}
	if r := cfg.record; r == nil || r.Record != [2]bool{true, true} || !r.Printable || r.Compression != datafile.Bzip2 {
		t.Errorf("second example recording: %+v", r)
	}
	if p := cfg.post; p == nil || p.Command != hook || p.Times {
		t.Errorf("second example post-processing: %+v", p)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listenAddr != ":8080" || cfg.outHost != "localhost" || cfg.outPort != 80 || cfg.record != nil || cfg.post != nil || cfg.daemon {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.proxy.BufferSize != 300000 || cfg.proxy.ConnectTimeout.String() != "10s" || cfg.proxy.IdleTimeout != 0 || cfg.proxy.MaxConns != 0 || cfg.allow.Len() != 0 {
		t.Errorf("proxy defaults: %+v", cfg.proxy)
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parse(t, "-p", "5432@[::1]", "-h", "db.example", "-P", "6543", "-b", "4096",
		"-f", dir+"/p", "-L", "-M", "-t", "30", "-s",
		"-c", dir+"/conn.log", "-C", "%i %x%n", "-r", "10.0.0.0/8", "-r", "::ffff:192.168.1.7", "-r", "2001:db8::/32",
		"-uT", "true", "--max-conns", "50", "--idle-timeout", "1h", "--on-record-error", "continue")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listenAddr != "[::1]:5432" || cfg.outHost != "db.example" || cfg.outPort != 6543 {
		t.Errorf("addresses: %q %q %d", cfg.listenAddr, cfg.outHost, cfg.outPort)
	}
	r := cfg.record
	if r.Record != [2]bool{true, true} || !r.BlockStamps || r.StampInterval.Seconds() != 30 || !r.Printable || r.Compression != datafile.None {
		t.Errorf("recording: %+v", r)
	}
	if cfg.post == nil || !cfg.post.Times || cfg.post.Command != "true" {
		t.Errorf("post: %+v", cfg.post)
	}
	if cfg.proxy.BufferSize != 4096 || cfg.proxy.MaxConns != 50 || cfg.proxy.IdleTimeout.String() != "1h0m0s" || !cfg.proxy.ContinueOnRecordError {
		t.Errorf("proxy: %+v", cfg.proxy)
	}
	for addr, want := range map[string]bool{"10.9.9.9": true, "192.168.1.7": true, "192.168.1.8": false, "2001:db8::5": true, "2001:db9::5": false} {
		if got := cfg.allow.Allows(mustAddr(t, addr)); got != want {
			t.Errorf("allows %s: %v; want %v", addr, got, want)
		}
	}
	if cfg.connFormat == nil {
		t.Errorf("-C not compiled")
	}

	for args, want := range map[string]int{"-z": 0, "-z --gzip-level 1": 1, "-z --gzip-level=9": 9} {
		cfg, err := parse(t, append([]string{"-f", dir + "/p"}, strings.Fields(args)...)...)
		if err != nil {
			t.Fatal(err)
		}
		if r := cfg.record; r.Compression != datafile.Gzip || r.GzipLevel != want {
			t.Errorf("%s: compression %v level %d; want gzip, level %d", args, r.Compression, r.GzipLevel, want)
		}
	}
}

// TestProxyProtocolOptions: --proxy-protocol-from builds the trusted
// peers' list, --send-proxy the version; neither is set by default.
func TestProxyProtocolOptions(t *testing.T) {
	cfg, err := parse(t, "--proxy-protocol-from", "10.0.0.0/8", "--proxy-protocol-from", "::ffff:192.0.2.7", "--send-proxy", "v2")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.proxy.SendProxy != 2 || cfg.proxy.ProxyFrom.Len() != 2 {
		t.Errorf("send-proxy %d, %d trusted peers; want 2, 2", cfg.proxy.SendProxy, cfg.proxy.ProxyFrom.Len())
	}
	for addr, want := range map[string]bool{"10.1.2.3": true, "192.0.2.7": true, "192.0.2.8": false} {
		if got := cfg.proxy.ProxyFrom.Allows(mustAddr(t, addr)); got != want {
			t.Errorf("trusts %s: %v; want %v", addr, got, want)
		}
	}
	if cfg, err = parse(t, "--send-proxy=v1"); err != nil || cfg.proxy.SendProxy != 1 || cfg.proxy.ProxyFrom != nil {
		t.Errorf("--send-proxy=v1: %v, %d, %v; want 1 and no trusted peers", err, cfg.proxy.SendProxy, cfg.proxy.ProxyFrom)
	}
	if cfg, err = parse(t); err != nil || cfg.proxy.SendProxy != 0 || cfg.proxy.ProxyFrom != nil {
		t.Errorf("defaults: %v, %d, %v; want none", err, cfg.proxy.SendProxy, cfg.proxy.ProxyFrom)
	}
}

// TestHashOnlyWhereUsed: data files are hashed (recorder.Config.Hash)
// where %h, a hook or the audit journal uses the sum, and only there.
func TestHashOnlyWhereUsed(t *testing.T) {
	dir := t.TempDir()
	for args, want := range map[string]bool{
		"":                             false,
		"-c " + dir + "/c.log":         false,
		"-c " + dir + "/c.log -C %f%h": true,
		"-u true":                      true,
		"-uT true":                     true,
	} {
		cfg, err := parse(t, append([]string{"-L", "-f", dir + "/p"}, strings.Fields(args)...)...)
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		if cfg.record.Hash != want {
			t.Errorf("%q: hash %v; want %v", args, cfg.record.Hash, want)
		}
	}
}

// rsaKey writes an RSA private key, PKCS#8 PEM, as dir/rsa.pem.
func rsaKey(t *testing.T, dir string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rsa.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAuditOptions: --audit-log and a good --audit-key make it into the
// configuration, the key loaded.
func TestAuditOptions(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	cfg, err := parse(t, "--audit-log", dir+"/j/audit.log", "--audit-key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.auditLog != dir+"/j/audit.log" || !priv.Equal(cfg.auditKey) {
		t.Errorf("audit log %q, key %v; want the path and the key", cfg.auditLog, cfg.auditKey)
	}
}

// TestUsageErrors: every bad input ends with exit status 2 and one line on
// stderr that names the option and the problem, before anything starts.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o644)
	tests := []struct {
		args string
		want string
	}{
		{"-x", "ipprotd: unknown flag -x (see ipprotd --help)"},
		{"--listn 80", `ipprotd: unknown flag --listn, did you mean "--listen"? (see ipprotd --help)`},
		{"--bogus", "ipprotd: unknown flag --bogus (see ipprotd --help)"},
		{"-p", "ipprotd: -p/--listen: missing value"},
		{"-f", "ipprotd: -f/--data-log: missing value"},
		{"-f p -uT", "ipprotd: -uT/--post-cmd-times: missing value"},
		{"-b", "ipprotd: -b/--buffer-size: missing value"},
		{"-c log -C", "ipprotd: -C/--conn-log-format: missing value"},
		{"-Lsp", "ipprotd: -p/--listen: missing value"},
		{"-f p -Dp", "ipprotd: -Dp/--pid-file: missing value"},
		// As getopt(3): the word after an option with a value is the value.
		{"-p -l", `ipprotd: -p/--listen: port "-l" is not a number`},
		{"-b -5", "ipprotd: -b/--buffer-size: -5 is outside 1-67108864"},
		{"-p 0", "ipprotd: -p/--listen: port 0 is outside 1-65535"},
		{"-p 65536", "ipprotd: -p/--listen: port 65536 is outside 1-65535"},
		{"-p http", `ipprotd: -p/--listen: port "http" is not a number`},
		{"-P 70000@db", "ipprotd: -P/--out: port 70000 is outside 1-65535"},
		{"-P 80@", "ipprotd: -P/--out: missing host after @"},
		{"-h 10.0.0.1:80", `ipprotd: -h/--out-host: host "10.0.0.1:80" is not an IPv6 address (a port goes before the @)`},
		{"-r 10.0.0.300", `ipprotd: -r/--allow: "10.0.0.300" is not an IP address or CIDR prefix`},
		{"-r 10.1.0.0/8", `ipprotd: -r/--allow: "10.1.0.0/8" has bits set beyond /8 (did you mean 10.0.0.0/8?)`},
		{"-b 0", "ipprotd: -b/--buffer-size: 0 is outside 1-67108864"},
		{"-b x", `ipprotd: -b/--buffer-size: "x" is not a whole number`},
		{"-f p -t abc", `ipprotd: -t/--stamp-interval: "abc" is not a whole number`},
		{"--idle-timeout soon", `ipprotd: --idle-timeout: "soon" is not a duration (such as 500ms, 10s, 5m or 1h)`},
		{"-h", "ipprotd: -h/--out-host: missing value (-h is the destination host, as in the original; help is -? or --help)"},
		{"-f p -t 0", "ipprotd: -t: 0 is not a number of seconds (1 or more)"},
		{"-l -L -f p", "ipprotd: -l and -L cannot be used together"},
		{"-z -j -f p", "ipprotd: -z and -j cannot be used together"},
		{"-f p --gzip-level 1", "ipprotd: --gzip-level needs -z"},
		{"-f p -j --gzip-level 1", "ipprotd: --gzip-level needs -z"},
		{"-f p -z --gzip-level 0", "ipprotd: --gzip-level: 0 is outside 1-9"},
		{"-f p -z --gzip-level 10", "ipprotd: --gzip-level: 10 is outside 1-9"},
		{"-z", "ipprotd: -z needs -f"},
		{"-j", "ipprotd: -j needs -f"},
		{"-l", "ipprotd: -l needs -f"},
		{"-L", "ipprotd: -L needs -f"},
		{"-s", "ipprotd: -s needs -f"},
		{"-M", "ipprotd: -M needs -f"},
		{"-t 5", "ipprotd: -t needs -f"},
		{"-u true", "ipprotd: -u needs -f"},
		{"-uT true", "ipprotd: -uT needs -f"},
		{"-f p -u true -uT true", "ipprotd: -u and -uT cannot be used together"},
		{"-C %i", "ipprotd: -C needs -c"},
		{"-c " + dir + "/log -C %q", `ipprotd: -C/--conn-log-format: unknown expression "%q" at byte 0`},
		{"-c " + notDir + "/log", "ipprotd: -c/--conn-log: " + notDir + " is not a directory"},
		{"-f p -u /nonexistent/send", `ipprotd: -u/--post-cmd: "/nonexistent/send": no such file`},
		{"--on-record-error maybe", `ipprotd: --on-record-error: "maybe" is not one of stop, continue`},
		{"--log-format xml", `ipprotd: --log-format: "xml" is not one of text, json`},
		{"--connect-timeout 0s", "ipprotd: --connect-timeout: 0s must be positive"},
		{"--metrics-listen 9100", `ipprotd: --metrics-listen: "9100" is not HOST:PORT (such as :9100, 127.0.0.1:9100 or [::1]:9100)`},
		{"--metrics-listen :0", "ipprotd: --metrics-listen: port 0 is outside 1-65535"},
		{"--metrics-listen :http", `ipprotd: --metrics-listen: port "http" is not a number`},
		{"--send-proxy v3", `ipprotd: --send-proxy: "v3" is not one of v1, v2`},
		{"--send-proxy", "ipprotd: --send-proxy: missing value"},
		{"--proxy-protocol-from 10.0.0.1/8", `ipprotd: --proxy-protocol-from: "10.0.0.1/8" has bits set beyond /8 (did you mean 10.0.0.0/8?)`},
		{"--post-jobs 0", "ipprotd: --post-jobs: 0 must be 1 or more"},
		{"extra", `ipprotd: unexpected argument extra (see ipprotd --help)`},
		{"--audit-key " + dir + "/key.pem", "ipprotd: --audit-key needs --audit-log"},
		{"--audit-log " + notDir + "/audit.log", "ipprotd: --audit-log: " + notDir + " is not a directory"},
		{"--audit-log " + dir + "/audit.log --audit-key " + dir + "/none.pem", "ipprotd: --audit-key: open " + dir + "/none.pem: no such file or directory"},
		{"--audit-log " + dir + "/audit.log --audit-key " + notDir, "ipprotd: --audit-key: " + notDir + ": no PEM block (openssl genpkey -algorithm ed25519 makes the file)"},
		{"--audit-log " + dir + "/audit.log --audit-key " + rsaKey(t, dir), "ipprotd: --audit-key: " + dir + "/rsa.pem: a *rsa.PrivateKey, not an Ed25519 key (openssl genpkey -algorithm ed25519 makes one)"},
		{"-f " + dir + "/p\xff --audit-log " + dir + "/audit.log", `ipprotd: -f/--data-log: "` + dir + `/p\xff" is not UTF-8, which --audit-log entries cannot hold`},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := realMain(strings.Fields(tt.args), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit status %d; want 2", code)
			}
			if got := stderr.String(); got != tt.want+"\n" {
				t.Errorf("stderr %q; want %q", got, tt.want+"\n")
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q; want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	// "help" as a command word too: a newcomer types it.
	for _, args := range [][]string{{"-?"}, {"--help"}, {"-p", "80", "-?"}, {"help"}} {
		var stdout, stderr bytes.Buffer
		if code := realMain(args, &stdout, &stderr); code != 0 {
			t.Errorf("%v: exit status %d; want 0", args, code)
		}
		if first, _, _ := strings.Cut(stdout.String(), "\n"); first != "Usage: ipprotd [flags]" {
			t.Errorf("%v: first line %q; want %q", args, first, "Usage: ipprotd [flags]")
		}
		out := strings.Join(strings.Fields(stdout.String()), " ") // unwrap
		for _, want := range []string{
			"ipprotd cat <FILE> ... [flags]",
			"Listening and forwarding:", "Recording (need -f):", "Post-processing (need -f):", "Connection log and audit journal:", "Running:",
			"-p, --listen=PORT[@HOST]", "(default: 8080)",
			"-h, --out-host=HOST", "(default: localhost)",
			"-P, --out=PORT[@HOST]", "-b, --buffer-size=BYTES", "(default: 300000)",
			"-f, --data-log=PREFIX", "-l, --log-in", "-L, --log-both", "-s, --printable",
			"-z, --gzip", "-j, --bzip2", "-t, --stamp-interval=SECS", "-M, --block-stamps",
			"-u, --post-cmd=CMD", "--post-cmd-times=CMD", "(-uT)",
			"-c, --conn-log=FILE", "-C, --conn-log-format=FORMAT", "--audit-log=FILE", "--audit-key=FILE", `(default: "%s %e %S %i %p %o %O %r %w %x %f%n")`,
			"-r, --allow=IP|CIDR", "-D, --daemon", "--pid-file=FILE", "-?, --help", "-v, --version",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
		if stderr.Len() != 0 {
			t.Errorf("stderr %q; want nothing", stderr.String())
		}
	}
}

// TestPidFileFIFO: a FIFO planted at the pid file's path is refused at
// once, not opened and waited on for a writer.
func TestPidFileFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipprotd.pid")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := claimPidFile(path)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("claimPidFile of a FIFO: %v; want it refused as not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("claimPidFile of a FIFO waits for a writer")
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := realMain([]string{"-v"}, &stdout, &stderr); code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	want := regexp.MustCompile(`^ipprotd ` + regexp.QuoteMeta(release) + ` \(commit [0-9a-z-]+, go[0-9.]+\S*\)\n$`)
	if !want.MatchString(stdout.String()) {
		t.Errorf("version %q; want one line matching %s", stdout.String(), want)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(release) {
		t.Errorf("release %q; want X.Y.Z", release)
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	p, err := proxy.ParseAllow(s)
	if err != nil {
		t.Fatal(err)
	}
	return p.Addr()
}

// TestPathOptions: paths are made absolute, a trailing slash is kept (-f
// DIR/ names the folder), an empty one is refused.
func TestPathOptions(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg, err := parse(t, "-f", "rec/", "-c", "conn.log", "--pid-file", "run/pid")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.record.Prefix != dir+"/rec/" || cfg.connLog != dir+"/conn.log" || cfg.pidFile != dir+"/run/pid" {
		t.Errorf("prefix %q conn log %q pid file %q; want them absolute under %s, the slash kept", cfg.record.Prefix, cfg.connLog, cfg.pidFile, dir)
	}
	for _, args := range [][]string{{"-f", ""}, {"-c", ""}, {"--pid-file", ""}, {"-f", "p", "-u", ""}, {"-f", "p", "-uT", " "}} {
		var stderr bytes.Buffer
		if code := realMain(args, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "empty") {
			t.Errorf("%q: exit %d, %q; want 2 and a line saying the value is empty", args, code, stderr.String())
		}
	}
}

// TestCatHelp: cat --help lists cat's options and the connection log, not
// the proxy's; ipprotd --help still lists the proxy's and names cat.
func TestCatHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := realMain([]string{"cat", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("exit status %d; want 0", code)
	}
	help := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"Usage: ipprotd cat [<FILE> ...]", "--hex", "--raw", "--dir=in|out", "--follow", "--since=TIME", "--until=TIME",
		"--pcapng", "--force", "--client=IP:PORT", "--server=IP:PORT", "--sql", "--format=text|json", "--color=auto|always|never",
		"-c, --conn-log=FILE The connection log", "-C, --conn-log-format=FORMAT"} {
		if !strings.Contains(help, want) {
			t.Errorf("cat --help lacks %q:\n%s", want, out.String())
		}
	}
	for _, unwanted := range []string{"--listen", "--gzip", "--daemon", "Append one line per connection"} {
		if strings.Contains(help, unwanted) {
			t.Errorf("cat --help shows the proxy's %q", unwanted)
		}
	}
	out.Reset()
	realMain([]string{"--help"}, &out, &errOut)
	if !strings.Contains(out.String(), "cat <FILE> ...") || !strings.Contains(out.String(), "--listen") {
		t.Errorf("ipprotd --help lacks cat or the proxy's options:\n%s", out.String())
	}
}

// TestReplayHelp: replay --help lists replay's options, not the proxy's;
// ipprotd --help names replay.
func TestReplayHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := realMain([]string{"replay", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("exit status %d; want 0", code)
	}
	help := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"Usage: ipprotd replay [<FILE> ...]", "--to=HOST:PORT", "--to-tls", "--to-ca=FILE", "--to-insecure",
		"--postgres=CONNINFO", "--speed=X", "(default: 1)", "--wait=DURATION", "(default: 3s)", "--format=text|json", "docs/replay.md"} {
		if !strings.Contains(help, want) {
			t.Errorf("replay --help lacks %q:\n%s", want, out.String())
		}
	}
	for _, unwanted := range []string{"--listen", "--gzip", "--daemon", "--sql"} {
		if strings.Contains(help, unwanted) {
			t.Errorf("replay --help shows %q", unwanted)
		}
	}
	out.Reset()
	realMain([]string{"--help"}, &out, &errOut)
	if !strings.Contains(out.String(), "ipprotd replay <FILE> ... [flags]") {
		t.Errorf("ipprotd --help does not name replay:\n%s", out.String())
	}
}
