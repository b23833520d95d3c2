package recorder

import (
	"bytes"
	"context"
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

type chunk [chunkSize]byte

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

// pendingBudget is codecs.budget. With 1,000 sessions each sending 1 MiB at
// once through -z, it took the peak RSS from 1.0 GiB (no budget) to 560 MiB
// (most of the rest is the sessions' read buffers), for 25 % more time.
var pendingBudget int64 = 64 << 20 // tests lower it

// pending holds the uncompressed bytes of a session not yet compressed, in
// chunks borrowed from a pool and given back once compressed, and the
// share of the budget reserved for them.
type pending struct {
	pool     *sync.Pool
	budget   *semaphore.Weighted
	chunks   []*chunk
	n        int
	reserved int64
}

func newPending(c *codecs) pending { return pending{pool: &c.chunks, budget: c.budget} }

// tryReserve takes n bytes of the budget if they are free now.
func (q *pending) tryReserve(n int) bool {
	if !q.budget.TryAcquire(int64(n)) {
		return false
	}
	q.reserved += int64(n)
	return true
}

// reserve waits for n bytes of the budget.
func (q *pending) reserve(n int) {
	q.budget.Acquire(context.Background(), int64(n))
	q.reserved += int64(n)
}

func (q *pending) len() int { return q.n }

// append copies p.
func (q *pending) append(p []byte) {
	for len(p) > 0 {
		off := q.n % chunkSize
		if off == 0 && q.n == len(q.chunks)*chunkSize {
			q.chunks = append(q.chunks, q.pool.Get().(*chunk))
		}
		c := copy(q.chunks[len(q.chunks)-1][off:], p)
		q.n += c
		p = p[c:]
	}
}

// piece returns the i-th stretch of pending bytes, for i < len(q.chunks).
func (q *pending) piece(i int) []byte {
	return q.chunks[i][:min(chunkSize, q.n-i*chunkSize)]
}

// reset gives the chunks and the reserved budget back.
func (q *pending) reset() {
	for i, c := range q.chunks {
		q.pool.Put(c)
		q.chunks[i] = nil
	}
	q.chunks = q.chunks[:0]
	q.n = 0
	if q.reserved > 0 {
		q.budget.Release(q.reserved)
		q.reserved = 0
	}
}

// take adds p to the pending bytes of a stage within the budget, handing
// what is pending to a segment (submit) whenever it reaches size. When the
// budget is spent, the stage's own pending bytes go to a segment first, so
// that it holds nothing it could not give back while it waits: each wait
// ends once segments already out are compressed.
func take(q *pending, p []byte, size int, submit func() error) error {
	for len(p) > 0 {
		n := min(len(p), chunkSize)
		if !q.tryReserve(n) {
			if q.len() > 0 {
				if err := submit(); err != nil {
					return err
				}
			}
			q.reserve(n)
		}
		q.append(p[:n])
		p = p[n:]
		if q.len() >= size {
			if err := submit(); err != nil {
				return err
			}
		}
	}
	return nil
}

// keepFirst sets *err to e unless it holds an error already.
func keepFirst(err *error, e error) {
	if *err == nil {
		*err = e
	}
}
