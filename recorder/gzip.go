package recorder

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// gzipStage compresses a file into one gzip member (RFC 1952). Pending data
// is compressed in segments, each ending with a deflate sync flush, so the
// file holds a complete prefix of the stream after every segment; Close
// adds the final block and the trailer. A segment may refer back to the
// last 32 KiB of the previous ones, as one deflate stream does, so segments
// can be compressed at the same time (see segments) and still make one
// stream.
type gzipStage struct {
	next   stage
	c      *codecs
	pend   pending
	segs   segments
	dict   []byte // the last (up to) 32 KiB handed to a segment: the next one's history
	crc    uint32
	size   uint32 // modulo 2³², as the trailer has it
	header bool   // a segment carries the member header
	err    error
}

const window = 32 << 10 // deflate's history

var (
	// gzipHeader: deflate, no flags, no time, no extra flags, unknown OS.
	gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}
	// finalBlock is an empty final block (fixed codes, end code only); it
	// may follow a sync flush, which leaves the stream byte-aligned.
	finalBlock = []byte{0x03, 0x00}
)

func newGzipStage(next stage, c *codecs) *gzipStage {
	return &gzipStage{next: next, c: c, pend: newPending(c), segs: segments{c: c}}
}

// Write keeps a copy of p pending, and hands what is pending to a segment
// once it is gzipSegment bytes.
func (z *gzipStage) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if err := take(&z.pend, p, gzipSegment, z.submit); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush compresses what is pending and writes every segment into the file;
// with nothing pending or out it writes nothing.
func (z *gzipStage) Flush() error {
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

// Close ends the member, also when nothing was written, and closes the file.
func (z *gzipStage) Close() error {
	var err error
	if z.err == nil {
		err = z.Flush()
	}
	if err == nil && z.err == nil {
		b := make([]byte, 0, len(gzipHeader)+len(finalBlock)+8)
		if !z.header {
			b = append(b, gzipHeader...)
		}
		b = append(b, finalBlock...)
		b = binary.LittleEndian.AppendUint32(b, z.crc)
		b = binary.LittleEndian.AppendUint32(b, z.size)
		_, err = z.next.Write(b)
	}
	z.segs.wait()
	z.pend.reset()
	z.c.putDict(z.dict)
	z.dict = nil
	return errors.Join(err, z.next.Close())
}

// submit hands the pending bytes to a segment. The trailer's checksum and
// the history of the next segment are taken here, in order.
func (z *gzipStage) submit() error {
	j := &job{in: z.pend, dict: z.c.copyDict(z.dict), first: !z.header}
	z.pend = newPending(z.c)
	z.header = true
	if z.dict == nil {
		z.dict = z.c.getDict()
	}
	for i := range j.in.chunks {
		b := j.in.piece(i)
		z.crc = crc32.Update(z.crc, crc32.IEEETable, b)
		z.size += uint32(len(b))
		z.dict = appendWindow(z.dict, b)
	}
	if err := z.segs.submit(j, z.c.deflate, z.write); err != nil {
		z.err = err
		return err
	}
	return nil
}

func (z *gzipStage) write(b []byte) error {
	_, err := z.next.Write(b)
	return err
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

// appendWindow appends b to the history d, keeping its last 32 KiB.
func appendWindow(d, b []byte) []byte {
	if len(b) >= window {
		return append(d[:0], b[len(b)-window:]...)
	}
	if over := len(d) + len(b) - window; over > 0 {
		d = d[:copy(d, d[over:])]
	}
	return append(d, b...)
}
