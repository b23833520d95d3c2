package recorder

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dsnet/compress/bzip2"
	"github.com/ipprot/ipprot/datafile"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/pgzip"
)

var benchSizes = []int{300000, 4096}

// benchCorpus is the text every benchmark records or compresses.
var benchCorpus = sync.OnceValue(func() []byte { return textCorpus(16 << 20) })

// blockAt returns the i-th block of size n of the corpus.
func blockAt(i, n int) []byte {
	c := benchCorpus()
	off := (i * n) % (len(c) - n)
	return c[off : off+n]
}

// BenchmarkRecord measures Record with a real file in the system's temp
// folder, plain, with -M -s, and compressed; -sha256 also hashes the file
// (Config.Hash).
func BenchmarkRecord(b *testing.B) {
	configs := []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{Record: [2]bool{datafile.Out: true}}},
		{"plain-sha256", Config{Record: [2]bool{datafile.Out: true}, Hash: true}},
		{"M-s", Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true, Printable: true, StampInterval: time.Second}},
		{"gzip", Config{Record: [2]bool{datafile.Out: true}, Compression: datafile.Gzip}},
		{"gzip-sha256", Config{Record: [2]bool{datafile.Out: true}, Compression: datafile.Gzip, Hash: true}},
		{"bzip2", Config{Record: [2]bool{datafile.Out: true}, Compression: datafile.Bzip2}},
	}
	for _, c := range configs {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				cfg := c.cfg
				cfg.Prefix = filepath.Join(b.TempDir(), "p")
				o, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { o.Close() })
				var r *Recorder
				var written int
				open := func() {
					if r != nil {
						if err := r.Close(); err != nil {
							b.Fatal(err)
						}
						os.Remove(r.Path())
					}
					if r, err = o.Open(Conn{N: 1, Start: t0}); err != nil {
						b.Fatal(err)
					}
					written = 0
				}
				open()
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if written >= 1<<30 {
						// Keep the disk from filling up; not counted.
						b.StopTimer()
						open()
						b.StartTimer()
					}
					if err := r.Record(datafile.Out, blockAt(i, n)); err != nil {
						b.Fatal(err)
					}
					written += n
				}
				if err := r.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkCodec measures the compressors alone on the same blocks, into
// io.Discard, so that BenchmarkRecord reads as a fraction of them; and a
// bare write(2) of the blocks to a file, for the plain recorder.
func BenchmarkCodec(b *testing.B) {
	codecs := []struct {
		name string
		new  func(w io.Writer) io.WriteCloser
	}{
		{"pgzip-default", func(w io.Writer) io.WriteCloser { return pgzip.NewWriter(w) }},
		{"flate-default-1cpu", func(w io.Writer) io.WriteCloser {
			fw, _ := flate.NewWriter(w, DefaultGzipLevel)
			return fw
		}},
		{"dsnet-bzip2-9", func(w io.Writer) io.WriteCloser {
			zw, _ := bzip2.NewWriter(w, &bzip2.WriterConfig{Level: bzip2Level})
			return zw
		}},
	}
	for _, c := range codecs {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				w := c.new(io.Discard)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, err := w.Write(blockAt(i, n)); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("file-write/%d", n), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			written := 0
			for i := 0; b.Loop(); i++ {
				if written >= 1<<30 {
					b.StopTimer()
					f.Truncate(0)
					f.Seek(0, io.SeekStart)
					written = 0
					b.StartTimer()
				}
				if _, err := f.Write(blockAt(i, n)); err != nil {
					b.Fatal(err)
				}
				written += n
			}
		})
	}
}
