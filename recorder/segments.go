package recorder

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"

	"golang.org/x/sync/semaphore"
)

// A session's pending data is compressed in segments on goroutines of
// their own, so that one busy session can use every CPU (as pgzip does)
// while the session's goroutine goes on reading and forwarding. The
// compressed segments are written to the file in order, by the session's
// own calls (Write, Flush, Close, under the recorder's lock); a worker only
// compresses.
//
// Memory stays bounded: a session has at most maxInflight segments out,
// and all sessions together at most cap(codecs.slots) being compressed or
// waiting for a compressor; a session that finds no slot waits, which
// holds back its direction like any slow write does.

// maxInflight is the number of segments a session may have out at once.
var maxInflight = min(max(runtime.GOMAXPROCS(0), 2), 4)

// job is one segment: its uncompressed bytes in, its compressed bytes out.
type job struct {
	in    pending
	dict  []byte // gzip: the history it may refer to; owned by the job
	first bool   // gzip: the member's header goes before the segment
	out   *bytes.Buffer
	err   error
	done  chan struct{}
}

// segments is the ordered queue of a session's segments out.
type segments struct {
	c        *codecs
	inflight []*job // oldest first
}

// submit starts compressing j with compress on a goroutine of its own. It
// first writes what is done to next and, if the session has maxInflight
// segments out, waits for the oldest.
func (s *segments) submit(j *job, compress func(*job), write func([]byte) error) error {
	err := s.writeDone(false, write)
	for err == nil && len(s.inflight) >= maxInflight {
		err = s.writeOldest(write)
	}
	if err != nil {
		j.in.reset()
		s.c.putDict(j.dict)
		return err
	}
	j.out = s.c.buffer()
	j.done = make(chan struct{})
	s.c.slots <- struct{}{}
	s.inflight = append(s.inflight, j)
	go runJob(j, compress, s.c)
	return nil
}

// runJob compresses j and gives back what only the compression needed.
func runJob(j *job, compress func(*job), c *codecs) {
	compress(j)
	j.in.reset()
	c.putDict(j.dict)
	j.dict = nil
	<-c.slots
	close(j.done)
}

// writeDone writes the segments that are done, in order, stopping at the
// first that is not (or, if wait, waiting for every one).
func (s *segments) writeDone(wait bool, write func([]byte) error) error {
	for len(s.inflight) > 0 {
		if !wait {
			select {
			case <-s.inflight[0].done:
			default:
				return nil
			}
		}
		if err := s.writeOldest(write); err != nil {
			return err
		}
	}
	return nil
}

// writeOldest waits for the oldest segment out and writes it.
func (s *segments) writeOldest(write func([]byte) error) error {
	j := s.inflight[0]
	<-j.done
	s.inflight[0] = nil
	s.inflight = s.inflight[1:]
	err := j.err
	if err == nil {
		err = write(j.out.Bytes())
	}
	s.c.out.Put(j.out)
	return err
}

// wait waits for every segment out without writing it: the recording has
// failed, and Close must not leave a goroutine behind.
func (s *segments) wait() {
	for _, j := range s.inflight {
		<-j.done
		s.c.out.Put(j.out)
	}
	clear(s.inflight)
	s.inflight = s.inflight[:0]
}

// outstanding returns the number of uncompressed bytes not yet in the file
// that the segments out hold, at most; for tests.
func (s *segments) outstanding() int { return len(s.inflight) }

// segmenter is what the gzip and bzip2 stages share: the pending bytes,
// the segments out, their writing in order and the sticky error. A codec
// supplies newJob, which turns the pending bytes into a segment (called in
// order, on the session's goroutine), and compress, which runs on the
// segment's own goroutine.
type segmenter struct {
	next     stage
	c        *codecs
	pend     pending
	segs     segments
	size     int // the pending bytes that make a segment
	newJob   func(in pending) *job
	compress func(*job)
	err      error
}

func newSegmenter(next stage, c *codecs, size int, newJob func(pending) *job, compress func(*job)) segmenter {
	return segmenter{next: next, c: c, pend: newPending(c), segs: segments{c: c}, size: size, newJob: newJob, compress: compress}
}

// Write keeps a copy of p pending, and hands what is pending to a segment
// once it is size bytes.
func (s *segmenter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := take(&s.pend, p, s.size, s.submit); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush hands what is pending to a segment and writes every segment into
// the file; with nothing pending or out it writes nothing.
func (s *segmenter) Flush() error {
	if s.err != nil {
		return s.err
	}
	if s.pend.len() > 0 {
		if err := s.submit(); err != nil {
			return err
		}
	}
	if err := s.segs.writeDone(true, s.write); err != nil {
		s.err = err
		return err
	}
	return s.next.Flush()
}

// close flushes and, unless the stage failed, writes what tail returns (the
// end of the codec's stream); then it gives everything back and closes the
// file. It does not report again an error Write or Flush returned.
func (s *segmenter) close(tail func() []byte) error {
	var err error
	if s.err == nil {
		err = s.Flush()
	}
	if b := tail(); err == nil && s.err == nil && len(b) > 0 {
		_, err = s.next.Write(b)
	}
	s.segs.wait()
	s.pend.reset()
	return errors.Join(err, s.next.Close())
}

func (s *segmenter) submit() error {
	j := s.newJob(s.pend)
	s.pend = newPending(s.c)
	if err := s.segs.submit(j, s.compress, s.write); err != nil {
		s.err = err
		return err
	}
	return nil
}

func (s *segmenter) write(b []byte) error {
	_, err := s.next.Write(b)
	return err
}

// chunk is a piece of a session's pending data.
type chunk [chunkSize]byte

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
