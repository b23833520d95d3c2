package cat

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/internal/testkit"

	"github.com/ipprot/ipprot/playback"
	"github.com/ipprot/ipprot/recorder"
)

// catRun runs `ipprotd cat args…` as main does, through kong.
func catRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t, append([]string{"cat"}, args...), &out, &errOut)
	return out.String(), errOut.String(), code
}

// run parses args with a grammar that holds cat as main's does and runs
// them, as main does.
func run(t *testing.T, args []string, stdout, stderr io.Writer) int {
	var grammar struct {
		Cat Cmd `cmd:"" help:"Read recordings."`
	}
	var exit cmdline.Exit
	k, err := kong.New(&grammar, append(cmdline.Mappers(),
		kong.Name("ipprotd"), kong.Writers(stdout, stderr), exit.Option(),
		kong.WithHyphenPrefixedParameters(true),
		kong.Vars{"connlog_format": connlog.DefaultFormat})...)
	if err != nil {
		t.Error(err)
		return -1
	}
	return cmdline.Run(k, &exit, args, stderr)
}

// recBlock is a block a test records.
type recBlock struct {
	dir  datafile.Direction
	us   int64 // its time in µs since the epoch
	data string
}

// recordFile records blocks with cfg and a clock of the test's and
// returns the data file's path. The file's name holds client 10.1.2.33 and
// connection 17.
func recordFile(t *testing.T, cfg recorder.Config, blocks []recBlock) string {
	t.Helper()
	var now time.Time
	cfg.Now = func() time.Time { return now }
	cfg.Prefix = filepath.Join(t.TempDir(), "prot")
	cfg.FlushInterval = time.Hour
	o, err := recorder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(recorder.Conn{N: 17, Start: time.UnixMicro(blocks[0].us), Client: netip.MustParseAddr("10.1.2.33")})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		now = time.UnixMicro(b.us)
		if err := r.Record(b.dir, []byte(b.data)); err != nil {
			r.Close()
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return r.Path()
}

// httpSession is the manual's kind of session, both directions recorded.
var httpSession = []recBlock{
	{datafile.In, 1386170322361458, "GET / HTTP/1.1\r\nHost: lulsed001\r\n\r\n"},
	{datafile.Out, 1386170322404186, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
	{datafile.Out, 1386170322406047, "hello"},
	{datafile.In, 1386170322763181, "GET /x HTTP/1.1\r\n\r\n\x00\xff"},
}

func local(us int64) string { return time.UnixMicro(us).Local().Format(playback.TimeLayout) }

// TestCat: each text mode of a -M -L -t recording, byte for byte.
func TestCat(t *testing.T) {
	both := recorder.Config{Record: [2]bool{true, true}, BlockStamps: true, StampInterval: time.Minute}
	plain := recordFile(t, both, httpSession)
	gz := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true, StampInterval: time.Minute, Compression: datafile.Gzip}, httpSession)
	iso := time.UnixMicro(httpSession[0].us).Format(datafile.ISOLayout)
	text := "---- " + iso + " ----\n" +
		local(1386170322361458) + " > 35 bytes\n  GET / HTTP/1.1\\r\\n\n  Host: lulsed001\\r\\n\n  \\r\\n\n" +
		local(1386170322404186) + " < 38 bytes\n  HTTP/1.1 200 OK\\r\\n\n  Content-Length: 5\\r\\n\n  \\r\\n\n" +
		local(1386170322406047) + " < 5 bytes\n  hello\n" +
		local(1386170322763181) + " > 21 bytes\n  GET /x HTTP/1.1\\r\\n\n  \\r\\n\n  \\x00\\xff\n"
	since := time.UnixMicro(1386170322404186).Local().Format("2006-01-02 15:04:05.000000")
	until := time.UnixMicro(1386170322406047).Local().Format(time.RFC3339Nano)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"text", []string{plain}, text},
		{"gzip", []string{gz}, text},
		{"dir in", []string{"--dir", "in", plain}, "---- " + iso + " ----\n" +
			local(1386170322361458) + " > 35 bytes\n  GET / HTTP/1.1\\r\\n\n  Host: lulsed001\\r\\n\n  \\r\\n\n" +
			local(1386170322763181) + " > 21 bytes\n  GET /x HTTP/1.1\\r\\n\n  \\r\\n\n  \\x00\\xff\n"},
		{"since until", []string{"--since", since, "--until", until, plain},
			local(1386170322404186) + " < 38 bytes\n  HTTP/1.1 200 OK\\r\\n\n  Content-Length: 5\\r\\n\n  \\r\\n\n"},
		{"raw out", []string{"--raw", gz}, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{"raw in", []string{"--raw", "--dir", "in", plain}, "GET / HTTP/1.1\r\nHost: lulsed001\r\n\r\nGET /x HTTP/1.1\r\n\r\n\x00\xff"},
		{"hex", []string{"--hex", "--dir", "out", "--since", since, plain}, local(1386170322404186) + " < 38 bytes\n" +
			"  00000000  48 54 54 50 2f 31 2e 31  20 32 30 30 20 4f 4b 0d  |HTTP/1.1 200 OK.|\n" +
			"  00000010  0a 43 6f 6e 74 65 6e 74  2d 4c 65 6e 67 74 68 3a  |.Content-Length:|\n" +
			"  00000020  20 35 0d 0a 0d 0a                                 | 5....|\n" +
			local(1386170322406047) + " < 5 bytes\n" +
			"  00000000  68 65 6c 6c 6f                                    |hello|\n"},
		{"two files", []string{"--raw", plain, gz}, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := catRun(t, tt.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit status %d, stderr %q; want 0 and nothing", code, errOut)
			}
			if out != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, tt.want)
			}
		})
	}
	t.Run("headers of two files", func(t *testing.T) {
		out, _, _ := catRun(t, plain, gz)
		if want := "==> " + plain + " <==\n" + text + "==> " + gz + " <==\n" + text; out != want {
			t.Errorf("got:\n%s\nwant:\n%s", out, want)
		}
	})
	t.Run("colour", func(t *testing.T) {
		out, _, _ := catRun(t, "--color", "always", plain)
		if !strings.Contains(out, "\x1b[36m>\x1b[0m") || !strings.Contains(out, "\x1b[33m<\x1b[0m") {
			t.Errorf("no coloured arrows in %q", out)
		}
		if out, _, _ := catRun(t, plain); strings.Contains(out, "\x1b") {
			t.Errorf("colour in a pipe: %q", out)
		}
	})
}

// TestCatNoStamps: a recording without -M is one stream whose direction
// the file does not hold: it is shown as unknown (it was once shown as
// server to client, also when -l had recorded the client's side), as --dir
// names it, or as the connection log's byte counts tell; --since finds no
// time in it.
func TestCatNoStamps(t *testing.T) {
	path := recordFile(t, recorder.Config{Record: [2]bool{datafile.Out: true}}, httpSession)
	out, errOut, code := catRun(t, path)
	body := "  HTTP/1.1 200 OK\\r\\n\n  Content-Length: 5\\r\\n\n  \\r\\n\n  hello\n"
	want := "? 43 bytes (no block stamp: direction unknown; --dir or -c tells it)\n" + body
	if code != 0 || errOut != "" || out != want {
		t.Errorf("got %d, %q, %q; want 0, nothing, %q", code, errOut, out, want)
	}
	if out, _, _ = catRun(t, "--dir", "out", path); out != "< 43 bytes (no block stamp)\n"+body {
		t.Errorf("--dir out: got %q; want the data as server to client", out)
	}
	log := filepath.Join(t.TempDir(), "conn.log")
	line := "2013-12-04 16:18:42+01:00 2013-12-04 16:18:43+01:00 1 10.1.2.33 50000 10.1.2.34 80 41 43 ok " + path + "\n"
	if err := os.WriteFile(log, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, _ = catRun(t, "-c", log, path); out != "< 43 bytes (no block stamp)\n"+body {
		t.Errorf("-c: got %q; want the data as server to client, as its 43 bytes written tell", out)
	}
	out, _, _ = catRun(t, "--dir", "in", path)
	if !strings.HasPrefix(out, "> 43 bytes (no block stamp)\n") {
		t.Errorf("--dir in: got %q; want the data as client to server", out)
	}
	out, errOut, code = catRun(t, "--since", "2013-12-04 00:00:00", path)
	if code != 0 || out != "" || !strings.Contains(errOut, "no block has a time (recorded without -M and -t)") {
		t.Errorf("--since: got %d, %q, %q; want 0, nothing and a note", code, out, errOut)
	}
}

// TestCatNotARecording: a file that is neither named as a data file nor
// holds a stamp or ISO line (the connection log, say) is not shown as a
// recording (it once was, as one block of data).
func TestCatNotARecording(t *testing.T) {
	log := filepath.Join(t.TempDir(), "connections.log")
	if err := os.WriteFile(log, []byte("2013-12-04 16:18:42+01:00 ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := catRun(t, log)
	want := "ipprotd: " + log + ": not an ipprotd recording: its name is not a data file's (PREFIX_yyyy-mm-dd_HHMMSS_N_IP[.gz|.bz2]) and it holds no block stamp or ISO line\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("got %d, %q, %q; want 1, nothing, %q", code, out, errOut, want)
	}
	// A renamed recording with stamps is still one.
	stamped := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true}, httpSession)
	renamed := filepath.Join(t.TempDir(), "session.rec")
	if err := os.Rename(stamped, renamed); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := catRun(t, renamed); code != 0 || errOut != "" {
		t.Errorf("renamed recording: %d, %q; want 0, nothing", code, errOut)
	}
}

// TestCatTruncated: a .gz recording cut as kill -9 leaves it is shown to
// its end, with a note saying where it ends, and exit status 0; a damaged
// one exits 1 after what could be read.
func TestCatTruncated(t *testing.T) {
	gz := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true, Compression: datafile.Gzip}, httpSession)
	whole, err := os.ReadFile(gz)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gz, whole[:len(whole)-8], 0o644); err != nil { // no trailer
		t.Fatal(err)
	}
	out, errOut, code := catRun(t, "--raw", gz)
	wantNote := "ipprotd: " + gz + ": recording ends here: after 199 bytes, the gzip stream has no end (no trailer): the connection is still running, or ipprotd was killed\n"
	if code != 0 || out != "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" || errOut != wantNote {
		t.Errorf("got %d, %q, %q; want 0, the data, %q", code, out, errOut, wantNote)
	}

	damaged := append([]byte(nil), whole...)
	damaged[len(damaged)-5] ^= 0xff // the CRC
	if err := os.WriteFile(gz, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = catRun(t, "--raw", gz)
	wantErr := "ipprotd: " + gz + ": after 199 bytes: the gzip data is damaged: gzip: invalid checksum\n"
	if code != 1 || out != "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" || errOut != wantErr {
		t.Errorf("got %d, %q, %q; want 1, the data, %q", code, out, errOut, wantErr)
	}
}

// TestCatMissing: a file that is not there is named once; the others are
// still shown, and the exit status is 1.
func TestCatMissing(t *testing.T) {
	file := recordFile(t, recorder.Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true}, httpSession)
	missing := filepath.Join(t.TempDir(), "prot_x")
	out, errOut, code := catRun(t, "--raw", missing, file)
	if want := "ipprotd: " + missing + ": open: no such file or directory\n"; code != 1 || errOut != want || out != "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" {
		t.Errorf("got %d, %q, %q; want 1, %q and the other file's data", code, out, errOut, want)
	}
}

// TestCatUsage: bad combinations are usage errors: one line, exit 2.
func TestCatUsage(t *testing.T) {
	file := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true}, httpSession)
	tests := []struct {
		args string
		want string
	}{
		{"", "ipprotd: cat: no FILE given (see ipprotd cat --help)"},
		{"--raw --sql F", "ipprotd: cat: --raw, --pcapng and --sql cannot be used together (see ipprotd cat --help)"},
		{"--hex --raw F", "ipprotd: cat: --hex shows text output; it cannot be used with --raw, --pcapng or --sql (see ipprotd cat --help)"},
		{"--pcapng F F", "ipprotd: cat: --pcapng and --follow read exactly one FILE (see ipprotd cat --help)"},
		{"--follow F F", "ipprotd: cat: --pcapng and --follow read exactly one FILE (see ipprotd cat --help)"},
		{"--dir sideways F", `ipprotd: cat: --dir: "sideways" is neither in nor out (see ipprotd cat --help)`},
		{"--format json F", "ipprotd: cat: --format goes with --sql (see ipprotd cat --help)"},
		{"--client 10.0.0.1 F", "ipprotd: cat: --force, --client and --server go with --pcapng (see ipprotd cat --help)"},
		{"--pcapng --client 10.0.0.1 F", `ipprotd: cat: --client: "10.0.0.1" is not IP:PORT (an IPv6 address in brackets: [::1]:5432) (see ipprotd cat --help)`},
		{"--since yesterday F", `ipprotd: --since: "yesterday" is not a time: use RFC 3339 (2006-01-02T15:04:05+01:00) or yyyy-mm-dd HH:MM:SS`},
		{"--since", `ipprotd: --since: missing value`},
		{"--since 2013-12-05 --until 2013-12-04 F", "ipprotd: cat: --until 2013-12-04T00:00:00" + zoneOf("2013-12-04") + " is not after --since 2013-12-05T00:00:00" + zoneOf("2013-12-05") + " (see ipprotd cat --help)"},
		{"--color sometimes F", `ipprotd: --color: "sometimes" is not one of auto, always, never`},
		{"-C %i F", "ipprotd: cat: -C needs -c (see ipprotd cat --help)"},
		{"-c log -C %q F", `ipprotd: cat: -C/--conn-log-format: unknown expression "%q" at byte 0 (see ipprotd cat --help)`},
		{"-p 80 F", "ipprotd: unknown flag -p (see ipprotd cat --help)"},
		{"F -L", "ipprotd: unknown flag -L (see ipprotd cat --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			args := strings.Fields(strings.ReplaceAll(tt.args, "F", file))
			out, errOut, code := catRun(t, args...)
			if code != 2 || out != "" || errOut != tt.want+"\n" {
				t.Errorf("got %d, %q, %q; want 2, nothing, %q", code, out, errOut, tt.want+"\n")
			}
		})
	}
}

func zoneOf(date string) string {
	d, _ := time.ParseInLocation("2006-01-02", date, time.Local)
	return d.Format("Z07:00")
}

// waitOutput waits until buf holds want, or fails after a generous
// deadline; nothing is timed.
func waitOutput(t *testing.T, buf *testkit.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s, the output is %q; want it to hold %q", buf.String(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCatFollow: cat --follow shows blocks a recorder writes after it
// started, for a plain file (until stopped) and a .gz file (until its
// trailer: cat then exits 0 by itself).
func TestCatFollow(t *testing.T) {
	for _, c := range []datafile.Compression{datafile.None, datafile.Gzip} {
		t.Run(map[datafile.Compression]string{datafile.None: "plain", datafile.Gzip: "gzip"}[c], func(t *testing.T) {
			var mu sync.Mutex
			var now time.Time
			o, err := recorder.New(recorder.Config{
				Prefix: filepath.Join(t.TempDir(), "prot"), Record: [2]bool{true, true}, BlockStamps: true,
				Compression: c, FlushInterval: 5 * time.Millisecond,
				Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			r, err := o.Open(recorder.Conn{N: 1, Start: time.Now(), Client: netip.MustParseAddr("10.1.2.33")})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			record := func(b recBlock) {
				mu.Lock()
				now = time.UnixMicro(b.us)
				mu.Unlock()
				if err := r.Record(b.dir, []byte(b.data)); err != nil {
					t.Fatal(err)
				}
			}
			record(httpSession[0])

			var out, errOut testkit.SyncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			if c == datafile.Gzip {
				go func() { done <- run(t, []string{"cat", "--raw", "--follow", r.Path()}, &out, &errOut) }()
			} else {
				cmd := &Cmd{Files: []string{r.Path()}, Raw: true, Follow: true, Color: "auto", Format: "text"}
				go func() { done <- cmdline.Status(cmd.run(ctx, &out, &errOut)) }()
			}
			want := ""
			for _, b := range httpSession[1:] {
				record(b)
				if b.dir == datafile.Out {
					want += b.data
					waitOutput(t, &out, want)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if c != datafile.Gzip {
				cancel()
			}
			select {
			case code := <-done:
				if code != 0 || out.String() != want || errOut.String() != "" {
					t.Errorf("got %d, %q, %q; want 0, %q, nothing", code, out.String(), errOut.String(), want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("cat --follow did not end within 20 s")
			}
		})
	}
}

// TestCatPcapng: a -M -L recording becomes a capture tshark reads; one
// without both directions, or without stamps, is refused (exit 2) unless
// --force.
func TestCatPcapng(t *testing.T) {
	testkit.Need(t, "tshark")
	both := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true}, httpSession)
	out, errOut, code := catRun(t, "--pcapng", "--server", "10.1.2.34:80", both)
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, errOut)
	}
	if want := "ipprotd: " + both + ": the client's port 49169 is made up: give --client or -c\n"; errOut != want {
		t.Errorf("stderr %q; want %q", errOut, want)
	}
	path := filepath.Join(t.TempDir(), "s.pcapng")
	os.WriteFile(path, []byte(out), 0o644)
	list := testkit.Tshark(t, "-r", path)
	for _, want := range []string{"10.1.2.33 → 10.1.2.34    HTTP", "GET / HTTP/1.1", "HTTP/1.1 200 OK", "49169 → 80 [FIN, ACK]"} {
		if !strings.Contains(list, want) {
			t.Errorf("tshark lacks %q:\n%s", want, list)
		}
	}

	outOnly := recordFile(t, recorder.Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true}, httpSession)
	noStamps := recordFile(t, recorder.Config{Record: [2]bool{true, true}}, httpSession)
	for _, tt := range []struct{ file, want string }{
		{outOnly, "--pcapng: the recording has no client-to-server data (made without -L): it needs -M -L; use --force to write a capture anyway"},
		{noStamps, "--pcapng: the recording has no block stamps (made without -M): the boundaries, times and directions of its data are unknown; it needs -M -L; use --force to write a capture anyway"},
	} {
		out, errOut, code := catRun(t, "--pcapng", tt.file)
		if code != 2 || out != "" || errOut != "ipprotd: "+tt.file+": "+tt.want+"\n" {
			t.Errorf("got %d, %d bytes, %q; want 2, nothing, %q", code, len(out), errOut, tt.want)
		}
		out, _, code = catRun(t, "--pcapng", "--force", tt.file)
		os.WriteFile(path, []byte(out), 0o644)
		if code != 0 || !strings.Contains(testkit.Tshark(t, "-r", path), "HTTP/1.1 200 OK") {
			t.Errorf("--force: exit status %d, or tshark sees no reply", code)
		}
	}
}

// TestCatPcapngReset: a connection the log says was aborted ends in
// resets in the capture, not in a FIN handshake (a Wireshark user once saw
// a clean close of a connection ended by SO_LINGER 0).
func TestCatPcapngReset(t *testing.T) {
	testkit.Need(t, "tshark")
	path := recordFile(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true}, httpSession)
	for outcome, wantReset := range map[string]bool{"aborted": true, "ok": false} {
		t.Run(outcome, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "conn.log")
			line := "2013-12-04 16:18:42+01:00 2013-12-04 16:18:43+01:00 1 10.1.2.33 50000 10.1.2.34 80 41 43 " + outcome + " " + path + "\n"
			if err := os.WriteFile(log, []byte(line), 0o644); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := catRun(t, "--pcapng", "-c", log, path)
			if code != 0 || errOut != "" {
				t.Fatalf("exit status %d: %s", code, errOut)
			}
			capture := filepath.Join(t.TempDir(), "s.pcapng")
			os.WriteFile(capture, []byte(out), 0o644)
			resets := testkit.Tshark(t, "-r", capture, "-Y", "tcp.flags.reset == 1")
			fins := testkit.Tshark(t, "-r", capture, "-Y", "tcp.flags.fin == 1")
			if (resets != "") != wantReset || (fins != "") == wantReset {
				t.Errorf("resets %q, FINs %q; want resets %v", resets, fins, wantReset)
			}
		})
	}
}
