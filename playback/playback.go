// Package playback reads ipprotd's data files, the inverse of package
// recorder: a recording goes in — plain, .gz or .bz2, complete, still being
// written or cut short by a crash — and its blocks come out, each with its
// direction, its time and its data. docs/format.md describes the format,
// docs/reading.md the command built on this package, `ipprotd cat`. The
// markers are datafile's constants; this package never spells them out.
//
//	f, err := playback.Open(path) // decompresses by the name's extension
//	if err != nil { ... }
//	defer f.Close()
//	r := playback.NewReader(f, datafile.Out) // data without a stamp line is "out"
//	for {
//		b, err := r.Next()
//		if err == io.EOF {
//			break // the whole recording was read
//		}
//		var cut *playback.TruncatedError
//		if errors.As(err, &cut) {
//			break // a crash or a running connection: everything before was read
//		}
//		if err != nil { ... } // corrupt or unreadable: everything before was read
//		use(b.Dir, b.Time, b.Data)
//	}
//
// Follow does the same for a recording that is still growing, like tail -f.
// On top of blocks, Printer writes them as text or hex dumps, Pcapng as a
// capture for Wireshark, and SQL decodes the statements of a PostgreSQL
// session.
//
// The format neither escapes data nor stores block lengths: a line is
// recognised as a block stamp only as the exact pattern marker, 1 to 20
// digits (a value that fits in int64), newline; as an ISO line only as
// datafile.MarkerISO, a valid time in datafile.ISOLayout, newline. Data that
// contains such a line is indistinguishable from a real one.
package playback

import (
	"bytes"
	"strconv"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// Block is one block of a recording, or one piece of it.
//
// A block starts at a block stamp line (-M); without stamps, at the start of
// the file or at an ISO line (-t) that does not belong to a stamped block.
// Its data is everything up to the next such line. Long data (more than
// MaxPiece bytes) and, when following a growing file, data that arrived so
// far come as several pieces: Part 0 carries the stamp and ISO line, the
// following pieces (Part 1, 2, …) continue its data.
type Block struct {
	// Dir is the stamp's direction; for data without a stamp line, the
	// direction the Reader was told to assume.
	Dir datafile.Direction
	// Stamped says that Time is the block's own stamp (-M).
	Stamped bool
	// Time is the block's stamp, or else the time of the ISO line at its
	// start, or else of the last stamp or ISO line before it; zero if the
	// recording held none so far. Stamps are in the local time zone.
	Time time.Time
	// ISO is the text of the ISO line of the block, without marker and
	// newline ("2013-12-04 16:18:42+01:00"), or "" if it has none.
	ISO string
	// Data is the recorded data. A block whose direction was not recorded
	// has none. The slice belongs to the receiver.
	Data []byte
	// Offset is where the block (its stamp line, or for Part > 0 its
	// piece's first data byte) starts in the uncompressed content.
	Offset int64
	// Part is 0 for a block's start and counts the pieces that continue it.
	Part int
}

// MaxPiece is the most data one Block carries; longer data is split into
// pieces. ipprotd's blocks are at most -b bytes (default 300000), so only
// recordings without stamps or with a large -b are split.
const MaxPiece = 1 << 20

// lineKind is what a line of the format starting with '#' is.
type lineKind uint8

const (
	notALine lineKind = iota
	stampIn
	stampOut
	isoLine
)

const (
	markerLen = len(datafile.MarkerIn)
	maxDigits = 20
	// isoShape is datafile.ISOLayout as character classes: 0 a digit, s a
	// sign, anything else itself.
	isoShape = "0000-00-00 00:00:00s00:00"
)

// maxLine is the longest stamp or ISO line, newline included.
const maxLine = markerLen + max(maxDigits, len(isoShape)) + 1

// match reports whether b starts with a block stamp or ISO line: its kind,
// its length and its time. n is -1 when b is too short to tell (a longer b
// might hold one), 0 when it does not.
func match(b []byte) (k lineKind, n int, t time.Time) {
	if len(b) < markerLen {
		for _, m := range [...]string{datafile.MarkerIn, datafile.MarkerOut, datafile.MarkerISO} {
			if len(b) > 0 && m[:len(b)] == string(b) {
				return notALine, -1, t
			}
		}
		return notALine, 0, t
	}
	switch string(b[:markerLen]) {
	case datafile.MarkerIn:
		k = stampIn
	case datafile.MarkerOut:
		k = stampOut
	case datafile.MarkerISO:
		return matchISO(b[markerLen:])
	default:
		return notALine, 0, t
	}
	rest := b[markerLen:]
	d := 0
	for d < len(rest) && d <= maxDigits && '0' <= rest[d] && rest[d] <= '9' {
		d++
	}
	switch {
	case d > maxDigits:
		return notALine, 0, t
	case d == len(rest):
		return notALine, -1, t
	case d == 0 || rest[d] != '\n':
		return notALine, 0, t
	}
	us, err := strconv.ParseInt(string(rest[:d]), 10, 64)
	if err != nil {
		return notALine, 0, t
	}
	return k, markerLen + d + 1, time.UnixMicro(us)
}

// matchISO is match for what follows datafile.MarkerISO.
func matchISO(rest []byte) (lineKind, int, time.Time) {
	for i := range len(isoShape) {
		if i == len(rest) {
			return notALine, -1, time.Time{}
		}
		c := rest[i]
		var fits bool
		switch isoShape[i] {
		case '0':
			fits = '0' <= c && c <= '9'
		case 's':
			fits = c == '+' || c == '-'
		default:
			fits = c == isoShape[i]
		}
		if !fits {
			return notALine, 0, time.Time{}
		}
	}
	switch {
	case len(rest) == len(isoShape):
		return notALine, -1, time.Time{}
	case rest[len(isoShape)] != '\n':
		return notALine, 0, time.Time{}
	}
	t, err := time.Parse(datafile.ISOLayout, string(rest[:len(isoShape)]))
	if err != nil {
		return notALine, 0, time.Time{}
	}
	return isoLine, markerLen + len(isoShape) + 1, t
}

// Splitter splits the uncompressed content of a recording into blocks as
// it arrives: bytes go in with Write, blocks come out of Next. It is what
// Reader and Follow are built on; use it directly to feed a recording from
// somewhere else. It is not safe for concurrent use and holds no resources.
type Splitter struct {
	unstamped datafile.Direction

	buf []byte // content not yet looked at, or a possible line start held back
	off int64  // offset of buf[0] in the content

	open     bool  // cur is a block being gathered
	cur      Block // its header; its data so far is data
	data     []byte
	dataOff  int64 // offset of data[0]
	lastTime time.Time
	ended    bool

	out []Block // blocks and pieces ready for Next
}

// NewSplitter returns a Splitter that gives data without a stamp line the
// direction unstamped. Which direction that is cannot be known from a file
// without -M: the original's default records only datafile.Out.
func NewSplitter(unstamped datafile.Direction) *Splitter {
	return &Splitter{unstamped: unstamped}
}

// Write adds the next bytes of the content. It never fails and keeps no
// reference to p.
func (s *Splitter) Write(p []byte) (int, error) {
	if s.ended {
		return 0, nil
	}
	s.buf = append(s.buf, p...)
	s.split(false)
	return len(p), nil
}

// End says that the content is complete: what was held back because it
// might start a stamp or ISO line is data, and the last block is complete.
func (s *Splitter) End() {
	if s.ended {
		return
	}
	s.split(true)
	s.close()
	s.ended = true
}

// EndShort says that the content stopped early (a recording cut short)
// and returns how many bytes at its end it holds back: bytes that begin a
// stamp or ISO line cut in the middle are not data, and are not returned
// as data (a partial "#848367" once came out as the data of a block
// without a stamp). The last block is complete.
func (s *Splitter) EndShort() (held int) {
	if s.ended {
		return 0
	}
	s.split(false)
	held = len(s.buf)
	s.off += int64(held)
	s.buf = s.buf[:0]
	s.close()
	s.ended = true
	return held
}

// Cut makes the data gathered so far available from Next as a piece, as if
// the block ended here for now; more data continues it as the next Part.
// A block without data so far waits: an ISO line may still belong to it.
// Follow calls Cut when the file stops growing, so that what is there is
// seen at once.
func (s *Splitter) Cut() {
	if s.open && len(s.data) > 0 {
		s.piece()
	}
}

// Next returns the next complete block or piece; ok is false when there is
// none yet.
func (s *Splitter) Next() (b Block, ok bool) {
	if len(s.out) == 0 {
		return Block{}, false
	}
	b = s.out[0]
	s.out[0] = Block{}
	s.out = s.out[1:]
	return b, true
}

// split consumes s.buf as far as it can be told apart; with final, all of it.
func (s *Splitter) split(final bool) {
	i := 0
	for i < len(s.buf) {
		j := bytes.IndexByte(s.buf[i:], '#')
		if j < 0 {
			s.add(s.buf[i:], s.off+int64(i))
			i = len(s.buf)
			break
		}
		j += i
		k, n, t := match(s.buf[j:])
		if n < 0 && !final {
			s.add(s.buf[i:j], s.off+int64(i))
			i = j
			break
		}
		if n <= 0 {
			s.add(s.buf[i:j+1], s.off+int64(i))
			i = j + 1
			continue
		}
		s.add(s.buf[i:j], s.off+int64(i))
		s.line(k, s.buf[j:j+n], t, s.off+int64(j))
		i = j + n
	}
	s.off += int64(i)
	s.buf = s.buf[:copy(s.buf, s.buf[i:])]
}

// add appends data at offset off to the current block, starting a block
// without stamp if none is open.
func (s *Splitter) add(p []byte, off int64) {
	for len(p) > 0 {
		if !s.open {
			s.begin(Block{Dir: s.unstamped, Time: s.lastTime, Offset: off})
		}
		if len(s.data) == 0 {
			s.dataOff = off
		}
		n := min(len(p), MaxPiece-len(s.data))
		s.data = append(s.data, p[:n]...)
		p, off = p[n:], off+int64(n)
		if len(s.data) == MaxPiece {
			s.piece()
		}
	}
}

// line handles a stamp or ISO line at offset off.
func (s *Splitter) line(k lineKind, text []byte, t time.Time, off int64) {
	if k == isoLine {
		iso := string(text[markerLen : len(text)-1])
		s.lastTime = t
		if s.open && s.cur.Stamped && s.cur.Dir == datafile.In && s.cur.ISO == "" && s.cur.Part == 0 && len(s.data) == 0 {
			s.cur.ISO = iso
			return
		}
		s.close()
		s.begin(Block{Dir: s.unstamped, Time: t, ISO: iso, Offset: off})
		return
	}
	s.close()
	dir := datafile.In
	if k == stampOut {
		dir = datafile.Out
	}
	t = t.Local()
	s.lastTime = t
	s.begin(Block{Dir: dir, Stamped: true, Time: t, Offset: off})
}

func (s *Splitter) begin(b Block) {
	s.cur, s.open, s.data = b, true, nil
}

// close ends the open block, if any.
func (s *Splitter) close() {
	if !s.open {
		return
	}
	if len(s.data) > 0 || s.cur.Part == 0 {
		s.piece()
	}
	s.open = false
}

// piece returns the open block's data so far; the block stays open.
func (s *Splitter) piece() {
	b := s.cur
	b.Data = s.data
	if b.Part > 0 {
		b.Offset = s.dataOff
	}
	s.out = append(s.out, b)
	s.cur.Part++
	s.cur.ISO = ""
	s.data = nil
}
