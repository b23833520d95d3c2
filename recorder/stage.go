package recorder

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// A stage is one link of a recorder's chain: printable filter → framer →
// compressor → file. Write takes bytes for the file and never modifies p;
// the compressors copy what they keep, the file stage keeps nothing, and
// the framer alone may hold on to p until the end of the block it belongs
// to (see framer), which Recorder.Record's caller's block outlives. Flush
// pushes everything written so far into the file. Close completes the
// stage (unless it failed before), releases what it holds and closes the
// rest of the chain; it does not report again an error that Write or Flush
// returned. All calls come from one goroutine at a time (the recorder's
// lock).
type stage interface {
	io.Writer
	Flush() error
	Close() error
}

// fileStage is the end of every chain: the data file itself, and the only
// place bytes reach it. It counts, and where asked hashes, exactly the
// bytes the file took, so that its digest is the SHA-256 of the file as it
// lies on disk (sha256sum agrees), also for a file whose last write failed
// half-way.
type fileStage struct {
	f    *os.File
	sum  hash.Hash // SHA-256 of the bytes written; nil: not hashed
	size int64
}

func newFileStage(f *os.File, hashed bool) *fileStage {
	s := &fileStage{f: f}
	if hashed {
		s.sum = sha256.New()
	}
	return s
}

func (s *fileStage) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if n > 0 {
		s.size += int64(n)
		if s.sum != nil {
			s.sum.Write(p[:n])
		}
	}
	return n, bare(err)
}

// digest returns the size and SHA-256 of what was written so far; sum is
// nil where the stage does not hash.
func (s *fileStage) digest() (size int64, sum []byte) {
	if s.sum != nil {
		sum = s.sum.Sum(make([]byte, 0, sha256.Size))
	}
	return s.size, sum
}

// Flush does nothing: the file stage holds no bytes.
func (s *fileStage) Flush() error { return nil }

func (s *fileStage) Close() error { return bare(s.f.Close()) }

// bare strips the path from an *fs.PathError; the recorder's errors name
// the file once.
func bare(err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// printable is the -s filter of one direction: it passes 0x09, 0x0A, 0x0D
// and 0x20–0x7E and turns every run of other bytes into one blank. A run
// may span blocks: its state lives as long as the filter. It holds no
// bytes, so it has nothing to flush or close.
type printable struct {
	next  io.Writer
	inRun bool // the last byte seen was not printable; its blank is written
}

var (
	blank = []byte{' '}
	keep  = printableBytes()
)

func printableBytes() (t [256]bool) {
	t['\t'], t['\n'], t['\r'] = true, true, true
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = true
	}
	return t
}

// Write passes the printable runs of p and a blank for each new run of
// other bytes on to the next stage.
func (f *printable) Write(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		j := i
		for j < len(p) && keep[p[j]] {
			j++
		}
		if j > i {
			if _, err := f.next.Write(p[i:j]); err != nil {
				return i, err
			}
			f.inRun = false
		}
		i = j
		for j < len(p) && !keep[p[j]] {
			j++
		}
		if j > i && !f.inRun {
			if _, err := f.next.Write(blank); err != nil {
				return i, err
			}
			f.inRun = true
		}
		i = j
	}
	return len(p), nil
}

// framer frames blocks: begin writes the block's stamp lines, Write its
// data (as often as the filter needs), end completes it. When the next
// stage is the file, the framer gathers the whole block and hands it over
// in one Write, so the block reaches the file with one write(2); otherwise
// it passes every piece straight on. Gathering keeps the block's first
// piece by reference (direct) rather than copying it, and so keeps p until
// end or abort: a block that arrives whole, the usual case, is never
// copied.
type framer struct {
	next   stage
	gather bool       // next is the file stage
	pool   *sync.Pool // of *[]byte, scratch for gathered blocks
	stamps bool       // -M
	every  time.Duration

	lastISO time.Time
	isoDone bool // an ISO line was written; lastISO is its time

	head   [96]byte // the stamp lines of the current block
	buf    *[]byte  // gathering scratch, taken from pool for one block
	direct []byte   // the block's only piece so far, not yet copied
}

// begin starts a block of direction dir read at t.
func (f *framer) begin(dir datafile.Direction, t time.Time) error {
	h := f.head[:0]
	if f.stamps {
		h = append(h, dir.Marker()...)
		h = strconv.AppendInt(h, t.UnixMicro(), 10)
		h = append(h, '\n')
	}
	if dir == datafile.In && f.every > 0 && (!f.isoDone || t.Sub(f.lastISO) >= f.every) {
		h = append(h, datafile.MarkerISO...)
		h = t.AppendFormat(h, datafile.ISOLayout)
		h = append(h, '\n')
		f.lastISO, f.isoDone = t, true
	}
	if len(h) == 0 {
		return nil
	}
	_, err := f.Write(h)
	return err
}

// Write adds p to the current block.
func (f *framer) Write(p []byte) (int, error) {
	if !f.gather {
		return f.next.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.buf == nil && f.direct == nil && &p[0] != &f.head[0] {
		// Likely the whole block: remember it and spare the copy.
		f.direct = p
		return len(p), nil
	}
	if f.buf == nil {
		f.buf = f.pool.Get().(*[]byte)
	}
	b := append((*f.buf)[:len(*f.buf)], f.direct...)
	f.direct = nil
	*f.buf = append(b, p...)
	return len(p), nil
}

// end completes the block: a gathered block is written to the file.
func (f *framer) end() error {
	if !f.gather {
		return nil
	}
	var err error
	switch {
	case f.direct != nil:
		_, err = f.next.Write(f.direct)
	case f.buf != nil && len(*f.buf) > 0:
		_, err = f.next.Write(*f.buf)
	}
	f.abort()
	return err
}

// abort drops what was gathered of the current block.
func (f *framer) abort() {
	f.direct = nil
	if f.buf != nil {
		*f.buf = (*f.buf)[:0]
		f.pool.Put(f.buf)
		f.buf = nil
	}
}

func (f *framer) Flush() error { return f.next.Flush() }

func (f *framer) Close() error {
	f.abort()
	return f.next.Close()
}
