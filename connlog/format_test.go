package connlog

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/logfile"
	"github.com/ipprot/ipprot/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// manualFormat is the -C example of the original manual; it has no %n.
const manualFormat = "Connected: %s, disconnected after %S secs at: %e"

// allExpressions uses every expression once, separated by '|'.
const allExpressions = "%%|%s|%e|%S|%i|%p|%o|%O|%r|%w|%f|%N|%x|%h|%t|%n"

var (
	plus0530  = time.FixedZone("IST", 5*3600+30*60)
	minus0300 = time.FixedZone("BRT", -3*3600)
	minus0930 = time.FixedZone("MART", -(9*3600 + 30*60))
)

// at returns 2013-12-04 16:18:42.361458 (the manual's example) in loc, plus d.
func at(loc *time.Location, d time.Duration) time.Time {
	return time.Date(2013, 12, 4, 16, 18, 42, 361458000, loc).Add(d)
}

// factsCase is one connection the golden files render.
type factsCase struct {
	name  string
	facts proxy.Facts
}

func factsCases() []factsCase {
	return []factsCase{
		{"ipv4 ok +05:30", proxy.Facts{
			N: 1, Start: at(plus0530, 0), End: at(plus0530, 7900*time.Millisecond),
			Client: netip.MustParseAddrPort("192.0.2.10:50123"), Dest: netip.MustParseAddrPort("198.51.100.7:5432"),
			OutHost: "db.example", OutPort: 5432, BytesIn: 1234, BytesOut: 567890,
			File: "/var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz", Outcome: proxy.OK,
			Size: 4242, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		}},
		{"ipv6 aborted -03:00", proxy.Facts{
			N: 2, Start: at(minus0300, 0), End: at(minus0300, 61*time.Second),
			Client: netip.MustParseAddrPort("[2001:db8::1]:40000"), Dest: netip.MustParseAddrPort("[2001:db8::2]:443"),
			BytesIn: 10, BytesOut: 20,
			File: "/var/log/conn_rec/prot_2013-12-04_161842_2_2001-db8--1", Outcome: proxy.Aborted,
		}},
		{"mapped record-error UTC", proxy.Facts{
			N: 3, Start: at(time.UTC, 0), End: at(time.UTC, 999*time.Millisecond),
			Client: netip.MustParseAddrPort("[::ffff:10.1.2.3]:5555"), Dest: netip.MustParseAddrPort("[::ffff:10.1.2.34]:5678"),
			BytesIn: 300000, BytesOut: 0,
			File: "/u01/oradata/orcl/connection_protocol/prot_2013-12-04_161842_3_10.1.2.3.bz2", Outcome: proxy.RecordError,
			SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		}},
		{"rejected no destination no file UTC", proxy.Facts{
			N: 4, Start: at(time.UTC, 0), End: at(time.UTC, 0),
			Client: netip.MustParseAddrPort("203.0.113.9:1234"), Outcome: proxy.Rejected,
		}},
		{"connect-failed -09:30", proxy.Facts{
			N: 5, Start: at(minus0930, 0), End: at(minus0930, 10*time.Second),
			Client: netip.MustParseAddrPort("[::1]:60000"), Outcome: proxy.ConnectFailed,
		}},
		{"end before start, end in another zone", proxy.Facts{
			N: 6, Start: at(time.UTC, 0), End: at(plus0530, -3*time.Second),
			Client: netip.MustParseAddrPort("127.0.0.1:1"), Dest: netip.MustParseAddrPort("127.0.0.1:65535"),
			File: "/tmp/prot", Outcome: proxy.OK,
		}},
		{"largest counts, a day long", proxy.Facts{
			N: 1<<64 - 1, Start: at(time.UTC, 0), End: at(time.UTC, 24*time.Hour+500*time.Millisecond),
			Client: netip.MustParseAddrPort("10.0.0.1:2"), Dest: netip.MustParseAddrPort("10.0.0.2:3"),
			BytesIn: 1<<63 - 1, BytesOut: 1<<63 - 1, File: "/tmp/prot", Outcome: proxy.OK,
		}},
		{"unknown outcome, zoned link-local client", proxy.Facts{
			N: 7, Start: at(time.UTC, 0), End: at(time.UTC, time.Second),
			Client: netip.MustParseAddrPort("[fe80::1%eth0]:4711"), Dest: netip.MustParseAddrPort("[fe80::2%eth0]:80"),
			File: "/tmp/prot", Outcome: proxy.Outcome(200),
		}},
		{"control bytes in the file name and zone", proxy.Facts{
			N: 8, Start: at(time.UTC, 0), End: at(time.UTC, time.Second),
			Client: netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("e\nx"), 1),
			File:   "/tmp/a\nb\tc\\d\x7fe\x00f\x1b[1m", Outcome: proxy.OK,
		}},
	}
}

// checkGolden compares got with testdata/name.golden, or rewrites the file
// with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\ngot\n%s\nwant\n%s", path, got, want)
	}
}

// TestGolden renders every facts case in the default format, the manual's
// example, a format of all expressions and each expression on its own, and
// compares the bytes with testdata/*.golden.
func TestGolden(t *testing.T) {
	formats := []struct{ golden, format string }{
		{"default", DefaultFormat},
		{"manual", manualFormat},
		{"all", allExpressions},
	}
	for _, tc := range formats {
		t.Run(tc.golden, func(t *testing.T) {
			f, err := Compile(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			for _, c := range factsCases() {
				out = fmt.Appendf(out, "# %s\n", c.name)
				out = f.Append(out, &c.facts)
			}
			checkGolden(t, tc.golden, out)
		})
	}
	t.Run("expressions", func(t *testing.T) {
		var out []byte
		for _, c := range factsCases() {
			out = fmt.Appendf(out, "# %s\n", c.name)
			for _, expr := range strings.Split(allExpressions, "|") {
				f, err := Compile(expr)
				if err != nil {
					t.Fatal(err)
				}
				out = fmt.Appendf(out, "%s=", expr)
				out = f.Append(out, &c.facts)
			}
		}
		checkGolden(t, "expressions", out)
	})
}

// TestAppend states the key lines by hand, independently of the golden files.
func TestAppend(t *testing.T) {
	cases := factsCases()
	tests := []struct {
		name   string
		format string
		facts  *proxy.Facts
		want   string
	}{
		{"default, IPv4, +05:30", DefaultFormat, &cases[0].facts,
			"2013-12-04 16:18:42+05:30 2013-12-04 16:18:50+05:30 7 192.0.2.10 50123 198.51.100.7 5432 1234 567890 ok /var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz\n"},
		{"default, IPv6, -03:00", DefaultFormat, &cases[1].facts,
			"2013-12-04 16:18:42-03:00 2013-12-04 16:19:43-03:00 61 2001:db8::1 40000 2001:db8::2 443 10 20 aborted /var/log/conn_rec/prot_2013-12-04_161842_2_2001-db8--1\n"},
		{"default, mapped, UTC", DefaultFormat, &cases[2].facts,
			"2013-12-04 16:18:42+00:00 2013-12-04 16:18:43+00:00 0 10.1.2.3 5555 10.1.2.34 5678 300000 0 record-error /u01/oradata/orcl/connection_protocol/prot_2013-12-04_161842_3_10.1.2.3.bz2\n"},
		{"default, rejected", DefaultFormat, &cases[3].facts,
			"2013-12-04 16:18:42+00:00 2013-12-04 16:18:42+00:00 0 203.0.113.9 1234 - - 0 0 rejected -\n"},
		{"default, connect-failed, -09:30", DefaultFormat, &cases[4].facts,
			"2013-12-04 16:18:42-09:30 2013-12-04 16:18:52-09:30 10 ::1 60000 - - 0 0 connect-failed -\n"},
		{"manual example gets its newline", manualFormat, &cases[0].facts,
			"Connected: 2013-12-04 16:18:42+05:30, disconnected after 7 secs at: 2013-12-04 16:18:50+05:30\n"},
		{"end before start is 0 s; each time in its own zone", "%s %e %S", &cases[5].facts,
			"2013-12-04 16:18:42+00:00 2013-12-04 16:18:39+05:30 0\n"},
		{"%S rounds down a day and a half second", "%S %N %r %w", &cases[6].facts,
			"86400 18446744073709551615 9223372036854775807 9223372036854775807\n"},
		{"unknown outcome, zoned address", "%x %i %o", &cases[7].facts, "unknown fe80::1%eth0 fe80::2%eth0\n"},
		{"literals: %% %t %n and text", "a%%b%tc%nd", &cases[0].facts, "a%b\tc\nd\n"},
		{"%n at the end adds no second newline", "%N%n", &cases[0].facts, "1\n"},
		{"only a newline", "%n", &cases[0].facts, "\n"},
		{"literal newline in the format is kept", "%N\n%N\n", &cases[0].facts, "1\n1\n"},
		{"percent-n spelled %%n is text", "%%n", &cases[0].facts, "%n\n"},
		{"zero facts", DefaultFormat, &proxy.Facts{}, "- - 0 - - - - 0 0 ok -\n"},
		{"%h of a file", "%h %f", &cases[0].facts,
			"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 /var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz\n"},
		{"%h without a file", "%h %f", &cases[3].facts, "- -\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Compile(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			got := f.Append([]byte("prefix|"), tc.facts)
			if want := "prefix|" + tc.want; string(got) != want {
				t.Errorf("got %q; want %q", got, want)
			}
		})
	}
}

// TestNoInjection proves that control bytes and backslashes in field values
// are escaped, so one entry stays one line, while the format's own text is
// kept as it is.
func TestNoInjection(t *testing.T) {
	facts := &proxy.Facts{
		Client: netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("eth0\n2013-12-04 forged"), 9),
		File:   "/tmp/x\n2013-12-04 16:18:42+00:00 forged ok -\r\x00\x1b[31m\x7f\\end\t",
	}
	f, err := Compile("%i|%f|\tliteral\\text")
	if err != nil {
		t.Fatal(err)
	}
	got := string(f.Append(nil, facts))
	want := `fe80::1%eth0\x0a2013-12-04 forged|/tmp/x\x0a2013-12-04 16:18:42+00:00 forged ok -\x0d\x00\x1b[31m\x7f\\end\x09|` + "\tliteral\\text\n"
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if n := strings.Count(got, "\n"); n != 1 {
		t.Errorf("got %d newlines; want 1", n)
	}
}

// TestEscapeFrom covers the in-place escaping on its own, also where the
// escaped bytes follow what dst already held.
func TestEscapeFrom(t *testing.T) {
	tests := []struct{ prefix, value, want string }{
		{"", "", ""},
		{"", "plain", "plain"},
		{"keep\n\\", "plain", "keep\n\\plain"},
		{"p", "\\", `p\\`},
		{"p", "\n", `p\x0a`},
		{"", "\x00\x1f\x20\x7e\x7f\x80\xff", `\x00\x1f ~\x7f` + "\x80\xff"},
		{"ab", "x\\y\nz", `abx\\y\x0az`},
		{"", "\\\\\n\n", `\\\\\x0a\x0a`},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.value), func(t *testing.T) {
			dst := append([]byte(tc.prefix), tc.value...)
			if got := string(escapeFrom(dst, len(tc.prefix))); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// TestCompileErrors checks the exact message of every kind of bad format.
func TestCompileErrors(t *testing.T) {
	tests := []struct{ format, want string }{
		{"", "empty format"},
		{"abc %e %q", `unknown expression "%q" at byte 7`},
		{"%z", `unknown expression "%z" at byte 0`},
		{"%s %e %Z", `unknown expression "%Z" at byte 6`},
		{"%s %", `incomplete expression "%" at byte 3`},
		{"%", `incomplete expression "%" at byte 0`},
		{"%%%", `incomplete expression "%" at byte 2`},
		{"% s", `unknown expression "% " at byte 0`},
		{"x%\n", `unknown expression "%\n" at byte 1`},
		{"%é", `unknown expression "%é" at byte 0`},
		{"%\xff", `unknown expression "%\xff" at byte 0`},
		{"%%q %q", `unknown expression "%q" at byte 4`},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.format), func(t *testing.T) {
			f, err := Compile(tc.format)
			if err == nil {
				t.Fatalf("got no error and %v; want %q", f, tc.want)
			}
			if f != nil {
				t.Errorf("got a Format with the error %q; want nil", err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
}

// TestAppendAllocs proves Append allocates nothing when dst has room, also
// when values are escaped.
func TestAppendAllocs(t *testing.T) {
	cases := factsCases()
	for _, format := range []string{DefaultFormat, allExpressions, manualFormat} {
		f, err := Compile(format)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			dst := make([]byte, 0, 4096)
			allocs := testing.AllocsPerRun(100, func() {
				dst = f.Append(dst[:0], &c.facts)
			})
			if allocs != 0 {
				t.Errorf("format %q, %s: got %v allocations; want 0", format, c.name, allocs)
			}
		}
	}
}

// TestFormatConcurrent renders one Format from several goroutines; the race
// detector checks that Append shares nothing writable.
func TestFormatConcurrent(t *testing.T) {
	f, err := Compile(allExpressions)
	if err != nil {
		t.Fatal(err)
	}
	facts := &factsCases()[0].facts
	want := string(f.Append(nil, facts))
	results := make(chan string, 4)
	for range 4 {
		go func() { results <- renderMany(f, facts, 200) }()
	}
	for range 4 {
		if got := <-results; got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	}
}

// renderMany renders facts n times and returns the last entry.
func renderMany(f *Format, facts *proxy.Facts, n int) string {
	var buf []byte
	for range n {
		buf = f.Append(buf[:0], facts)
	}
	return string(buf)
}

// FuzzCompile checks that any format either fails to compile, exactly where
// an independent check says it is bad, or renders an entry that ends with a
// newline and has no newline other than those of %n, of the format's literal
// text and the final one, whatever the facts hold.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		DefaultFormat, manualFormat, allExpressions, "", "%", "%%", "%%%", "%q", "abc %e %q",
		"x%", "%n", "%n%n", "\n", "a\nb%f", "%é", "%\xff", "%%n", "%f%t%x", "%\n", "plain text",
	} {
		f.Add(seed)
	}
	facts := []*proxy.Facts{&factsCases()[0].facts, &factsCases()[3].facts, &factsCases()[8].facts}
	f.Fuzz(func(t *testing.T, format string) {
		fm, err := Compile(format)
		if valid := validFormat(format); (err == nil) != valid {
			t.Fatalf("Compile(%q): got error %v; want valid %v", format, err, valid)
		}
		if err != nil {
			if fm != nil {
				t.Fatalf("Compile(%q): got a Format with error %v", format, err)
			}
			return
		}
		want := wantNewlines(format)
		for _, facts := range facts {
			got := fm.Append(nil, facts)
			if !bytes.HasSuffix(got, []byte("\n")) {
				t.Errorf("Compile(%q): entry %q does not end with a newline", format, got)
			}
			if n := bytes.Count(got, []byte("\n")); n != want {
				t.Errorf("Compile(%q): entry %q has %d newlines; want %d", format, got, n, want)
			}
		}
	})
}

// validFormat reports whether format is non-empty and every % starts a known
// expression.
func validFormat(format string) bool {
	if format == "" {
		return false
	}
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		if i+1 == len(format) || !strings.ContainsRune("%seSipoOrwfNxhntTUC", rune(format[i+1])) {
			return false
		}
		i++
	}
	return true
}

// wantNewlines counts the newlines a valid format's entry must have: one for
// each %n and literal newline, plus the one Append adds where the format
// does not end with a newline.
func wantNewlines(format string) int {
	n, last := 0, false
	for i := 0; i < len(format); i++ {
		if format[i] == '%' {
			i++
			last = format[i] == 'n'
		} else {
			last = format[i] == '\n'
		}
		if last {
			n++
		}
	}
	if !last {
		n++
	}
	return n
}

// BenchmarkAppend renders the default format into a reused buffer.
func BenchmarkAppend(b *testing.B) {
	f, err := Compile(DefaultFormat)
	if err != nil {
		b.Fatal(err)
	}
	facts := &factsCases()[0].facts
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], facts)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkAppendWrite renders the default format and appends it to a log
// file, as the proxy does at the end of each connection.
func BenchmarkAppendWrite(b *testing.B) {
	f, err := Compile(DefaultFormat)
	if err != nil {
		b.Fatal(err)
	}
	l, err := logfile.Open(filepath.Join(b.TempDir(), "conn.log"), "connection log")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	facts := &factsCases()[0].facts
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], facts)
		if _, err := l.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkAppendWriteParallel is BenchmarkAppendWrite from GOMAXPROCS
// goroutines sharing one Log.
func BenchmarkAppendWriteParallel(b *testing.B) {
	f, err := Compile(DefaultFormat)
	if err != nil {
		b.Fatal(err)
	}
	l, err := logfile.Open(filepath.Join(b.TempDir(), "conn.log"), "connection log")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	facts := &factsCases()[0].facts
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) { appendWriteLoop(pb, f, l, facts, b) })
}

func appendWriteLoop(pb *testing.PB, f *Format, l *logfile.File, facts *proxy.Facts, b *testing.B) {
	buf := make([]byte, 0, 512)
	for pb.Next() {
		buf = f.Append(buf[:0], facts)
		if _, err := l.Write(buf); err != nil {
			b.Error(err)
			return
		}
	}
}

// TestConnectFailedNamesDestination: %o %O of a connect-failed connection
// name what was tried: the address, or the configured host where its name
// did not resolve; only a connection rejected before any dial has "- -".
func TestConnectFailedNamesDestination(t *testing.T) {
	f, err := Compile("%x %o %O")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		facts proxy.Facts
		want  string
	}{
		{proxy.Facts{Outcome: proxy.ConnectFailed, OutHost: "db.example", OutPort: 5432, Dest: netip.MustParseAddrPort("10.0.0.7:5432")}, "connect-failed 10.0.0.7 5432\n"},
		{proxy.Facts{Outcome: proxy.ConnectFailed, OutHost: "db.example", OutPort: 5432}, "connect-failed db.example 5432\n"},
		{proxy.Facts{Outcome: proxy.Rejected, OutHost: "db.example", OutPort: 5432}, "rejected - -\n"},
	} {
		if got := string(f.Append(nil, &tt.facts)); got != tt.want {
			t.Errorf("got %q; want %q", got, tt.want)
		}
	}
}
