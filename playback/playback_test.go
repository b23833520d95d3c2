package playback

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/recorder"
)

// zone is a zone of the clock that records, not the tests' local one.
var zone = time.FixedZone("", -5*3600)

// tblock is a block a test records.
type tblock struct {
	dir  datafile.Direction
	at   time.Time
	data []byte
}

// record records blocks with cfg (its Prefix, Now and FlushInterval are
// set here) and returns the data file's path.
func record(t testing.TB, cfg recorder.Config, blocks []tblock) string {
	t.Helper()
	var now time.Time
	cfg.Now = func() time.Time { return now }
	if cfg.Prefix == "" {
		cfg.Prefix = filepath.Join(t.TempDir(), "prot")
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Hour
	}
	o, err := recorder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(recorder.Conn{N: 7, Start: time.Date(2013, 12, 4, 16, 18, 42, 0, zone), Client: netip.MustParseAddr("10.1.2.33")})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		now = b.at
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

// readAll reads every block of path; end is the error Next ended with.
func readAll(t testing.TB, path string, unstamped datafile.Direction) (blocks []Block, end error) {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := NewReader(f, unstamped)
	for {
		b, err := r.Next()
		if err != nil {
			return blocks, err
		}
		blocks = append(blocks, b)
	}
}

func TestMatch(t *testing.T) {
	iso := time.Date(2013, 12, 4, 16, 18, 42, 0, time.FixedZone("", 3600))
	tests := []struct {
		in   string
		kind lineKind
		n    int
		t    time.Time
	}{
		{"#848367#1386170322361458\nGET", stampIn, 25, time.UnixMicro(1386170322361458)},
		{"#948366#0\n", stampOut, 10, time.UnixMicro(0)},
		{"#948366#00000000000000000001\n", stampOut, 29, time.UnixMicro(1)}, // 20 digits
		{"#948366#000000000000000000001\n", notALine, 0, time.Time{}},       // 21 digits
		{"#948366#99999999999999999999\n", notALine, 0, time.Time{}},        // beyond int64
		{"#948366#\n", notALine, 0, time.Time{}},                            // no digits
		{"#948366#12 \n", notALine, 0, time.Time{}},                         // not a newline
		{"#948366#-12\n", notALine, 0, time.Time{}},                         // a sign
		{"#948367#12\n", notALine, 0, time.Time{}},                          // not a marker
		{"#748369#2013-12-04 16:18:42+01:00\n", isoLine, 34, iso},           //
		{"#748369#2013-12-04 16:18:42-01:00\n", isoLine, 34, iso.Add(2 * time.Hour)},
		{"#748369#2013-13-04 16:18:42+01:00\n", notALine, 0, time.Time{}}, // month 13
		{"#748369#2013-12-04T16:18:42+01:00\n", notALine, 0, time.Time{}},
		{"#748369#2013-12-04 16:18:42+01:00 \n", notALine, 0, time.Time{}},
		{"#848367#1386170322361458", notALine, -1, time.Time{}}, // needs more
		{"#848367#", notALine, -1, time.Time{}},
		{"#8483", notALine, -1, time.Time{}},
		{"#", notALine, -1, time.Time{}},
		{"#7", notALine, -1, time.Time{}},
		{"#6", notALine, 0, time.Time{}},
		{"#748369#2013-12-04 16:1", notALine, -1, time.Time{}},
		{"#748369#2013-12-04 16:18:42+01:00", notALine, -1, time.Time{}},
		{"#748369#2013-12-04 1x", notALine, 0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			k, n, at := match([]byte(tt.in))
			if k != tt.kind || n != tt.n || !at.Equal(tt.t) {
				t.Errorf("got %d, %d, %v; want %d, %d, %v", k, n, at, tt.kind, tt.n, tt.t)
			}
		})
	}
}

// TestManualExample decodes the example of docs/format.md, the manual's
// -M -t example with its lines restored.
func TestManualExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/format.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("### The manual's example\n(?s:.*?)\n\n((?:    [^\n]*\n)+)").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/format.md has no indented example under \"### The manual's example\"")
	}
	var content []byte
	for _, line := range strings.Split(strings.TrimSuffix(string(m[1]), "\n"), "\n") {
		content = append(content, strings.TrimPrefix(line, "    ")+"\n"...)
	}
	content = bytes.TrimSuffix(content, []byte("\n")) // the data has no newline of its own
	s := NewSplitter(datafile.Out)
	s.Write(content)
	s.End()
	var got []Block
	for b, ok := s.Next(); ok; b, ok = s.Next() {
		got = append(got, b)
	}
	want := []Block{
		{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(1386170322361458), ISO: "2013-12-04 16:18:42+01:00", Offset: 0},
		{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1386170322404186), Data: []byte("HTTP/1.1 200 OK ..."), Offset: 59},
	}
	if diff := diffBlocks(got, want); diff != "" {
		t.Error(diff)
	}
	// The printed form is what docs/reading.md shows.
	var out bytes.Buffer
	p := NewPrinter(&out, PrintOptions{})
	for _, b := range got {
		p.Print(b)
	}
	golden(t, "manual-example.txt", out.Bytes())
}

func blockString(b Block) string {
	return fmt.Sprintf("{%v stamped=%v %s ISO=%q %q off=%d part=%d}", b.Dir, b.Stamped, b.Time.Format(TimeLayout), b.ISO, b.Data, b.Offset, b.Part)
}

// diffBlocks describes the first difference of two block lists, or "".
func diffBlocks(got, want []Block) string {
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("block %d missing; want %s", i, blockString(want[i]))
		case i >= len(want):
			return fmt.Sprintf("extra block %d: %s", i, blockString(got[i]))
		}
		g, w := got[i], want[i]
		if g.Dir != w.Dir || g.Stamped != w.Stamped || !g.Time.Equal(w.Time) || g.ISO != w.ISO ||
			!bytes.Equal(g.Data, w.Data) || g.Offset != w.Offset || g.Part != w.Part {
			return fmt.Sprintf("block %d: got %s; want %s", i, blockString(g), blockString(w))
		}
	}
	return ""
}

// TestSplit covers the recordings the format allows, each split at every
// byte as well as whole.
func TestSplit(t *testing.T) {
	t1, t2 := time.UnixMicro(1386170322361458), time.UnixMicro(1386170322404186)
	iso := "2013-12-04 16:18:42+01:00"
	isoT, _ := time.Parse(datafile.ISOLayout, iso)
	tests := []struct {
		name    string
		content string
		want    []Block
	}{
		{"empty", "", nil},
		{"no stamps", "HTTP/1.1 200 OK\r\n",
			[]Block{{Dir: datafile.Out, Data: []byte("HTTP/1.1 200 OK\r\n")}}},
		{"no stamps, ISO lines (-t)", "abc#748369#" + iso + "\ndef",
			[]Block{{Dir: datafile.Out, Data: []byte("abc")}, {Dir: datafile.Out, Time: isoT, ISO: iso, Data: []byte("def"), Offset: 3}}},
		{"both directions (-M -L)", "#848367#1386170322361458\nGET#948366#1386170322404186\nOK\n",
			[]Block{
				{Dir: datafile.In, Stamped: true, Time: t1, Data: []byte("GET")},
				{Dir: datafile.Out, Stamped: true, Time: t2, Data: []byte("OK\n"), Offset: 28},
			}},
		{"unrecorded direction", "#848367#1386170322361458\n#948366#1386170322404186\nOK",
			[]Block{
				{Dir: datafile.In, Stamped: true, Time: t1},
				{Dir: datafile.Out, Stamped: true, Time: t2, Data: []byte("OK"), Offset: 25},
			}},
		{"data with a # and marker look-alikes", "#848367#1\n#8#848367#12#948366#\n#748369#2013\n",
			[]Block{{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(1), Data: []byte("#8#848367#12#948366#\n#748369#2013\n")}}},
		{"data ending in a marker's start", "#948366#1\nab#848367#99",
			[]Block{{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1), Data: []byte("ab#848367#99")}}},
		{"an ISO line after an out stamp starts a block", "#948366#1\n#748369#" + iso + "\nx",
			[]Block{
				{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1)},
				{Dir: datafile.Out, Time: isoT, ISO: iso, Data: []byte("x"), Offset: 10},
			}},
		{"data that looks like a stamp (the known ambiguity)", "#948366#1\nab\n#948366#2\ncd",
			[]Block{
				{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1), Data: []byte("ab\n")},
				{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(2), Data: []byte("cd"), Offset: 13},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for cut := 0; cut <= len(tt.content); cut++ {
				s := NewSplitter(datafile.Out)
				s.Write([]byte(tt.content[:cut]))
				s.Write([]byte(tt.content[cut:]))
				s.End()
				var got []Block
				for b, ok := s.Next(); ok; b, ok = s.Next() {
					got = append(got, b)
				}
				if diff := diffBlocks(got, tt.want); diff != "" {
					t.Fatalf("cut at %d: %s", cut, diff)
				}
			}
		})
	}
}

// TestLongData: data beyond MaxPiece comes in pieces that continue the
// block, with the offsets of their first bytes.
func TestLongData(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), MaxPiece/16*2+1)
	content := append([]byte("#848367#5\n"), data...)
	s := NewSplitter(datafile.Out)
	s.Write(content)
	s.End()
	want := []Block{
		{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(5), Data: data[:MaxPiece]},
		{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(5), Data: data[MaxPiece : 2*MaxPiece], Offset: 10 + MaxPiece, Part: 1},
		{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(5), Data: data[2*MaxPiece:], Offset: 10 + 2*MaxPiece, Part: 2},
	}
	var got []Block
	for b, ok := s.Next(); ok; b, ok = s.Next() {
		got = append(got, b)
	}
	if diff := diffBlocks(got, want); diff != "" {
		t.Error(diff)
	}
}

// TestCut: Cut returns the data so far as a piece; the rest continues it.
// A block without data waits for its end, as an ISO line may follow.
func TestCut(t *testing.T) {
	s := NewSplitter(datafile.Out)
	s.Write([]byte("#848367#5\n"))
	s.Cut()
	if got := drain(s); len(got) != 0 {
		t.Fatalf("got %s; want nothing before data", blockString(got[0]))
	}
	s.Write([]byte("#748369#2013-12-04 16:18:42+01:00\nGET"))
	s.Cut()
	s.Cut() // nothing new: nothing
	in := Block{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(5), ISO: "2013-12-04 16:18:42+01:00", Data: []byte("GET")}
	if diff := diffBlocks(drain(s), []Block{in}); diff != "" {
		t.Fatal(diff)
	}
	s.Write([]byte(" /#8483"))
	s.Cut()
	more := in
	more.ISO, more.Data, more.Offset, more.Part = "", []byte(" /"), 47, 1
	if diff := diffBlocks(drain(s), []Block{more}); diff != "" {
		t.Fatal(diff)
	}
	s.Write([]byte("67#6\n"))
	s.End()
	if diff := diffBlocks(drain(s), []Block{{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(6), Offset: 49}}); diff != "" {
		t.Fatal(diff)
	}
}

// markerInData matches what a reader must take for a stamp or ISO line.
var markerInData = regexp.MustCompile(`#(848367|948366)#[0-9]{1,20}\n|#748369#[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}\n`)

// chunkReader returns r's bytes in chunks of random sizes.
type chunkReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), 1+c.rng.IntN(97))])
}

// FuzzReadBack records random blocks with recorder (-M -L -t 1, a clock
// of the test's) and reads them back through random chunks: the blocks,
// their directions, stamps and data are what was recorded, and so is
// each direction's stream. Data that itself holds a stamp or ISO line is
// the format's known ambiguity and is skipped.
func FuzzReadBack(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), uint64(1), int64(1386170322361458))
	f.Add([]byte("Grüße \x00\x01 #848367#1 #748369# 日本語\n#"), uint64(2), int64(0))
	f.Add(bytes.Repeat([]byte{'#', '8', 0, 0xff, '\n'}, 3000), uint64(3), int64(1<<50))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, start int64) {
		if markerInData.Match(data) {
			t.Skip("the data holds a stamp or ISO line")
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		at := time.UnixMicro(start & (1<<52 - 1)).In(zone) // 1970 to 2112
		var blocks []tblock
		var streams [2][]byte
		for rest := data; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 5000))
			dir := datafile.Direction(rng.IntN(2))
			at = at.Add(time.Duration(rng.IntN(3_000_000)) * time.Microsecond)
			blocks = append(blocks, tblock{dir, at, rest[:n]})
			streams[dir] = append(streams[dir], rest[:n]...)
			rest = rest[n:]
		}
		path := record(t, recorder.Config{
			Record:        [2]bool{true, true},
			BlockStamps:   true,
			StampInterval: time.Second,
		}, blocks)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := NewReader(&chunkReader{f, rng}, datafile.Out)
		var got [2][]byte
		i := 0
		for {
			b, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(blocks) {
				t.Fatalf("got block %d (%+v); want %d blocks", i, b, len(blocks))
			}
			w := blocks[i]
			if b.Dir != w.dir || !b.Stamped || b.Time.UnixMicro() != w.at.UnixMicro() || !bytes.Equal(b.Data, w.data) || b.Part != 0 {
				t.Fatalf("block %d: got %v %v %q part %d; want %v %v %q", i, b.Dir, b.Time, b.Data, b.Part, w.dir, w.at, w.data)
			}
			if b.ISO != "" {
				isoT, err := time.Parse(datafile.ISOLayout, b.ISO)
				if err != nil || b.Dir != datafile.In || !isoT.Equal(w.at.Truncate(time.Second)) {
					t.Fatalf("block %d at %v: ISO line %q", i, w.at, b.ISO)
				}
			}
			got[b.Dir] = append(got[b.Dir], b.Data...)
			i++
		}
		if i != len(blocks) {
			t.Fatalf("got %d blocks; want %d", i, len(blocks))
		}
		for d := range got {
			if !bytes.Equal(got[d], streams[d]) {
				t.Errorf("%v stream: got %d bytes; want %d", datafile.Direction(d), len(got[d]), len(streams[d]))
			}
		}
	})
}

// FuzzSplit: whatever the content, how it is cut into writes changes no
// block, and the blocks' stamp lines and data give back the content.
func FuzzSplit(f *testing.F) {
	f.Add([]byte("#848367#1386170322361458\n#748369#2013-12-04 16:18:42+01:00\n#948366#1386170322404186\nHTTP/1.1 200 OK"), uint64(1))
	f.Add([]byte("abc#748369#2013-12-04 16:18:42+01:00\ndef#8#848367#12#948366#\n"), uint64(2))
	f.Fuzz(func(t *testing.T, content []byte, seed uint64) {
		whole := NewSplitter(datafile.In)
		whole.Write(content)
		whole.End()
		rng := rand.New(rand.NewPCG(seed, 4))
		parts := NewSplitter(datafile.In)
		for rest := content; len(rest) > 0; {
			n := rng.IntN(len(rest) + 1)
			parts.Write(rest[:n])
			rest = rest[n:]
			if rng.IntN(4) == 0 {
				parts.Cut()
			}
		}
		parts.End()
		var rebuilt []byte
		for _, b := range drain(whole) {
			if b.Stamped && b.Part == 0 {
				marker := datafile.Direction.Marker(b.Dir)
				rebuilt = fmt.Appendf(rebuilt, "%s%s\n", marker, stampDigits(content, b.Offset+int64(len(marker))))
			}
			if b.ISO != "" {
				rebuilt = fmt.Appendf(rebuilt, "%s%s\n", datafile.MarkerISO, b.ISO)
			}
			rebuilt = append(rebuilt, b.Data...)
		}
		if !bytes.Equal(rebuilt, content) {
			t.Fatalf("blocks give back %q; want %q", rebuilt, content)
		}
		// Cut pieces: merged, they are the whole's blocks.
		whole = NewSplitter(datafile.In)
		whole.Write(content)
		whole.End()
		got, err := merge(drain(parts))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := merge(drain(whole))
		if diff := diffBlocks(got, want); diff != "" {
			t.Fatal(diff)
		}
	})
}

// drain returns what s has ready.
func drain(s *Splitter) []Block {
	var got []Block
	for b, ok := s.Next(); ok; b, ok = s.Next() {
		got = append(got, b)
	}
	return got
}

// merge joins pieces to their blocks.
func merge(pieces []Block) ([]Block, error) {
	var got []Block
	for _, b := range pieces {
		if b.Part == 0 {
			got = append(got, b)
			continue
		}
		if len(got) == 0 {
			return nil, fmt.Errorf("piece %+v continues nothing", b)
		}
		last := &got[len(got)-1]
		last.Data = append(last.Data, b.Data...)
	}
	return got, nil
}

// stampDigits returns the digits of the stamp line whose digits start at
// off in content (they may have leading zeros, which Time does not keep).
func stampDigits(content []byte, off int64) string {
	end := bytes.IndexByte(content[off:], '\n')
	return string(content[off : off+int64(end)])
}

// TestOpenErrors: a missing file is an error of Open.
func TestOpenErrors(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "none.gz"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v; want a not-exist error", err)
	}
}

// TestEndShortHoldsPartialStamp: a recording cut inside a stamp line does
// not show the stamp's first bytes as data (a .gz cut there once showed
// "#848367" as a block without a stamp, one run in three); a complete one
// shows them where they really are data.
func TestEndShortHoldsPartialStamp(t *testing.T) {
	for _, tt := range []struct {
		content string
		held    int
		want    []string // the blocks' data
	}{
		{"#848367#1386170322361458\nGET /\n#848367", 7, []string{"GET /\n"}},
		{"#848367#1386170322361458\nGET /\n#9483", 5, []string{"GET /\n"}},
		{"#848367#1386170322361458\nGET /\n#748369#2013-12-04 16:1", 23, []string{"GET /\n"}},
		{"#848367#1386170322361458\nGET /\n#nope", 0, []string{"GET /\n#nope"}},
	} {
		s := NewSplitter(datafile.Out)
		s.Write([]byte(tt.content))
		held := s.EndShort()
		var got []string
		for b, ok := s.Next(); ok; b, ok = s.Next() {
			got = append(got, string(b.Data))
		}
		if held != tt.held || !slices.Equal(got, tt.want) {
			t.Errorf("%q: held %d, blocks %q; want %d, %q", tt.content, held, got, tt.held, tt.want)
		}
	}
}
