package recorder

import (
	"encoding/binary"
	"hash/crc32"
)

// gzipStage compresses a file into one gzip member (RFC 1952). Pending data
// is compressed in segments, each ending with a deflate sync flush, so the
// file holds a complete prefix of the stream after every segment; Close
// adds the final block and the trailer. A segment may refer back to the
// last 32 KiB of the previous ones, as one deflate stream does, so segments
// can be compressed at the same time (see segments) and still make one
// stream.
type gzipStage struct {
	segmenter
	dict   []byte // the last (up to) 32 KiB handed to a segment: the next one's history
	crc    uint32
	size   uint32 // modulo 2³², as the trailer has it
	header bool   // a segment carries the member header
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
	z := &gzipStage{}
	z.segmenter = newSegmenter(next, c, gzipSegment, z.newJob, c.deflate)
	return z
}

// Close ends the member, also when nothing was written, and closes the file.
func (z *gzipStage) Close() error {
	err := z.close(z.trailer)
	z.c.putDict(z.dict)
	z.dict = nil
	return err
}

// trailer is the member's end: the header if no segment carried it, the
// final block, the checksum and the size.
func (z *gzipStage) trailer() []byte {
	b := make([]byte, 0, len(gzipHeader)+len(finalBlock)+8)
	if !z.header {
		b = append(b, gzipHeader...)
	}
	b = append(b, finalBlock...)
	b = binary.LittleEndian.AppendUint32(b, z.crc)
	return binary.LittleEndian.AppendUint32(b, z.size)
}

// newJob makes a segment of the pending bytes. The trailer's checksum and
// the history of the next segment are taken here, in order.
func (z *gzipStage) newJob(in pending) *job {
	j := &job{in: in, dict: z.c.copyDict(z.dict), first: !z.header}
	z.header = true
	if z.dict == nil {
		z.dict = z.c.getDict()
	}
	for i := range in.chunks {
		b := in.piece(i)
		z.crc = crc32.Update(z.crc, crc32.IEEETable, b)
		z.size += uint32(len(b))
		z.dict = appendWindow(z.dict, b)
	}
	return j
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
