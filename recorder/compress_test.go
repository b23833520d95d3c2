package recorder

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// syncFlush does what the flush timer does, at a point the test chooses.
func syncFlush(t testing.TB, r *Recorder) {
	t.Helper()
	r.mu.Lock()
	err := r.flushLocked()
	r.mu.Unlock()
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// randomBlocks returns blocks of random sizes (1 byte up to 300000) of
// random bytes, text-like or binary, in random directions when both.
func randomBlocks(rng *rand.Rand, n int, both bool) []block {
	var blocks []block
	at := t0
	for range n {
		size := 1 + rng.IntN(4096)
		switch rng.IntN(16) {
		case 0:
			size = 1 + rng.IntN(300000)
		case 1:
			size = 1
		}
		p := make([]byte, size)
		if rng.IntN(2) == 0 {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
		} else {
			const text = "SELECT * FROM t WHERE id = 42;\r\nHTTP/1.1 200 OK\n\x00\xc3\xbc"
			for i := range p {
				p[i] = text[rng.IntN(len(text))]
			}
		}
		dir := datafile.Out
		if both && rng.IntN(2) == 0 {
			dir = datafile.In
		}
		at = at.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		blocks = append(blocks, block{dir, at, p})
	}
	return blocks
}

// TestRoundTrip records random blocks with random flushes and checks, with
// the real gzip and bzip2, that after every flush the file gives back
// exactly what was recorded so far, and after Close all of it, intact.
func TestRoundTrip(t *testing.T) {
	for _, cc := range compressions {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed%d", cc.name, seed), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(seed, 1))
				cfg := Config{Record: [2]bool{true, true}, Compression: cc.c, FlushInterval: time.Hour}
				if seed == 2 {
					cfg.Printable, cfg.BlockStamps, cfg.StampInterval = true, true, time.Second
				}
				var now time.Time
				cfg.Now = func() time.Time { return now }
				cfg.Prefix = filepath.Join(t.TempDir(), "prot")
				r := openOne(t, cfg, "::1")
				defer r.Close()
				blocks := randomBlocks(rng, 30, true)
				for i, b := range blocks {
					now = b.at
					if err := r.Record(b.dir, b.data); err != nil {
						t.Fatalf("Record %d: %v", i, err)
					}
					if rng.IntN(4) != 0 && i != len(blocks)-1 {
						continue
					}
					syncFlush(t, r)
					// A gzip file without its trailer makes gzip fail after
					// writing all it has; the data is what counts.
					got, _ := decompress(t, r.Path(), cc.c)
					if want := model(cfg, blocks[:i+1]); !bytes.Equal(got, want) {
						t.Fatalf("after flush at block %d: %s", i, firstDiff(got, want))
					}
				}
				if err := r.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				got := testFile(t, r.Path(), cc.c)
				if want := model(cfg, blocks); !bytes.Equal(got, want) {
					t.Errorf("after Close: %s", firstDiff(got, want))
				}
			})
		}
	}
}

// TestEmptyFile checks that a session without data leaves a valid, empty
// file of each kind.
func TestEmptyFile(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			path := record(t, Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true, Compression: cc.c}, nil)
			if got := testFile(t, path, cc.c); len(got) != 0 {
				t.Errorf("got %q; want no data", got)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[datafile.Compression]int64{datafile.None: 0, datafile.Gzip: 20, datafile.Bzip2: 14}[cc.c]; fi.Size() != want {
				t.Errorf("size %d; want %d", fi.Size(), want)
			}
		})
	}
}

// TestIdleFlush checks that a flush with nothing new writes nothing: no
// empty streams or blocks for idle periods.
func TestIdleFlush(t *testing.T) {
	for _, cc := range compressions[1:] {
		t.Run(cc.name, func(t *testing.T) {
			o, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			size := func() int64 {
				fi, err := os.Stat(r.Path())
				if err != nil {
					t.Fatal(err)
				}
				return fi.Size()
			}
			syncFlush(t, r)
			if s := size(); s != 0 {
				t.Errorf("flush before any data wrote %d bytes; want 0", s)
			}
			if err := r.Record(datafile.Out, []byte("data")); err != nil {
				t.Fatal(err)
			}
			if s := size(); s != 0 {
				t.Errorf("a small block was written before a flush: %d bytes", s)
			}
			syncFlush(t, r)
			s1 := size()
			if s1 == 0 {
				t.Fatal("flush wrote nothing")
			}
			syncFlush(t, r)
			syncFlush(t, r)
			if s := size(); s != s1 {
				t.Errorf("idle flushes grew the file from %d to %d bytes", s1, s)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if got := testFile(t, r.Path(), cc.c); string(got) != "data" {
				t.Errorf("got %q; want %q", got, "data")
			}
		})
	}
}

// TestSegments checks that a compressed recorder does not keep more than a
// segment pending and maxInflight out: data beyond them reaches the file
// without a flush.
func TestSegments(t *testing.T) {
	for _, cc := range compressions[1:] {
		t.Run(cc.name, func(t *testing.T) {
			o, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			rng := rand.New(rand.NewPCG(7, 7))
			var all []byte
			for len(all) < 5*bzip2Segment {
				p := make([]byte, 4096)
				for i := range p {
					p[i] = 'a' + byte(rng.IntN(26))
				}
				all = append(all, p...)
				if err := r.Record(datafile.Out, p); err != nil {
					t.Fatal(err)
				}
				st := r.frame.next.(interface{ pendingLen() (int, int) })
				if n, out := st.pendingLen(); n >= max(gzipSegment, bzip2Segment) || out > maxInflight {
					t.Fatalf("%d bytes pending, %d segments out", n, out)
				}
			}
			// The file lags by at most what is pending and out.
			got, _ := decompress(t, r.Path(), cc.c)
			// A segment is handed out once it reaches its size, so it may
			// be a block longer.
			lag := (1 + maxInflight) * (max(gzipSegment, bzip2Segment) + 4096)
			if len(got) < len(all)-lag || !bytes.Equal(got, all[:len(got)]) {
				t.Errorf("before any flush the file gave back %d of %d bytes (must be a prefix of at least %d)",
					len(got), len(all), len(all)-lag)
			}
		})
	}
}

// TestTimedFlush checks that the flush timer, on the real clock, brings a
// recorded block into the file without any further call.
func TestTimedFlush(t *testing.T) {
	for _, cc := range compressions[1:] {
		t.Run(cc.name, func(t *testing.T) {
			o, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			flushed := make(chan struct{}, 1)
			r.mu.Lock()
			r.afterFlush = func() { flushed <- struct{}{} }
			r.mu.Unlock()
			for _, s := range []string{"first ", "second"} {
				if err := r.Record(datafile.Out, []byte(s)); err != nil {
					t.Fatal(err)
				}
				<-flushed
			}
			got, _ := decompress(t, r.Path(), cc.c)
			if string(got) != "first second" {
				t.Errorf("after two timed flushes: got %q; want %q", got, "first second")
			}
		})
	}
}

// FuzzRoundTrip records data cut into random blocks with random options,
// flushes and compression, and checks with the real tools that the file
// is exactly what SPEC §3 says.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint64(1), uint8(0))
	f.Add([]byte("Grüße \x00\x01 日本語 #848367#1\n"), uint64(2), uint8(1|4|8|16|32))
	f.Add(bytes.Repeat([]byte{0, 1, 2, 0xff}, 5000), uint64(3), uint8(2|16))
	f.Add([]byte{}, uint64(4), uint8(1))
	f.Add([]byte{}, uint64(5), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, opts uint8) {
		rng := rand.New(rand.NewPCG(seed, 2))
		cfg := Config{
			Record:      [2]bool{datafile.Out: true, datafile.In: opts&16 != 0},
			Compression: datafile.Compression(opts % 3),
			Printable:   opts&4 != 0,
			BlockStamps: opts&8 != 0,
		}
		if opts&32 != 0 {
			cfg.StampInterval = time.Second
		}
		var blocks []block
		at := t0
		for rest := data; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			dir := datafile.Out
			if rng.IntN(2) == 0 {
				dir = datafile.In
			}
			at = at.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			blocks = append(blocks, block{dir, at, rest[:n]})
			rest = rest[n:]
		}
		var now time.Time
		cfg.Now = func() time.Time { return now }
		cfg.Prefix = filepath.Join(t.TempDir(), "prot")
		cfg.FlushInterval = time.Hour
		o, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		r, err := o.Open(Conn{N: 1, Start: t0})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			now = b.at
			if err := r.Record(b.dir, b.data); err != nil {
				r.Close()
				t.Fatal(err)
			}
			if rng.IntN(3) == 0 {
				syncFlush(t, r)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		got := testFile(t, r.Path(), cfg.Compression)
		if want := model(cfg, blocks); !bytes.Equal(got, want) {
			t.Errorf("%s", firstDiff(got, want))
		}
	})
}

func (z *gzipStage) pendingLen() (int, int)  { return z.pend.len(), z.segs.outstanding() }
func (z *bzip2Stage) pendingLen() (int, int) { return z.pend.len(), z.segs.outstanding() }

// TestGzipLevel: the level reaches the compressor. Level 1 writes a
// larger file than level 9 from the same SQL text, and gzip(1) reads
// both back to exactly the bytes recorded.
func TestGzipLevel(t *testing.T) {
	var text bytes.Buffer
	rng := rand.New(rand.NewPCG(7, 7))
	for text.Len() < 1<<20 {
		fmt.Fprintf(&text, "SELECT id, name, amount FROM orders WHERE customer_id = %d AND status = '%s' ORDER BY created_at DESC LIMIT %d;\n",
			rng.IntN(100000), []string{"open", "paid", "shipped"}[rng.IntN(3)], rng.IntN(50)+1)
	}
	size := map[int]int64{}
	for _, level := range []int{1, 9} {
		cfg := Config{Prefix: filepath.Join(t.TempDir(), "prot"), Record: [2]bool{datafile.In: true}, Compression: datafile.Gzip, GzipLevel: level}
		r := openOne(t, cfg, "::1")
		for p := text.Bytes(); len(p) > 0; p = p[min(len(p), 4096):] {
			if err := r.Record(datafile.In, p[:min(len(p), 4096)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := decompress(t, r.Path(), datafile.Gzip)
		if err != nil || !bytes.Equal(got, text.Bytes()) {
			t.Fatalf("level %d: gzip -dc gave %d bytes (%v); want the %d recorded", level, len(got), err, text.Len())
		}
		fi, err := os.Stat(r.Path())
		if err != nil {
			t.Fatal(err)
		}
		size[level] = fi.Size()
	}
	if size[1] <= size[9] {
		t.Errorf("level 1 wrote %d bytes, level 9 %d; want level 1's larger", size[1], size[9])
	}
	for _, bad := range []int{-1, 10} {
		if _, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Compression: datafile.Gzip, GzipLevel: bad}); err == nil {
			t.Errorf("New accepted gzip level %d", bad)
		}
	}
}
