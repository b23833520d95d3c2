package audit

import (
	"bytes"
	"io"
)

// tail is what the end of a journal file says about the chain it holds.
type tail struct {
	last []byte // the last line that is an entry (Parse takes it), without its newline; nil if none
	seq  uint64 // that entry's seq
	// torn is the number (from 1) of the first line after last that is
	// not an entry: a line torn by a crash, or garbage; 0 if none. A last
	// line that lacks only its newline but is an entry is not torn.
	torn int64
	// noEOL: the file does not end with a newline, so one must be written
	// before the next line.
	noEOL bool
}

// maxLine bounds the lines readTail reads: a longer one is not an entry
// (ipprotd's lines are a few hundred bytes; a path is at most 4 KiB).
const maxLine = 1 << 20

// readTail reads the end of the journal file r of size bytes, from the
// end back to the last line that is an entry. Only where lines after it
// are not entries does it read the whole file before them, to count the
// lines.
func readTail(r io.ReaderAt, size int64) (tail, error) {
	var t tail
	if size == 0 {
		return t, nil
	}
	var b [1]byte
	if _, err := r.ReadAt(b[:], size-1); err != nil {
		return t, err
	}
	t.noEOL = b[0] != '\n'
	firstBad := int64(-1) // where the earliest line after the last entry starts
	// end is where the line looked at ends: its newline, or the end of a
	// file that lacks the last newline; -1: no line is left. A last line
	// that lacks only its newline is a whole entry all the same.
	end := size - 1
	if t.noEOL {
		end = size
	}
	for end >= 0 {
		nl, err := lastNewline(r, end)
		if err != nil {
			return t, err
		}
		start := nl + 1
		if n := end - start; n <= maxLine {
			line := make([]byte, n)
			if _, err := readFull(r, line, start); err != nil {
				return t, err
			}
			if e, err := Parse(line); err == nil {
				t.last, t.seq = line, e.Seq
				break
			}
		}
		firstBad, end = start, nl
	}
	if firstBad >= 0 {
		n, err := countLines(r, firstBad)
		if err != nil {
			return t, err
		}
		t.torn = n + 1
	}
	return t, nil
}

// chunk is how much of the file lastNewline and countLines read at once.
const chunk = 64 << 10

// lastNewline returns the offset of the last newline before offset
// before, or -1 if there is none.
func lastNewline(r io.ReaderAt, before int64) (int64, error) {
	buf := make([]byte, chunk)
	for before > 0 {
		lo := max(0, before-chunk)
		p := buf[:before-lo]
		if _, err := readFull(r, p, lo); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(p, '\n'); i >= 0 {
			return lo + int64(i), nil
		}
		before = lo
	}
	return -1, nil
}

// countLines returns the number of newlines in the first n bytes of r.
func countLines(r io.ReaderAt, n int64) (int64, error) {
	buf := make([]byte, chunk)
	var lines int64
	for off := int64(0); off < n; {
		p := buf[:min(chunk, n-off)]
		if _, err := readFull(r, p, off); err != nil {
			return 0, err
		}
		lines += int64(bytes.Count(p, []byte{'\n'}))
		off += int64(len(p))
	}
	return lines, nil
}

// readFull reads len(p) bytes at off; io.EOF with all of them is no error.
func readFull(r io.ReaderAt, p []byte, off int64) (int, error) {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
