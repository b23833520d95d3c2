package playback

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/testkit"

	"github.com/ipprot/ipprot/recorder"
)

// session returns a known session of n blocks of text and binary noise,
// both directions, 1 ms apart, of 1 to maxLen bytes.
func session(n, maxLen int) []tblock {
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.UnixMicro(1386170322361458).In(zone)
	blocks := make([]tblock, n)
	for i := range blocks {
		p := make([]byte, 1+rng.IntN(maxLen))
		for j := range p {
			if rng.IntN(6) == 0 {
				p[j] = byte(rng.Uint32())
			} else {
				p[j] = "SELECT * FROM t;\n"[rng.IntN(17)]
			}
		}
		at = at.Add(time.Millisecond)
		blocks[i] = tblock{datafile.Direction(i % 2), at, p}
	}
	return blocks
}

// checkPrefix checks that got are the first of the recorded blocks, the
// last possibly cut short (a truncated file can end inside its data).
func checkPrefix(t *testing.T, got []Block, want []tblock) {
	t.Helper()
	if len(got) > len(want) {
		t.Fatalf("got %d blocks; want at most %d", len(got), len(want))
	}
	for i, b := range got {
		w := want[i]
		data := w.data
		if i == len(got)-1 && len(b.Data) < len(data) {
			data = data[:len(b.Data)]
		}
		if b.Dir != w.dir || b.Time.UnixMicro() != w.at.UnixMicro() || !bytes.Equal(b.Data, data) || b.Part != 0 {
			t.Fatalf("block %d: got %v %v %d bytes part %d; want %v %v %d bytes", i, b.Dir, b.Time, len(b.Data), b.Part, w.dir, w.at, len(data))
		}
	}
}

var extensions = map[datafile.Compression]string{datafile.None: "plain", datafile.Gzip: ".gz", datafile.Bzip2: ".bz2"}

// TestCompressedRoundTrip: complete .gz (several sync-flushed segments)
// and .bz2 (several streams) recordings read back whole, ending in io.EOF.
func TestCompressedRoundTrip(t *testing.T) {
	blocks := session(150, 4<<10)
	for _, c := range []datafile.Compression{datafile.None, datafile.Gzip, datafile.Bzip2} {
		t.Run(extensions[c], func(t *testing.T) {
			path := record(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true, Compression: c}, blocks)
			got, end := readAll(t, path, datafile.Out)
			if end != io.EOF {
				t.Fatalf("ended with %v; want io.EOF", end)
			}
			if len(got) != len(blocks) {
				t.Fatalf("got %d blocks; want %d", len(got), len(blocks))
			}
			checkPrefix(t, got, blocks)
		})
	}
}

// decompressed runs the real tool (gzip -dc, bzip2 -dc) on path and
// returns how many bytes it restored; it fails on a cut file, as it should.
func decompressed(t *testing.T, tool, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(tool, "-dc")
	cmd.Stdin = f
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Run()
	return int64(out.Len())
}

// cutAt writes the first n bytes of file to a new file of the same name in
// a new folder.
func cutAt(t *testing.T, file []byte, name string, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, file[:n], 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// recordFlushes records blocks like record, letting the timed flush write
// the file after every group of blocks, and returns, besides the path, the
// offsets at which the file ended after a flush: where a crash leaves a
// file. For gzip, that is the file's size once the flush wrote it, which
// ends with a sync flush (00 00 ff ff), so no write is seen half done.
// For bzip2, whose streams end inside a byte, the test finds the streams'
// starts in the file.
func recordFlushes(t *testing.T, c datafile.Compression, blocks []tblock, group int) (string, []int) {
	t.Helper()
	var mu sync.Mutex
	var now time.Time
	o, err := recorder.New(recorder.Config{
		Prefix: filepath.Join(t.TempDir(), "prot"), Record: [2]bool{true, true}, BlockStamps: true,
		Compression: c, FlushInterval: time.Millisecond,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(recorder.Conn{N: 1, Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// flushed returns the file's size if it ends with a complete flush.
	flushed := func() (int, bool) {
		file, err := os.ReadFile(r.Path())
		if err != nil {
			t.Fatal(err)
		}
		if c == datafile.Gzip {
			return len(file), bytes.HasSuffix(file, []byte{0, 0, 0xff, 0xff})
		}
		return len(file), true
	}
	var sizes []int
	last := 0
	for i, b := range blocks {
		mu.Lock()
		now = b.at
		mu.Unlock()
		if err := r.Record(b.dir, b.data); err != nil {
			t.Fatal(err)
		}
		if (i+1)%group != 0 {
			continue
		}
		// Wait for the timed flush to write this group.
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, ok := flushed()
			if n > last && ok {
				last = n
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the timed flush wrote nothing within 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		if c == datafile.Gzip {
			sizes = append(sizes, last)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if c == datafile.Bzip2 {
		file, err := os.ReadFile(r.Path())
		if err != nil {
			t.Fatal(err)
		}
		// A stream that holds data starts with its header and a block's magic.
		start := []byte("BZh91AY&SY")
		for i := 1; i < len(file); i++ {
			if bytes.HasPrefix(file[i:], start) {
				sizes = append(sizes, i)
			}
		}
	}
	if len(sizes) < 3 {
		t.Fatalf("the recording has %d flushes; want several", len(sizes))
	}
	return r.Path(), sizes
}

// TestTruncated cuts real .gz and .bz2 recordings as kill -9 or a running
// connection leave them — after a flush — and at other offsets, as a
// partial write might: each reads to its end, gives the blocks recorded
// (the last possibly cut), and ends with a *TruncatedError.
//
// After a flush, it restores exactly what the real tool restores. Inside
// a gzip segment, Go's inflate stops up to a few bytes before gzip -dc
// (it needs the bits of a whole code); inside the last bzip2 stream, after
// its last block but before the stream's end, it gives that block, whose
// own CRC checked, where bzip2 -dc gives nothing of the stream.
func TestTruncated(t *testing.T) {
	testkit.Need(t, "gzip", "bzip2")
	for _, tt := range []struct {
		c      datafile.Compression
		tool   string
		blocks int
	}{{datafile.Gzip, "gzip", 150}, {datafile.Bzip2, "bzip2", 150}} {
		t.Run(tt.tool, func(t *testing.T) {
			blocks := session(tt.blocks, 2<<10)
			path, flushes := recordFlushes(t, tt.c, blocks, 30)
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			size := len(file)
			cuts := map[int]bool{} // offset → after a flush
			for _, n := range []int{1, 10, 11, 100, size / 3, size / 2, size - 9, size - 8, size - 1} {
				cuts[n] = false
			}
			for _, n := range flushes {
				cuts[n] = true
			}
			if tt.c == datafile.Gzip {
				cuts[0] = true // empty: nothing flushed yet
			}
			for n, flushed := range cuts {
				t.Run(strconv.Itoa(n), func(t *testing.T) {
					cut := cutAt(t, file, filepath.Base(path), n)
					f, err := Open(cut)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					r := NewReader(f, datafile.Out)
					var got []Block
					for {
						b, err := r.Next()
						if err != nil {
							break
						}
						got = append(got, b)
					}
					_, end := r.Next()
					checkPrefix(t, got, blocks)
					tool := decompressed(t, tt.tool, cut)
					var te *TruncatedError
					switch {
					case tt.c == datafile.Bzip2 && flushed:
						// Complete streams: nothing tells it from a complete file.
						if end != io.EOF || r.Offset() != tool {
							t.Errorf("ended with %v after %d bytes of content; want io.EOF after %d, as bzip2 -dc", end, r.Offset(), tool)
						}
					case !errors.As(end, &te):
						t.Errorf("ended with %v; want a TruncatedError", end)
					case te.Offset != r.Offset():
						t.Errorf("TruncatedError at %d; Offset says %d", te.Offset, r.Offset())
					case flushed && te.Offset != tool:
						t.Errorf("after a flush: read %d bytes of content; %s -dc restores %d", te.Offset, tt.tool, tool)
					case te.Held > maxLine:
						t.Errorf("held back %d bytes; a cut stamp line is at most %d", te.Held, maxLine)
					case tt.c == datafile.Gzip && (te.Offset > tool || tool-te.Offset > 8):
						t.Errorf("read %d bytes of content; gzip -dc restores %d", te.Offset, tool)
					case tt.c == datafile.Bzip2 && te.Offset < tool:
						t.Errorf("read %d bytes of content; bzip2 -dc restores %d", te.Offset, tool)
					}
				})
			}
		})
	}
}

// TestCorrupt: a recording damaged in its middle, or whose gzip trailer
// does not match, is an error that is not a truncation; the blocks before
// the damage are read. (The data decoded from the damaged segment or
// stream may itself be wrong: gzip's CRC covers the whole file and is
// checked at its end, bzip2's a block's and is checked after it.)
func TestCorrupt(t *testing.T) {
	testkit.Need(t, "gzip", "bzip2")
	blocks := session(150, 2<<10)
	for _, tt := range []struct {
		name string
		c    datafile.Compression
		tool string
		at   func(size int) int
	}{
		{"gzip middle", datafile.Gzip, "gzip", func(size int) int { return size / 2 }},
		{"gzip trailer", datafile.Gzip, "gzip", func(size int) int { return size - 6 }},
		{"bzip2 middle", datafile.Bzip2, "bzip2", func(size int) int { return size / 2 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := recordFlushes(t, tt.c, blocks, 30)
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			at := tt.at(len(file))
			for i := at; i < min(at+4, len(file)); i++ {
				file[i] ^= 0x55
			}
			if err := os.WriteFile(path, file, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := exec.Command(tt.tool, "-t", path).Run(); err == nil {
				t.Fatalf("%s -t accepts the damaged file; the test damaged nothing", tt.tool)
			}
			got, end := readAll(t, path, datafile.Out)
			var te *TruncatedError
			if end == io.EOF || errors.As(end, &te) || end == nil {
				t.Fatalf("ended with %v; want a read error", end)
			}
			if len(got) < len(blocks)/4 {
				t.Fatalf("got %d blocks; want the first quarter at least", len(got))
			}
			checkPrefix(t, got[:len(blocks)/4], blocks)
		})
	}
}
