package recorder

import (
	"bytes"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/flate"
)

// Why compressors are shared, not owned by a session: a deflate compressor
// of klauspost/compress takes about 1 MiB whatever its level, and a bzip2
// encoder up to 18 MiB. pgzip keeps one or more per writer (in a pool of its
// own, until the next garbage collections); 1,000 sessions with sync-flushed
// pgzip writers were measured at 1.8–2.4 GB RSS. So a session keeps only its
// pending bytes (in 16 KiB chunks) and, for gzip, the 32 KiB of history the
// next segment may refer to; a segment borrows a compressor for the moment
// it is compressed. There is one compressor per CPU, so at most that many
// compressions run at once; segments.go runs them off the session's
// goroutine.

const (
	chunkSize = 16 << 10

	// gzipSegment is the amount of pending data that is compressed at once
	// even before the flush timer: small enough to bound a session's
	// memory, large enough that re-reading the 32 KiB history at the start
	// of each segment costs little (recording 4 KiB blocks runs at about
	// 85 % of the compressor's own speed; with 64 KiB segments, 70 %).
	gzipSegment = 128 << 10

	// DefaultGzipLevel is klauspost/compress's default, which pgzip uses
	// too. On the benchmark's SQL text it compresses about 128 MB/s on one
	// CPU to 5.55:1; level 1 245 MB/s to 5.14:1, level 6 111 MB/s to
	// 5.64:1 (loadgen codec -codec flate -level N -payload sql).
	DefaultGzipLevel = 5

	// bzip2Level is bzip2(1)'s default, which the original used. Streams are
	// cut at bzip2Segment pending bytes: blocks of 300 KB compress within 1 %
	// of 900 KB ones, 1.7 times faster, with a third of the memory.
	bzip2Level   = 9
	bzip2Segment = 300_000
)

// codecs is what the recorders of one Opener share for compression.
type codecs struct {
	// The idle compressors, nil until first needed. Each channel holds one
	// per CPU: taking one waits while as many compressions run, and a
	// compressor, once made, is kept (a pool would drop it at every garbage
	// collection, which the allocation of a new one soon causes).
	flate     chan *flate.Writer
	bzip2     chan *bzip2.Writer
	gzipLevel int // of every flate.Writer, 1 to 9

	// slots bounds the segments being compressed or waiting for a
	// compressor, over all sessions.
	slots chan struct{}

	// budget bounds the uncompressed bytes held by all sessions, pending or
	// in segments not yet compressed: a burst of busy sessions waits for
	// room rather than taking memory without limit.
	budget *semaphore.Weighted

	out     sync.Pool // *bytes.Buffer, one compressed segment
	chunks  sync.Pool // *chunk, pending uncompressed data
	dicts   sync.Pool // *[window]byte, gzip histories
	scratch sync.Pool // *[]byte, blocks gathered by framers
}

func newCodecs(gzipLevel int) *codecs {
	n := runtime.GOMAXPROCS(0)
	c := &codecs{
		flate:     make(chan *flate.Writer, n),
		bzip2:     make(chan *bzip2.Writer, n),
		gzipLevel: gzipLevel,
		slots:     make(chan struct{}, 2*n),
		budget:    semaphore.NewWeighted(pendingBudget),
	}
	for range n {
		c.flate <- nil
		c.bzip2 <- nil
	}
	c.out.New = func() any { return new(bytes.Buffer) }
	c.chunks.New = func() any { return new(chunk) }
	c.scratch.New = func() any { return new([]byte) }
	c.dicts.New = func() any { return new([window]byte) }
	return c
}

// getDict returns an empty history of capacity window.
func (c *codecs) getDict() []byte { return c.dicts.Get().(*[window]byte)[:0] }

// copyDict returns a copy of d, or nil for an empty d.
func (c *codecs) copyDict(d []byte) []byte {
	if len(d) == 0 {
		return nil
	}
	return append(c.getDict(), d...)
}

// putDict gives back a history from getDict or copyDict.
func (c *codecs) putDict(d []byte) {
	if cap(d) == window {
		c.dicts.Put((*[window]byte)(d[:window]))
	}
}

// getFlate waits for an idle deflate compressor; putFlate gives it back.
func (c *codecs) getFlate() *flate.Writer {
	w := <-c.flate
	if w == nil {
		var err error
		if w, err = flate.NewWriter(io.Discard, c.gzipLevel); err != nil {
			panic(err) // New checked the level
		}
	}
	return w
}

func (c *codecs) putFlate(w *flate.Writer) { c.flate <- w }

// getBzip2 waits for an idle bzip2 encoder; putBzip2 gives it back.
func (c *codecs) getBzip2() *bzip2.Writer {
	w := <-c.bzip2
	if w == nil {
		var err error
		if w, err = bzip2.NewWriter(io.Discard, &bzip2.WriterConfig{Level: bzip2Level}); err != nil {
			panic(err) // the level is a valid constant
		}
	}
	return w
}

func (c *codecs) putBzip2(w *bzip2.Writer) { c.bzip2 <- w }

func (c *codecs) buffer() *bytes.Buffer {
	b := c.out.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

// deflate compresses a gzip segment with a borrowed compressor; it runs on
// the segment's goroutine.
func (c *codecs) deflate(j *job) {
	fw := c.getFlate()
	defer c.putFlate(fw)
	if j.first {
		j.out.Write(gzipHeader)
	}
	fw.ResetDict(j.out, j.dict)
	var err error
	for i := range j.in.chunks {
		_, e := fw.Write(j.in.piece(i))
		keepFirst(&err, e)
	}
	keepFirst(&err, fw.Flush())
	// Let go of out and of the session's history before pooling fw.
	fw.ResetDict(io.Discard, nil)
	j.err = err
}

// bzip2Stream compresses a segment into one stream with a borrowed
// encoder; it runs on the segment's goroutine.
func (c *codecs) bzip2Stream(j *job) {
	zw := c.getBzip2()
	defer c.putBzip2(zw)
	err := zw.Reset(j.out)
	for i := range j.in.chunks {
		_, e := zw.Write(j.in.piece(i))
		keepFirst(&err, e)
	}
	keepFirst(&err, zw.Close())
	keepFirst(&err, zw.Reset(io.Discard))
	j.err = err
}

// keepFirst sets *err to e unless it holds an error already.
func keepFirst(err *error, e error) {
	if *err == nil {
		*err = e
	}
}
