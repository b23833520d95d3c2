package recorder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// gzipStage compresses a file into one gzip member (RFC 1952). Pending data
// is compressed in segments, each ending with a deflate sync flush, so the
// file holds a complete prefix of the stream after every segment; Close
// adds the final block and the trailer. A segment may refer back to the
// last 32 KiB of the previous ones, as one deflate stream does.
type gzipStage struct {
	next   stage
	c      *codecs
	pend   pending
	dict   []byte // the last (up to) 32 KiB compressed, the next segment's history
	crc    uint32
	size   uint32 // modulo 2³², as the trailer has it
	header bool   // the member header is in the file
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
	return &gzipStage{next: next, c: c, pend: pending{pool: &c.chunks}}
}

// Write keeps p pending, or compresses it with what is pending once that
// makes a segment.
func (z *gzipStage) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if z.pend.len()+len(p) < gzipSegment {
		z.pend.append(p)
		return len(p), nil
	}
	if err := z.segment(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush compresses what is pending into the file; with nothing pending it
// writes nothing.
func (z *gzipStage) Flush() error {
	if z.err != nil {
		return z.err
	}
	if z.pend.len() > 0 {
		if err := z.segment(nil, false); err != nil {
			return err
		}
	}
	return z.next.Flush()
}

// Close ends the member, also when nothing was written, and closes the file.
func (z *gzipStage) Close() error {
	var err error
	if z.err == nil {
		err = z.segment(nil, true)
	}
	z.pend.reset()
	return errors.Join(err, z.next.Close())
}

// segment compresses the pending bytes and then p, and writes the result
// (after the header, if not yet written; before the trailer, if final) to
// the file with one Write.
func (z *gzipStage) segment(p []byte, final bool) error {
	out := z.c.buffer()
	defer z.c.out.Put(out)
	if !z.header {
		out.Write(gzipHeader)
	}
	var err error
	switch {
	case z.pend.len() > 0 || len(p) > 0:
		err = z.compress(out, p, final)
	case final:
		out.Write(finalBlock)
	}
	if final {
		var trailer [8]byte
		binary.LittleEndian.PutUint32(trailer[:4], z.crc)
		binary.LittleEndian.PutUint32(trailer[4:], z.size)
		out.Write(trailer[:])
	}
	if err == nil {
		_, err = z.next.Write(out.Bytes())
	}
	if err != nil {
		z.err = err
		return err
	}
	z.header = true
	return nil
}

// compress deflates the pending bytes and p into out with a borrowed
// compressor and gives the pending chunks back.
func (z *gzipStage) compress(out *bytes.Buffer, p []byte, final bool) error {
	fw := z.c.getFlate()
	defer z.c.putFlate(fw)
	fw.ResetDict(out, z.dict)
	var err error
	for i := range z.pend.chunks {
		keepFirst(&err, z.feed(fw, z.pend.piece(i)))
	}
	keepFirst(&err, z.feed(fw, p))
	if final {
		keepFirst(&err, fw.Close())
	} else {
		keepFirst(&err, fw.Flush())
	}
	// Let go of out and of this session's history before pooling fw.
	fw.ResetDict(io.Discard, nil)
	z.pend.reset()
	return err
}

// feed compresses b and accounts for it in the trailer and the history.
func (z *gzipStage) feed(fw *flate.Writer, b []byte) error {
	_, err := fw.Write(b)
	z.crc = crc32.Update(z.crc, crc32.IEEETable, b)
	z.size += uint32(len(b))
	z.dict = appendWindow(z.dict, b)
	return err
}

// appendWindow appends b to the history d, keeping its last 32 KiB.
func appendWindow(d, b []byte) []byte {
	if d == nil {
		d = make([]byte, 0, window)
	}
	if len(b) >= window {
		return append(d[:0], b[len(b)-window:]...)
	}
	if over := len(d) + len(b) - window; over > 0 {
		d = d[:copy(d, d[over:])]
	}
	return append(d, b...)
}
