package recorder

import (
	"errors"
	"io"
)

// bzip2Stage compresses a file into bzip2 streams: every segment, and every
// flush, ends the stream it writes, and the next data starts a new one, so
// the file is a sequence of complete streams that bzip2 -dc reads as one.
// Streams are independent, so segments are compressed at the same time
// (see segments). A flush with nothing pending writes nothing; a file
// without data gets one empty stream, so that it is a valid bzip2 file.
type bzip2Stage struct {
	next  stage
	c     *codecs
	pend  pending
	segs  segments
	wrote bool // a stream was handed to a segment
	err   error
}

// emptyBzip2 is the stream of no data, as bzip2(1) writes it.
var emptyBzip2 = []byte{'B', 'Z', 'h', '9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, 0, 0, 0, 0}

func newBzip2Stage(next stage, c *codecs) *bzip2Stage {
	return &bzip2Stage{next: next, c: c, pend: newPending(c), segs: segments{c: c}}
}

// Write keeps a copy of p pending, and hands what is pending to a stream
// of its own once it is bzip2Segment bytes.
func (z *bzip2Stage) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if err := take(&z.pend, p, bzip2Segment, z.submit); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is pending as a stream, and every stream into the file;
// with nothing pending or out it writes nothing.
func (z *bzip2Stage) Flush() error {
	if z.err != nil {
		return z.err
	}
	if z.pend.len() > 0 {
		if err := z.submit(); err != nil {
			return err
		}
	}
	if err := z.segs.writeDone(true, z.write); err != nil {
		z.err = err
		return err
	}
	return z.next.Flush()
}

// Close writes what is pending, or an empty stream into a file that has
// none, and closes the file.
func (z *bzip2Stage) Close() error {
	var err error
	if z.err == nil {
		err = z.Flush()
	}
	if err == nil && z.err == nil && !z.wrote {
		_, err = z.next.Write(emptyBzip2)
	}
	z.segs.wait()
	z.pend.reset()
	return errors.Join(err, z.next.Close())
}

func (z *bzip2Stage) submit() error {
	j := &job{in: z.pend}
	z.pend = newPending(z.c)
	z.wrote = true
	if err := z.segs.submit(j, z.c.bzip2Stream, z.write); err != nil {
		z.err = err
		return err
	}
	return nil
}

func (z *bzip2Stage) write(b []byte) error {
	_, err := z.next.Write(b)
	return err
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
