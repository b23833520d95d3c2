package recorder

// bzip2Stage compresses a file into bzip2 streams: every segment, and every
// flush, ends the stream it writes, and the next data starts a new one, so
// the file is a sequence of complete streams that bzip2 -dc reads as one.
// Streams are independent, so segments are compressed at the same time
// (see segments). A flush with nothing pending writes nothing; a file
// without data gets one empty stream, so that it is a valid bzip2 file.
type bzip2Stage struct {
	segmenter
	wrote bool // a stream was handed to a segment
}

// emptyBzip2 is the stream of no data, as bzip2(1) writes it.
var emptyBzip2 = []byte{'B', 'Z', 'h', '9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, 0, 0, 0, 0}

func newBzip2Stage(next stage, c *codecs) *bzip2Stage {
	z := &bzip2Stage{}
	z.segmenter = newSegmenter(next, c, bzip2Segment, z.newJob, c.bzip2Stream)
	return z
}

// Close writes what is pending, or an empty stream into a file that has
// none, and closes the file.
func (z *bzip2Stage) Close() error {
	return z.close(func() []byte {
		if z.wrote {
			return nil
		}
		return emptyBzip2
	})
}

func (z *bzip2Stage) newJob(in pending) *job {
	z.wrote = true
	return &job{in: in}
}
