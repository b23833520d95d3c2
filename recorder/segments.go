package recorder

import (
	"bytes"
	"errors"
	"runtime"
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
