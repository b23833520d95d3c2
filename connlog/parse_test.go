package connlog

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/proxy"
)

// logged renders facts with connlog, the writer of the log, in format.
func logged(t *testing.T, format string, facts ...*proxy.Facts) string {
	t.Helper()
	f, err := Compile(format)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, fa := range facts {
		b = f.Append(b, fa)
	}
	return string(b)
}

// TestLogFormat reads back what connlog wrote: the default format, a
// custom one with tabs and text, odd file names and missing values.
func TestLogFormat(t *testing.T) {
	zone := time.FixedZone("", -3*3600-1800)
	start := time.Date(2013, 12, 4, 16, 18, 42, 0, zone)
	full := &proxy.Facts{
		N: 17, Start: start, End: start.Add(95 * time.Second),
		Client: netip.MustParseAddrPort("10.1.2.33:49169"), Dest: netip.MustParseAddrPort("[2001:db8::34]:5432"),
		BytesIn: 1234, BytesOut: 56789, File: "/var/log/conn rec/prot_2013-12-04_161842_17_10.1.2.33\\x\n.gz", Outcome: proxy.OK,
		Size: 77, SHA256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
	}
	rejected := &proxy.Facts{N: 18, Start: start, End: start, Client: netip.MustParseAddrPort("10.9.9.9:1"), Outcome: proxy.Rejected}
	for _, format := range []string{
		DefaultFormat,
		"%N\t%x from %i:%p to %o:%O (%r/%w) [%f] %S s%%%n",
		"%f %s", // no %n: connlog ends the entry anyway
		"%x %h %f%n",
	} {
		t.Run(format, func(t *testing.T) {
			lf, err := Compile(format)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(logged(t, format, full, rejected), "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("connlog wrote %d lines; want 2", len(lines))
			}
			for i, fa := range []*proxy.Facts{full, rejected} {
				got, ok := lf.Parse(lines[i])
				if !ok {
					t.Fatalf("line %q does not parse", lines[i])
				}
				want := Entry{File: fa.File, Line: lines[i]}
				if has := strings.Contains(format, "%N"); has {
					want.N = fa.N
				}
				has := func(l byte) bool { return strings.Contains(format, "%"+string(l)) }
				if has('s') {
					want.Start = fa.Start
				}
				if has('e') {
					want.End = fa.End
				}
				if has('i') {
					want.Client = fa.Client
				}
				if has('o') && fa.Dest.IsValid() {
					want.Dest = fa.Dest
				}
				if has('r') {
					want.BytesIn, want.BytesOut = fa.BytesIn, fa.BytesOut
				}
				if has('x') {
					want.Outcome = fa.Outcome.String()
				}
				if has('h') {
					want.SHA256 = fa.SHA256
				}
				if !got.Start.Equal(want.Start) || !got.End.Equal(want.End) || got.Client != want.Client || got.Dest != want.Dest ||
					got.BytesIn != want.BytesIn || got.BytesOut != want.BytesOut || got.Outcome != want.Outcome || got.N != want.N || got.File != want.File || got.SHA256 != want.SHA256 || got.Line != want.Line {
					t.Errorf("line %q:\ngot  %+v\nwant %+v", lines[i], got, want)
				}
			}
		})
	}
	multi, err := Compile("%i%n%p")
	if err != nil {
		t.Fatal(err)
	}
	if err := multi.Readable(); err == nil {
		t.Errorf("Readable of a two-line format = nil; want an error")
	}
	if _, ok := multi.Parse("10.0.0.1"); ok {
		t.Errorf("Parse with a two-line format: ok; want not")
	}
}

// TestFind finds a data file's line by its path, or by its base name
// once the files were moved.
func TestFind(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2013, 12, 4, 16, 18, 42, 0, time.Local)
	var facts []*proxy.Facts
	for i, name := range []string{"a", "b", "c"} {
		facts = append(facts, &proxy.Facts{
			Start: start, End: start, Client: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i)),
			Dest: netip.MustParseAddrPort("10.0.0.2:80"), File: filepath.Join(dir, "prot_"+name),
		})
	}
	log := filepath.Join(dir, "connections")
	if err := os.WriteFile(log, []byte("garbage line\n"+logged(t, DefaultFormat, facts...)), 0o644); err != nil {
		t.Fatal(err)
	}
	lf, err := Compile(DefaultFormat)
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "prot_c")
	for _, tt := range []struct {
		file string
		port uint16
	}{{filepath.Join(dir, "prot_b"), 1001}, {moved, 1002}} {
		got, err := Find(log, lf, tt.file)
		if err != nil || got.Client.Port() != tt.port {
			t.Errorf("Find(%s): got %+v, %v; want client port %d", tt.file, got, err, tt.port)
		}
	}
	if _, err := Find(log, lf, filepath.Join(dir, "prot_d")); err == nil {
		t.Error("Find of an unlogged file: nil error; want ErrNotLogged")
	}
	noF, _ := Compile("%i %p")
	if _, err := Find(log, noF, filepath.Join(dir, "prot_b")); err == nil {
		t.Errorf("Find with a format without %%f: nil error; want one")
	}
}
