package recorder

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// goldenBlocks is the fixed block sequence of the golden files: requests
// and replies with non-printable runs that span blocks, UTF-8, DEL, and
// client blocks inside and outside the 2 s ISO interval.
var goldenBlocks = []block{
	{datafile.In, t0, []byte("GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n")},
	{datafile.Out, t0.Add(42728 * time.Microsecond), []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n")},
	{datafile.Out, t0.Add(44589 * time.Microsecond), []byte("Grüße, \x00\x01\x02binary\xff")},
	{datafile.Out, t0.Add(45000 * time.Microsecond), []byte("\xfe\xfdcontinued\ttab\n")},
	{datafile.In, t0.Add(1500 * time.Millisecond), []byte("\x16\x03\x01 tls \x7f del \x80")},
	{datafile.Out, t0.Add(1600 * time.Millisecond), []byte("\x80 reply")},
	{datafile.In, t0.Add(2500 * time.Millisecond), []byte("\x81 POST /form HTTP/1.1\r\n\r\nname=日本語")},
	{datafile.In, t0.Add(2501 * time.Millisecond), []byte("!")},
	{datafile.Out, t0.Add(2600 * time.Millisecond), []byte("bye\n")},
	{datafile.In, t0.Add(4500 * time.Millisecond), []byte("exactly 2 s after the last ISO line")},
}

// TestGolden records goldenBlocks with every combination of directions,
// -s, -M and -t, and compares the files with testdata/golden (rewritten
// with -update) and with the model of SPEC §3.
func TestGolden(t *testing.T) {
	dirs := []struct {
		name   string
		record [2]bool
	}{
		{"out", [2]bool{datafile.Out: true}},
		{"in", [2]bool{datafile.In: true}},
		{"both", [2]bool{datafile.In: true, datafile.Out: true}},
	}
	for _, d := range dirs {
		for _, s := range []bool{false, true} {
			for _, m := range []bool{false, true} {
				for _, ts := range []bool{false, true} {
					cfg := Config{Record: d.record, Printable: s, BlockStamps: m}
					name := d.name
					if s {
						name += "-s"
					}
					if m {
						name += "-M"
					}
					if ts {
						name += "-t"
						cfg.StampInterval = 2 * time.Second
					}
					t.Run(name, func(t *testing.T) {
						got, err := os.ReadFile(record(t, cfg, goldenBlocks))
						if err != nil {
							t.Fatal(err)
						}
						if want := model(cfg, goldenBlocks); !bytes.Equal(got, want) {
							t.Errorf("file differs from the model: %s", firstDiff(got, want))
						}
						golden := filepath.Join("testdata", "golden", name+".txt")
						if *update {
							if err := os.WriteFile(golden, got, 0o644); err != nil {
								t.Fatal(err)
							}
						}
						want, err := os.ReadFile(golden)
						if err != nil {
							t.Fatalf("%v (run with -update to create it)", err)
						}
						if !bytes.Equal(got, want) {
							t.Errorf("file differs from %s: %s", golden, firstDiff(got, want))
						}
					})
				}
			}
		}
	}
}

// TestManualExample reproduces the manual's -M -t example with the
// original's default directions (only server to client recorded).
func TestManualExample(t *testing.T) {
	reply := "HTTP/1.1 200 OK\r\nDate: Wed, 04 Dec 2013 15:18:42 GMT\r\nServer: unix2web/9.1.1\r\n"
	blocks := []block{
		{datafile.In, time.UnixMicro(1386170322361458).In(zone), []byte("GET / HTTP/1.1\r\nHost: lulsed001\r\n\r\n")},
		{datafile.Out, time.UnixMicro(1386170322404186).In(zone), []byte(reply)},
	}
	cfg := Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true, StampInterval: 60 * time.Second}
	got, err := os.ReadFile(record(t, cfg, blocks))
	if err != nil {
		t.Fatal(err)
	}
	want := "#848367#1386170322361458\n" +
		"#748369#2013-12-04 16:18:42+01:00\n" +
		"#948366#1386170322404186\n" +
		reply
	if string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestISOLine checks the ISO line's local time and offset sign in zones
// east and west of UTC, and that it appears only for client blocks.
func TestISOLine(t *testing.T) {
	at := time.Date(2024, 2, 29, 23, 59, 58, 999_999_000, time.UTC)
	tests := []struct {
		name string
		loc  *time.Location
		want string
	}{
		{"utc", time.UTC, "#748369#2024-02-29 23:59:58+00:00\n"},
		{"east", time.FixedZone("", 3600), "#748369#2024-03-01 00:59:58+01:00\n"},
		{"west", time.FixedZone("", -5*3600), "#748369#2024-02-29 18:59:58-05:00\n"},
		{"half hour", time.FixedZone("", 5*3600+30*60), "#748369#2024-03-01 05:29:58+05:30\n"},
		{"west half hour", time.FixedZone("", -(3*3600 + 30*60)), "#748369#2024-02-29 20:29:58-03:30\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{StampInterval: time.Second}
			blocks := []block{
				{datafile.Out, at.In(tt.loc), []byte("server first")},
				{datafile.In, at.In(tt.loc), []byte("client")},
			}
			got, err := os.ReadFile(record(t, cfg, blocks))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// TestStampInterval checks when ISO lines come: on the first client block,
// then on the first client block at least the interval after the last line.
func TestStampInterval(t *testing.T) {
	iv := 10 * time.Second
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	blocks := []block{
		{datafile.Out, at(0), []byte("o")},   // server blocks never get one
		{datafile.In, at(1), []byte("a")},    // first client block: line
		{datafile.In, at(10.9), []byte("b")}, // 9.9 s later: none
		{datafile.Out, at(12), []byte("o")},  // server block after the interval: none
		{datafile.In, at(11), []byte("c")},   // exactly 10 s: line
		{datafile.In, at(20.99), []byte("d")},
		{datafile.In, at(45), []byte("e")}, // long after: line, and the interval counts from here
		{datafile.In, at(54), []byte("f")},
	}
	got, err := os.ReadFile(record(t, Config{Record: [2]bool{datafile.In: true}, StampInterval: iv}, blocks))
	if err != nil {
		t.Fatal(err)
	}
	want := "#748369#2013-12-04 16:18:43+01:00\na" + "b" +
		"#748369#2013-12-04 16:18:53+01:00\nc" + "d" +
		"#748369#2013-12-04 16:19:27+01:00\ne" + "f"
	if string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestPrintable checks the -s rule on crafted bytes, recorded as the given
// blocks of one direction.
func TestPrintable(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	tests := []struct {
		name   string
		blocks []string
		want   string
	}{
		{"kept", []string{"\t\n\r !~abc"}, "\t\n\r !~abc"},
		{"every byte", []string{string(all)}, " \t\n \r " + string(all[0x20:0x7f]) + " "},
		{"one blank per run", []string{"a\x00\x01\x02\x7f\x80\xffb"}, "a b"},
		{"leading and trailing", []string{"\x00a\x00"}, " a "},
		{"utf-8 char", []string{"Gr\xc3\xbc\xc3\x9fe"}, "Gr e"},
		{"utf-8 chars apart", []string{"ä-ö"}, " - "},
		{"utf-8 consecutive", []string{"日本語"}, " "},
		{"4-byte rune", []string{"a😀b"}, "a b"},
		{"run split across blocks", []string{"ab\x00\x01", "\x02\x03cd"}, "ab cd"},
		{"run spans three blocks", []string{"a\x00", "\xff", "\x80b"}, "a b"},
		{"rune split across blocks", []string{"x\xe6\x97", "\xa5y"}, "x y"},
		{"block of only a run", []string{"a\x00", "\x00\x00", "\x00b"}, "a b"},
		{"run ended by block start", []string{"a\x00", "b\x00"}, "a b "},
		{"del", []string{"\x7f"}, " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var blocks []block
			for _, b := range tt.blocks {
				blocks = append(blocks, block{datafile.Out, t0, []byte(b)})
			}
			got, err := os.ReadFile(record(t, Config{Record: [2]bool{datafile.Out: true}, Printable: true}, blocks))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// TestPrintableRunPerDirection checks that each direction has its own run
// state under -L, and that -M lines are never filtered.
func TestPrintableRunPerDirection(t *testing.T) {
	blocks := []block{
		{datafile.In, t0, []byte("in\x00")},
		{datafile.Out, t0, []byte("\x00out\x00")},
		{datafile.In, t0, []byte("\x01in")},   // continues In's run: no blank
		{datafile.Out, t0, []byte("\x01out")}, // continues Out's run: no blank
	}
	cfg := Config{Record: [2]bool{datafile.In: true, datafile.Out: true}, Printable: true}
	got, err := os.ReadFile(record(t, cfg, blocks))
	if err != nil {
		t.Fatal(err)
	}
	if want := "in  out inout"; string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}

	cfg.BlockStamps = true
	got, err = os.ReadFile(record(t, cfg, blocks))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"#848367#1386170322361458\nin ",
		"#948366#1386170322361458\n out ",
		"#848367#1386170322361458\nin",
		"#948366#1386170322361458\nout",
	}, "")
	if string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestNoTrailingNewline checks that a block's data is followed directly by
// the next marker, as in the original's files.
func TestNoTrailingNewline(t *testing.T) {
	blocks := []block{{datafile.Out, t0, []byte("one")}, {datafile.Out, t0.Add(time.Microsecond), []byte("two")}}
	got, err := os.ReadFile(record(t, Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true}, blocks))
	if err != nil {
		t.Fatal(err)
	}
	if want := "#948366#1386170322361458\none#948366#1386170322361459\ntwo"; string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}
