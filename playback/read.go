package playback

import (
	"bufio"
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/klauspost/compress/gzip"
)

// TruncatedError is returned by Reader.Next when a compressed recording
// stops before its end: the connection is still running (the file grows at
// each flush), or the daemon was killed. Everything up to Offset was read
// and returned; it is how far anyone can read the file.
type TruncatedError struct {
	Offset int64  // bytes of uncompressed content read
	Reason string // what is missing, e.g. "the gzip stream has no trailer"
	// Held is how many of the Offset bytes, at the end, were not returned:
	// the start of a stamp or ISO line that the cut ended.
	Held int
}

func (e *TruncatedError) Error() string {
	if e.Held > 0 {
		return fmt.Sprintf("after %d bytes, %s; its last %d bytes begin a stamp line cut short", e.Offset, e.Reason, e.Held)
	}
	return fmt.Sprintf("after %d bytes, %s", e.Offset, e.Reason)
}

// cutShort is what a decompressor's error becomes when its input just
// stopped: the Reader turns it into a *TruncatedError.
type cutShort struct{ reason string }

func (e *cutShort) Error() string { return e.reason }

// Reader reads the blocks of one recording from its uncompressed content.
// It is not safe for concurrent use; it does not close its source.
type Reader struct {
	src io.Reader
	s   *Splitter
	buf []byte
	err error // the source's end or error, once seen
}

// NewReader returns a Reader of the content r delivers (Open's, or any
// uncompressed recording). Data without a stamp line gets the direction
// unstamped (see NewSplitter).
func NewReader(r io.Reader, unstamped datafile.Direction) *Reader {
	return &Reader{src: r, s: NewSplitter(unstamped), buf: make([]byte, 64<<10)}
}

// Next returns the next block or piece. At the end it returns io.EOF; if the
// content stopped early, a *TruncatedError; if it could not be read (a
// corrupt compressed stream, an I/O error), that error, with the offset it
// happened at. In each case every block before was returned.
func (r *Reader) Next() (Block, error) {
	for {
		if b, ok := r.s.Next(); ok {
			return b, nil
		}
		if r.err != nil {
			return Block{}, r.err
		}
		n, err := r.src.Read(r.buf)
		r.s.Write(r.buf[:n])
		if err == nil {
			continue
		}
		var cut *cutShort
		switch {
		case err == io.EOF:
			r.s.End()
			r.err = io.EOF
		case errors.As(err, &cut):
			held := r.s.EndShort()
			r.err = &TruncatedError{Offset: r.s.off, Reason: cut.reason, Held: held}
		default:
			r.s.End()
			r.err = fmt.Errorf("after %d bytes: %w", r.s.off, err)
		}
	}
}

// Offset returns how many bytes of the uncompressed content the blocks
// returned so far, and those ready to be returned, span.
func (r *Reader) Offset() int64 { return r.s.off }

// Open opens the recording at path and returns its uncompressed content:
// a name ending in ".gz" is read as gzip (every member), ".bz2" as bzip2
// (every stream), anything else as it is. Closing it closes the file.
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return readCloser{Reader: decompress(f, datafile.CompressionOf(path), false), Closer: f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// decompress returns the content of r compressed with c. An input that
// just stops gives a *cutShort error after all the data it holds. With
// follow, a gzip file ends after its first member: ipprotd writes one, and
// what follows its trailer cannot belong to the recording.
func decompress(r io.Reader, c datafile.Compression, follow bool) io.Reader {
	switch c {
	case datafile.Gzip:
		return &gzipSource{r: r, multi: !follow}
	case datafile.Bzip2:
		return &bzip2Source{r: bzip2.NewReader(bufio.NewReader(r))}
	}
	return r
}

// gzipSource reads gzip members, making its reader at the first Read so
// that an empty file, one that is still being created, can be followed.
type gzipSource struct {
	r     io.Reader
	z     *gzip.Reader
	multi bool
	err   error
}

func (g *gzipSource) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.z == nil {
		z, err := gzip.NewReader(g.r)
		switch {
		case err == io.EOF:
			g.err = &cutShort{"the gzip file is empty: nothing was flushed into it yet"}
			return 0, g.err
		case err == io.ErrUnexpectedEOF:
			g.err = &cutShort{"the gzip header is cut short"}
			return 0, g.err
		case err != nil:
			g.err = fmt.Errorf("the gzip data is damaged: %w", err)
			return 0, g.err
		}
		z.Multistream(g.multi)
		g.z = z
	}
	n, err := g.z.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case err == io.ErrUnexpectedEOF:
		err = &cutShort{"the gzip stream has no end (no trailer): the connection is still running, or ipprotd was killed"}
	default:
		err = fmt.Errorf("the gzip data is damaged: %w", err)
	}
	g.err = err
	return n, err
}

// bzip2Source reads bzip2 streams.
type bzip2Source struct {
	r   io.Reader
	err error
}

func (b *bzip2Source) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case err == io.ErrUnexpectedEOF:
		err = &cutShort{"the last bzip2 stream is cut short: the connection is still running, or ipprotd was killed"}
	default:
		err = fmt.Errorf("the bzip2 data is damaged: %w", err)
	}
	b.err = err
	return n, err
}

// Follow reads the recording at path like a Reader and goes on reading it
// as it grows, like tail -f: at the end of the file it waits, looking for
// more every poll (if zero, 100 ms). A gzip file is decompressed as it
// grows, each sync flush bringing the data recorded until then. fn gets
// every block and piece: when the file stops growing, the data so far is
// cut off as a piece (Splitter.Cut), so that it is seen at once.
//
// Follow returns nil when the recording is complete — which only a gzip
// file tells, by its trailer — ctx.Err() when ctx is done, fn's error, or
// the error that made the file unreadable. A file that shrinks (it was
// replaced or truncated) is an error.
func Follow(ctx context.Context, path string, unstamped datafile.Direction, poll time.Duration, fn func(Block) error) error {
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := decompress(&tail{ctx: ctx, f: f, poll: poll}, datafile.CompressionOf(path), true)
	chunks := make(chan chunk)
	pumped := make(chan struct{})
	go pump(ctx, src, chunks, pumped)
	defer func() { cancel(); <-pumped }()

	s := NewSplitter(unstamped)
	deliver := func() error {
		for b, ok := s.Next(); ok; b, ok = s.Next() {
			if err := fn(b); err != nil {
				return err
			}
		}
		return nil
	}
	idle := time.NewTimer(poll / 2)
	defer idle.Stop()
	for {
		select {
		case c := <-chunks:
			s.Write(c.p)
			if c.err != nil {
				s.End()
				if err := deliver(); err != nil {
					return err
				}
				if c.err == io.EOF {
					return nil
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("after %d bytes: %w", s.off, c.err)
			}
			if err := deliver(); err != nil {
				return err
			}
			idle.Reset(poll / 2)
		case <-idle.C:
			s.Cut()
			if err := deliver(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// chunk is what pump read: bytes, or the error that ended the content.
type chunk struct {
	p   []byte
	err error
}

// pump reads src and sends what it read, until an error, which it sends
// last, or until ctx is done.
func pump(ctx context.Context, src io.Reader, out chan<- chunk, done chan<- struct{}) {
	defer close(done)
	for {
		p := make([]byte, 64<<10)
		n, err := src.Read(p)
		select {
		case out <- chunk{p: p[:n], err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// tail reads a growing file: at its end it waits for more instead of
// returning io.EOF, until ctx is done.
type tail struct {
	ctx  context.Context
	f    *os.File
	poll time.Duration
	off  int64
}

func (t *tail) Read(p []byte) (int, error) {
	for {
		n, err := t.f.Read(p)
		t.off += int64(n)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if fi, err := t.f.Stat(); err == nil && fi.Size() < t.off {
			return 0, fmt.Errorf("%s shrank from %d to %d bytes while it was followed", t.f.Name(), t.off, fi.Size())
		}
		wait := time.NewTimer(t.poll)
		select {
		case <-t.ctx.Done():
			wait.Stop()
			return 0, t.ctx.Err()
		case <-wait.C:
		}
	}
}
