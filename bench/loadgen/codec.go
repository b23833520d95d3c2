package main

import (
	"flag"
	"fmt"
	"io"
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
var codecs = map[string]func(w io.Writer) (io.WriteCloser, error){
	"pgzip": func(w io.Writer) (io.WriteCloser, error) { return pgzip.NewWriter(w), nil },
	"flate": func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.DefaultCompression) },
	"bzip2": func(w io.Writer) (io.WriteCloser, error) {
		return bzip2.NewWriter(w, &bzip2.WriterConfig{Level: 9})
	},
}

func codec(args []string) error {
	fs := flag.NewFlagSet("codec", flag.ExitOnError)
	name := fs.String("codec", "pgzip", "pgzip, flate or bzip2")
	pname := fs.String("payload", "sql", "sql or random")
	d := fs.Duration("t", 2*time.Second, "compress for about this long")
	fs.Parse(args)
	p, err := payload(*pname)
	if err != nil {
		return err
	}
	newW := codecs[*name]
	if newW == nil {
		return fmt.Errorf("unknown codec %q", *name)
	}
	w, err := newW(io.Discard)
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
	return nil
}
