package recorder

import (
	"bytes"
	"errors"
	"io"
)

// bzip2Stage compresses a file into bzip2 streams: every flush ends the
// stream it writes, and the next data starts a new one, so the file is a
// sequence of complete streams that bzip2 -dc reads as one. A flush with
// nothing pending writes nothing; a file without data gets one empty
// stream, so that it is a valid bzip2 file.
type bzip2Stage struct {
	next  stage
	c     *codecs
	pend  pending
	wrote bool // a stream is in the file
	err   error
}

// emptyBzip2 is the stream of no data, as bzip2(1) writes it.
var emptyBzip2 = []byte{'B', 'Z', 'h', '9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, 0, 0, 0, 0}

func newBzip2Stage(next stage, c *codecs) *bzip2Stage {
	return &bzip2Stage{next: next, c: c, pend: pending{pool: &c.chunks}}
}

// Write keeps p pending, or writes it and what is pending as a stream once
// that is bzip2Segment bytes.
func (z *bzip2Stage) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if z.pend.len()+len(p) < bzip2Segment {
		z.pend.append(p)
		return len(p), nil
	}
	if err := z.stream(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is pending as a stream; with nothing pending it writes
// nothing.
func (z *bzip2Stage) Flush() error {
	if z.err != nil {
		return z.err
	}
	if z.pend.len() > 0 {
		if err := z.stream(nil); err != nil {
			return err
		}
	}
	return z.next.Flush()
}

// Close writes what is pending, or an empty stream into a file that has
// none, and closes the file.
func (z *bzip2Stage) Close() error {
	var err error
	switch {
	case z.err != nil:
	case z.pend.len() > 0:
		err = z.stream(nil)
	case !z.wrote:
		_, err = z.next.Write(emptyBzip2)
	}
	z.pend.reset()
	return errors.Join(err, z.next.Close())
}

// stream compresses the pending bytes and then p into one stream and
// writes it to the file with one Write.
func (z *bzip2Stage) stream(p []byte) error {
	out := z.c.buffer()
	defer z.c.out.Put(out)
	err := z.compress(out, p)
	if err == nil {
		_, err = z.next.Write(out.Bytes())
	}
	if err != nil {
		z.err = err
		return err
	}
	z.wrote = true
	return nil
}

func (z *bzip2Stage) compress(out *bytes.Buffer, p []byte) error {
	zw := z.c.getBzip2()
	defer z.c.putBzip2(zw)
	err := zw.Reset(out)
	for i := range z.pend.chunks {
		_, e := zw.Write(z.pend.piece(i))
		keepFirst(&err, e)
	}
	_, e := zw.Write(p)
	keepFirst(&err, e)
	keepFirst(&err, zw.Close())
	keepFirst(&err, zw.Reset(io.Discard))
	z.pend.reset()
	return err
}
