package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/pgzip"
)

// codecs are the compressors alone, writing to io.Discard:
//   - pgzip: klauspost/pgzip with its defaults (level 5 in 1 MiB blocks,
//     compressed on all CPUs), the -L -z goal's reference;
//   - flate: klauspost/compress/flate at the default level on one CPU, the
//     codec the recorder drives;
//   - bzip2: dsnet/compress/bzip2 at level 9 on one CPU, as -j records.
var codecs = map[string]func(w io.Writer, level int) (io.WriteCloser, error){
	"pgzip": func(w io.Writer, _ int) (io.WriteCloser, error) { return pgzip.NewWriter(w), nil },
	"flate": func(w io.Writer, level int) (io.WriteCloser, error) { return flate.NewWriter(w, level) },
	"bzip2": func(w io.Writer, _ int) (io.WriteCloser, error) {
		return bzip2.NewWriter(w, &bzip2.WriterConfig{Level: 9})
	},
}

func codec(args []string) error {
	fs := flag.NewFlagSet("codec", flag.ExitOnError)
	name := fs.String("codec", "pgzip", "pgzip, flate or bzip2")
	pname := fs.String("payload", "sql", "sql or random")
	d := fs.Duration("t", 2*time.Second, "compress for about this long")
	level := fs.Int("level", flate.DefaultCompression, "flate's level, 1-9 (default: its default, 5)")
	fs.Parse(args)
	p, err := payload(*pname)
	if err != nil {
		return err
	}
	newW := codecs[*name]
	if newW == nil {
		return fmt.Errorf("unknown codec %q", *name)
	}
	var out countWriter
	w, err := newW(&out, *level)
	if err != nil {
		return err
	}
	start := time.Now()
	var total int64
	for off := 0; time.Since(start) < *d; off = (off + pieceSize) % len(p) {
		n, err := w.Write(p[off : off+pieceSize])
		total += int64(n)
		if err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Printf("%.0f\n", float64(total)/time.Since(start).Seconds())
	fmt.Fprintf(os.Stderr, "compressed %.2f:1\n", float64(total)/float64(out.n))
	return nil
}

// countWriter discards what it is given and counts it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
