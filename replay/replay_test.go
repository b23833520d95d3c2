package replay

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/internal/testkit"
	"github.com/ipprot/ipprot/recorder"
)

// replayRun runs `ipprotd replay args…` as main does, through kong, and
// returns its stdout, stderr and exit status.
func replayRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var grammar struct {
		Replay Cmd `cmd:"" help:"Replay recordings."`
	}
	var out, errOut bytes.Buffer
	var exit cmdline.Exit
	k, err := kong.New(&grammar, append(cmdline.Mappers(),
		kong.Name("ipprotd"), kong.Writers(&out, &errOut), exit.Option(),
		kong.WithHyphenPrefixedParameters(true))...)
	if err != nil {
		t.Fatal(err)
	}
	code = cmdline.Run(k, &exit, append([]string{"replay"}, args...), &errOut)
	return out.String(), errOut.String(), code
}

// recBlock is a block a test records.
type recBlock struct {
	dir  datafile.Direction
	us   int64 // its time in µs since the epoch
	data []byte
}

// recordFile records blocks as ipprotd -M does, into a file of its own
// in dir compressed with c, and returns its path. n is the connection's
// number in the name.
func recordFile(t testing.TB, dir string, n uint64, c datafile.Compression, record [2]bool, blocks []recBlock) string {
	t.Helper()
	var now time.Time
	o, err := recorder.New(recorder.Config{Prefix: filepath.Join(dir, "prot"), Record: record, BlockStamps: true,
		Compression: c, FlushInterval: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMicro(1700000000000000)
	if len(blocks) > 0 {
		start = time.UnixMicro(blocks[0].us)
	}
	r, err := o.Open(recorder.Conn{N: n, Start: start, Client: netip.MustParseAddr("10.1.2.33")})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		now = time.UnixMicro(b.us)
		if err := r.Record(b.dir, b.data); err != nil {
			r.Close()
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return r.Path()
}

var both = [2]bool{true, true}

// t0 is the first block's time of the tests' recordings.
const t0 = int64(1700000000000000)

// httpBlocks is a keep-alive HTTP session: two requests, 200 ms apart.
var httpBlocks = []recBlock{
	{datafile.In, t0, []byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")},
	{datafile.Out, t0 + 900, []byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")},
	{datafile.Out, t0 + 1000, []byte("a")},
	{datafile.In, t0 + 200000, []byte("GET /bb HTTP/1.1\r\nHost: x\r\n\r\n")},
	{datafile.Out, t0 + 200900, []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb")},
}

// sink is a target that keeps what each connection sent, answering each
// with answer (if not nil) after reading its first bytes, and closing
// its side when the client closes its.
type sink struct {
	ln     net.Listener
	answer []byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	got    [][]byte
	last   time.Time // when the last byte arrived
}

func startSink(t *testing.T, answer []byte, wrap func(net.Listener) net.Listener) *sink {
	t.Helper()
	return startSinkWrapped(t, answer, wrap)
}

// startSinkTB is startSink for a fuzz target.
func startSinkTB(t testing.TB, answer []byte) *sink {
	t.Helper()
	return startSinkWrapped(t, answer, nil)
}

func startSinkWrapped(t testing.TB, answer []byte, wrap func(net.Listener) net.Listener) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	s := &sink{ln: ln, answer: answer}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *sink) addr() string { return s.ln.Addr().String() }

func (s *sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.take(c)
	}
}

func (s *sink) take(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	var got []byte
	buf := make([]byte, 4096)
	answered := false
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if n > 0 {
			s.mu.Lock()
			s.last = time.Now()
			s.mu.Unlock()
		}
		if n > 0 && !answered && s.answer != nil {
			c.Write(s.answer)
			answered = true
		}
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	s.got = append(s.got, got)
	s.mu.Unlock()
}

// received returns what the connections sent, in the order they ended.
func (s *sink) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// timingLine is the summary's last line, whose figures vary.
var timingLine = regexp.MustCompile(`^replayed in \d+\.\d{3} s(, \d+ statements/s)?; the recordings span \d+\.\d{3} s\n$`)

// splitSummary cuts the timing line off out, checking its form.
func splitSummary(t *testing.T, out string) string {
	t.Helper()
	i := strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n")
	if i < 0 || !timingLine.MatchString(out[i+1:]) {
		t.Fatalf("output %q does not end with the timing line", out)
	}
	return out[:i+1]
}

// TestUsage: every bad command line is one line naming the option, exit
// status 2, nothing replayed.
func TestUsage(t *testing.T) {
	s := startSink(t, nil, nil)
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, httpBlocks)
	for _, tt := range []struct{ args, want string }{
		{"--to " + s.addr(), "ipprotd: replay: no FILE given (see ipprotd replay --help)"},
		{"%F", "ipprotd: replay: give the target: --to HOST:PORT, or --postgres CONNINFO for PostgreSQL sessions (see ipprotd replay --help)"},
		{"--to a:1 --postgres host=a %F", "ipprotd: replay: --to and --postgres cannot be used together: --to replays the bytes, --postgres the statements of PostgreSQL sessions (see ipprotd replay --help)"},
		{"--to nowhere %F", `ipprotd: --to: "nowhere" is not HOST:PORT (an IPv6 address in brackets: [::1]:5432)`},
		{"--to ::1:80 %F", `ipprotd: --to: "::1:80" is not HOST:PORT (an IPv6 address in brackets: [::1]:5432)`},
		{"--to a:0 %F", `ipprotd: --to: port "0" is outside 1-65535`},
		{"--to a:65536 %F", `ipprotd: --to: port "65536" is outside 1-65535`},
		{"--to a:1 --speed -1 %F", "ipprotd: --speed: -1 is negative: give a factor (2 is twice as fast as recorded) or 0 for no waiting"},
		{"--to a:1 --speed fast %F", `ipprotd: --speed: "fast" is not a number`},
		{"--to a:1 --speed NaN %F", `ipprotd: --speed: "NaN" is not a number`},
		{"--to a:1 --speed", "ipprotd: --speed: missing value"},
		{"--to a:1 --wait 0s %F", "ipprotd: replay: --wait: 0s is not a positive duration (see ipprotd replay --help)"},
		{"--to a:1 --wait soon %F", `ipprotd: --wait: "soon" is not a duration (such as 500ms, 10s, 5m or 1h)`},
		{"--to a:1 --format xml %F", `ipprotd: --format: "xml" is not one of text, json`},
		{"--to a:1 --to-ca ca.pem %F", "ipprotd: replay: --to-ca and --to-insecure go with --to-tls (see ipprotd replay --help)"},
		{"--postgres host=a --to-tls %F", "ipprotd: replay: --to-tls goes with --to (for --postgres, sslmode in CONNINFO says how to use TLS) (see ipprotd replay --help)"},
		{"--to a:1 --to-tls --to-ca /nonexistent.pem %F", "ipprotd: replay: --to-ca: open /nonexistent.pem: no such file or directory (see ipprotd replay --help)"},
		{"--to a:1 --to-tls --to-ca %F %F", "ipprotd: replay: --to-ca: %F holds no PEM certificate (see ipprotd replay --help)"},
		{"--postgres port=x %F", `ipprotd: replay: --postgres: cannot parse ` + "`port=x`" + `: invalid port (see ipprotd replay --help)`},
		{"--to a:1 --listen 80 %F", "ipprotd: unknown flag --listen (see ipprotd replay --help)"},
	} {
		t.Run(tt.args, func(t *testing.T) {
			out, errOut, code := replayRun(t, strings.Fields(strings.ReplaceAll(tt.args, "%F", file))...)
			want := strings.ReplaceAll(tt.want, "%F", file) + "\n"
			if code != 2 || out != "" || errOut != want {
				t.Errorf("got %d, %q, %q; want 2, nothing, %q", code, out, errOut, want)
			}
		})
	}
	if got := s.received(); len(got) != 0 {
		t.Errorf("the target got %d connections; want none", len(got))
	}
}

// TestUnfit: a file that is missing or has no block stamps stops the
// whole replay before it starts: a replay changes the target.
func TestUnfit(t *testing.T) {
	s := startSink(t, nil, nil)
	dir := t.TempDir()
	good := recordFile(t, dir, 1, datafile.None, both, httpBlocks)
	noStamps := filepath.Join(dir, "plain")
	os.WriteFile(noStamps, []byte("GET / HTTP/1.0\r\n\r\n"), 0o644)
	missing := filepath.Join(dir, "missing")
	out, errOut, code := replayRun(t, "--to", s.addr(), good, noStamps, missing)
	want := "ipprotd: " + noStamps + ": " + errNoStamps.Error() + "\n" +
		"ipprotd: " + missing + ": open: no such file or directory\n" +
		"ipprotd: replay: nothing was replayed\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("got %d, %q, %q; want 1, nothing, %q", code, out, errOut, want)
	}
	if got := s.received(); len(got) != 0 {
		t.Errorf("the target got %d connections; want none", len(got))
	}
}

// TestRaw: a recording, plain, gzip and bzip2, is sent byte for byte, one
// connection each; what the target answers is counted against what was
// recorded; --format json says the same.
func TestRaw(t *testing.T) {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb")
	s := startSink(t, answer, nil)
	dir := t.TempDir()
	var files []string
	for i, c := range []datafile.Compression{datafile.None, datafile.Gzip, datafile.Bzip2} {
		files = append(files, recordFile(t, dir, uint64(i+1), c, both, httpBlocks))
	}
	short := recordFile(t, dir, 4, datafile.None, both, append(httpBlocks[:3:3], recBlock{datafile.In, t0 + 300000, []byte("x")}))
	out, errOut, code := replayRun(t, append([]string{"--to", s.addr(), "--speed", "0"}, append(files, short)...)...)
	var want string
	for _, f := range files {
		want += f + ": sent 57/57 bytes, received 79/79 bytes\n"
	}
	want += short + ": sent 29/29 bytes, received 79/39 bytes\n"
	want += "4 sessions, sent 200/200 bytes, received 316/276 bytes, 1 differ\n"
	if code != 1 || errOut != "" || sortedLines(splitSummary(t, out)) != sortedLines(want) {
		t.Errorf("got %d, %q, %q; want 1, no error, %q", code, out, errOut, want)
	}
	sent := string(httpBlocks[0].data) + string(httpBlocks[3].data)
	got := s.received()
	if len(got) != 4 {
		t.Fatalf("the target got %d connections; want 4", len(got))
	}
	n := 0
	for _, g := range got {
		if string(g) == sent {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d connections sent the recorded bytes %q; want 3:\n%q", n, sent, got)
	}

	out, errOut, code = replayRun(t, "--to", s.addr(), "--speed", "0", "--format", "json", files[0])
	wantJSON := regexp.MustCompile(`^\{"file":"` + regexp.QuoteMeta(files[0]) + `","sent":57,"recorded_sent":57,"received":79,"recorded_received":79,"seconds":[0-9.e-]+,"recorded_seconds":0.2009\}
\{"sessions":1,"sent":57,"recorded_sent":57,"received":79,"recorded_received":79,"differ":0,"failed":0,"seconds":[0-9.e-]+,"recorded_seconds":0.2009\}
$`)
	if code != 0 || errOut != "" || !wantJSON.MatchString(out) {
		t.Errorf("json: got %d, %q, %q; want 0, no error, %s", code, out, errOut, wantJSON)
	}
}

func sortedLines(s string) string {
	lines := strings.SplitAfter(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "")
}

// TestRawSpeed: with --speed 1 the second request is not sent before its
// recorded gap has passed, nor with --speed 2 before half of it; two
// recordings start as far apart as they did. Only lower bounds: nothing
// else about time can be asserted without flaking.
func TestRawSpeed(t *testing.T) {
	dir := t.TempDir()
	a := recordFile(t, dir, 1, datafile.None, both, httpBlocks)
	later := make([]recBlock, len(httpBlocks))
	for i, b := range httpBlocks {
		b.us += 100000
		later[i] = b
	}
	b := recordFile(t, dir, 2, datafile.None, both, later)
	for _, tt := range []struct {
		speed string
		least time.Duration
	}{{"1", 300 * time.Millisecond}, {"2", 150 * time.Millisecond}} {
		t.Run(tt.speed, func(t *testing.T) {
			s := startSink(t, nil, nil)
			began := time.Now()
			out, errOut, code := replayRun(t, "--to", s.addr(), "--speed", tt.speed, "--wait", "1ms", a, b)
			s.mu.Lock()
			took := s.last.Sub(began)
			s.mu.Unlock()
			if code != 1 || errOut != "" || !strings.Contains(out, "2 sessions, sent 114/114 bytes, received 0/158 bytes, 2 differ\n") {
				t.Errorf("got %d, %q, %q; want 1 and both recordings sent", code, out, errOut)
			}
			if took < tt.least {
				t.Errorf("the last request came %v after the start; want at least %v", took, tt.least)
			}
			t.Logf("--speed %s: the last request came %v after the start (recorded: 300ms)", tt.speed, took)
		})
	}
}

// TestRawNotRecorded: a recording made with -l (no server data) is sent;
// what the server answers is counted, not compared.
func TestRawNotRecorded(t *testing.T) {
	s := startSink(t, []byte("hello"), nil)
	file := recordFile(t, t.TempDir(), 1, datafile.None, [2]bool{true, false}, httpBlocks)
	out, errOut, code := replayRun(t, "--to", s.addr(), "--speed", "0", file)
	want := file + ": sent 57/57 bytes, received 5 bytes (not recorded)\n" +
		"1 sessions, sent 57/57 bytes, received 5 bytes (not recorded), 0 differ\n"
	if code != 0 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 0, no error, %q", code, out, errOut, want)
	}
}

// TestRawTargetDown: a target that cannot be reached fails each
// recording, reported on stderr; the others are replayed.
func TestRawTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, httpBlocks)
	out, errOut, code := replayRun(t, "--to", addr, "--speed", "0", file)
	wantErr := "ipprotd: " + file + ": dial tcp " + addr + ": connect: connection refused\n"
	want := file + ": sent 0/57 bytes, received 0/79 bytes\n" +
		"1 sessions, sent 0/57 bytes, received 0/79 bytes, 1 differ, 1 failed\n"
	if code != 1 || errOut != wantErr || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 1, %q, %q", code, out, errOut, wantErr, want)
	}
}

// TestRawTLS: --to-tls speaks TLS to the target, verified with --to-ca;
// without it the unknown certificate fails the recording.
func TestRawTLS(t *testing.T) {
	cert, caFile := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	s := startSink(t, []byte("ok"), func(ln net.Listener) net.Listener { return tls.NewListener(ln, cfg) })
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, httpBlocks)
	_, port, _ := net.SplitHostPort(s.addr())
	to := "localhost:" + port
	out, errOut, code := replayRun(t, "--to", to, "--to-tls", "--to-ca", caFile, "--speed", "0", file)
	if want := file + ": sent 57/57 bytes, received 2/79 bytes\n"; code != 1 || errOut != "" || !strings.HasPrefix(out, want) {
		t.Errorf("got %d, %q, %q; want 1, no error, %q first", code, out, errOut, want)
	}
	if got := s.received(); len(got) != 1 || string(got[0]) != string(httpBlocks[0].data)+string(httpBlocks[3].data) {
		t.Errorf("the TLS target got %q; want the recorded requests", got)
	}
	_, errOut, code = replayRun(t, "--to", to, "--to-tls", "--speed", "0", file)
	if code != 1 || !strings.Contains(errOut, "TLS handshake with "+to+": tls: failed to verify certificate") {
		t.Errorf("without --to-ca: got %d, %q; want 1 and a failed verification", code, errOut)
	}
	_, errOut, code = replayRun(t, "--to", to, "--to-tls", "--to-insecure", "--speed", "0", file)
	if code != 1 || errOut != "" {
		t.Errorf("--to-insecure: got %d, %q; want 1 (the answer differs), no error", code, errOut)
	}
}

// selfSigned returns a certificate for localhost and the path of a PEM
// file that holds it.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

// TestProgress: on a terminal a progress line is redrawn on stderr and
// cleared before any other line and at the end.
func TestProgress(t *testing.T) {
	var stdout, stderr testkit.SyncBuffer
	r := newReport(&stdout, &stderr, false, true, 2)
	r.tty = true
	stop := r.showProgress()
	r.statement(nil)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "replay: 0/2 sessions done, 1 statements, 0 differ") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line after 20 s: %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.note("f", "a note")
	stop()
	got := stderr.String()
	if !strings.HasPrefix(got, "\r\x1b[Kreplay: ") || !strings.Contains(got, "differ\r\x1b[Kipprotd: f: a note\n") ||
		strings.Count(got, "a note") != 1 || !(strings.HasSuffix(got, "a note\n") || strings.HasSuffix(got, "differ\r\x1b[K")) {
		t.Errorf("stderr %q; want progress lines, cleared before the note and at the end", got)
	}
	if stdout.String() != "" {
		t.Errorf("stdout %q; want nothing", stdout.String())
	}

	var quiet bytes.Buffer
	r = newReport(&quiet, &quiet, false, true, 1)
	r.showProgress()()
	if quiet.Len() != 0 {
		t.Errorf("not on a terminal: %q; want nothing", quiet.String())
	}
}
