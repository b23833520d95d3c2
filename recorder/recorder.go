// Package recorder turns the blocks of a proxied connection into its data
// file: blocks go in with their direction, a file in the original daemon's
// format comes out (docs/format.md describes it byte by byte).
//
// Usage:
//
//	o, err := recorder.New(recorder.Config{Prefix: "/var/log/conn_rec/prot", Record: [2]bool{datafile.Out: true}})
//	...
//	r, err := o.Open(recorder.Conn{N: 1, Start: start, Client: ip})
//	err = r.Record(datafile.In, block) // for every block, before it is forwarded
//	...
//	err = r.Close() // once both directions have ended
//	size, sum := r.Digest() // with Config.Hash: the file as it lies on disk, as sha256sum reads it
//
// Each file is written by one chain of stages: printable filter (-s, one per
// direction) → framer (block stamps -M, ISO lines -t) → compressor (-z, -j)
// → file. Uncompressed files are written through: a block is in the file,
// with one write(2), when Record returns. Compressed files are flushed to the
// file at least every Config.FlushInterval while data flows and completed by
// Close.
//
// Every error is sticky and fails closed: once a write failed, every later
// Record returns the same error.
package recorder

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// Compression is how data files are compressed while they are written.
type Compression uint8

const (
	None  datafile.Compression = iota // plain file
	Gzip                              // -z: one gzip member, sync-flushed; name ends in .gz
	Bzip2                             // -j: bzip2 streams, one per flush; name ends in .bz2
)

// Config configures an Opener. Its zero value records nothing but is not
// valid: Prefix must be set.
type Config struct {
	// Prefix is the path prefix of the data files (-f); main makes it
	// absolute. The folder it names is created (0750) if missing.
	Prefix string

	// Record says, indexed by Direction, whose data is written to the file.
	// The original's default is only Out; -l is only In, -L both.
	Record [2]bool

	// Printable keeps only printable bytes of the recorded data (-s).
	Printable bool

	// BlockStamps precedes every block, of both directions, by a line with
	// its direction's marker and the time in microseconds (-M).
	BlockStamps bool

	// StampInterval is the time after which the next block from the client
	// is preceded by an ISO time line (-t). If zero, no ISO lines.
	StampInterval time.Duration

	// Compression compresses the files (-z, -j). If zero, None.
	Compression datafile.Compression

	// GzipLevel is deflate's level for Gzip, 1 (fastest) to 9 (smallest).
	// If zero, DefaultGzipLevel.
	GzipLevel int

	// FlushInterval is the longest time recorded data of a compressed file
	// stays in memory while data flows. If zero, one second.
	FlushInterval time.Duration

	// Hash computes the SHA-256 of every data file while it is written,
	// for Recorder.Digest (the connection log's %h, the hooks'
	// IPPROT_SHA256, the audit journal). It costs one CPU about 0.56 ns
	// per byte that reaches the file (SHA-256 runs at 1.8 GB/s here with
	// the CPU's SHA extensions): for plain files about as much as writing
	// them, for compressed files little. If false, Digest has no sum.
	Hash bool

	// Now is the clock of block stamps and ISO lines. If nil, time.Now.
	// Flush timers always run on the real clock.
	Now func() time.Time
}

// Conn is what Open is told about the connection it records.
type Conn struct {
	N      uint64     // the connection's number in this process, from 1
	Start  time.Time  // when it started, in the location its name uses
	Client netip.Addr // the connection establisher's address
	// Fail is told of a recording error found outside Record (a timed flush
	// of a compressed file), from the timer's goroutine, at most once. It
	// may be nil.
	Fail func(error)
}

const (
	maxNameTries = 1000 // taken names skipped before Open gives up
	folderMode   = 0o750
	fileMode     = 0o640
)

// Opener opens the data files of one Config. It is safe for concurrent use.
// It holds the data folder open (see folder); Close gives it back. Its
// recorders share its compressors — one per CPU, made when first needed
// and kept (about 1 MiB each for gzip, 7 MiB for bzip2) — and its pooled
// buffers.
type Opener struct {
	cfg    Config
	folder *folder
	now    func() time.Time
	wants  [2]bool
	flush  time.Duration
	codecs *codecs
}

// New checks cfg and creates the folder of cfg.Prefix if it is missing. It
// returns an error if the folder cannot be created or is not a writable
// directory.
func New(cfg Config) (*Opener, error) {
	if cfg.Prefix == "" {
		return nil, errors.New("empty data file prefix")
	}
	if cfg.Compression > datafile.Bzip2 {
		return nil, fmt.Errorf("unknown compression %d", cfg.Compression)
	}
	if cfg.StampInterval < 0 {
		return nil, fmt.Errorf("negative stamp interval %v", cfg.StampInterval)
	}
	if cfg.FlushInterval < 0 {
		return nil, fmt.Errorf("negative flush interval %v", cfg.FlushInterval)
	}
	if cfg.GzipLevel == 0 {
		cfg.GzipLevel = DefaultGzipLevel
	}
	if cfg.GzipLevel < 1 || cfg.GzipLevel > 9 {
		return nil, fmt.Errorf("gzip level %d is outside 1-9", cfg.GzipLevel)
	}
	o := &Opener{cfg: cfg, now: cfg.Now, flush: cfg.FlushInterval}
	if o.now == nil {
		o.now = time.Now
	}
	if o.flush == 0 {
		o.flush = time.Second
	}
	for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
		o.wants[d] = cfg.Record[d] || cfg.BlockStamps || (d == datafile.In && cfg.StampInterval > 0)
	}
	var err error
	if o.folder, err = openFolder(prefixDir(cfg.Prefix)); err != nil {
		return nil, err
	}
	o.codecs = newCodecs(cfg.GzipLevel)
	return o, nil
}

// prefixDir is the folder the files of prefix are created in; a prefix
// ending in a slash names the folder itself.
func prefixDir(prefix string) string {
	return filepath.Dir(prefix + "_")
}

// Close gives back the data folder's descriptors. Recorders already open
// are not affected; Open must not be called after.
func (o *Opener) Close() error { return o.folder.close() }

// Open creates the data file of session s and returns its recorder, which
// the caller must Close. A name already taken by anything (a file, a
// symlink, dangling or not) is left alone and the next <n> is tried.
func (o *Opener) Open(s Conn) (*Recorder, error) {
	f, path, err := o.create(s)
	if err != nil {
		return nil, err
	}
	file := newFileStage(f, o.cfg.Hash)
	r := &Recorder{
		path:  path,
		fail:  s.Fail,
		now:   o.now,
		wants: o.wants,
		file:  file,
	}
	var next stage = file
	switch o.cfg.Compression {
	case datafile.Gzip:
		next = newGzipStage(file, o.codecs)
		r.flushEvery = o.flush
	case datafile.Bzip2:
		next = newBzip2Stage(file, o.codecs)
		r.flushEvery = o.flush
	}
	r.frame = framer{
		next:   next,
		gather: next == stage(file),
		pool:   &o.codecs.scratch,
		stamps: o.cfg.BlockStamps,
		every:  o.cfg.StampInterval,
	}
	for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
		switch {
		case !o.cfg.Record[d]:
		case o.cfg.Printable:
			r.filter[d].next = &r.frame
			r.data[d] = &r.filter[d]
		default:
			r.data[d] = &r.frame
		}
	}
	return r, nil
}

// create makes the file with the first free name from s.N on.
func (o *Opener) create(s Conn) (*os.File, string, error) {
	for i := range uint64(maxNameTries) {
		path := datafile.FileName(o.cfg.Prefix, s.Start, s.N+i, s.Client, o.cfg.Compression)
		f, err := o.folder.create(filepath.Base(path))
		switch {
		case err == nil:
			return f, path, nil
		case errors.Is(err, os.ErrExist):
			continue
		default:
			return nil, "", fmt.Errorf("create data file: %w", err)
		}
	}
	first := datafile.FileName(o.cfg.Prefix, s.Start, s.N, s.Client, o.cfg.Compression)
	return nil, "", fmt.Errorf("create data file %s: the next %d names are all taken", first, maxNameTries)
}

// Recorder writes the data file of one session. Record may be called from
// the goroutines of both directions at once; Close once both have ended.
// A Recorder owns its file and, while data is pending, pooled buffers;
// Close releases them all.
type Recorder struct {
	path       string
	fail       func(error)
	now        func() time.Time
	wants      [2]bool
	flushEvery time.Duration // zero: nothing to flush (plain file)

	mu       sync.Mutex
	file     *fileStage   // the chain's end: counts and hashes what the file took
	data     [2]io.Writer // where a direction's data goes: its filter, the framer, or nil
	filter   [2]printable
	frame    framer
	err      error // the first error; every later Record returns it
	closed   bool
	closeErr error
	timer    *time.Timer
	armed    bool           // timer set and its flush not yet run
	timerRun sync.WaitGroup // an armed timer whose function may still run

	afterFlush func() // tests: called with mu held after each timed flush
}

// errClosed is returned by Record after Close.
var errClosed = errors.New("recorder closed")

// Path returns the data file's path.
func (r *Recorder) Path() string { return r.path }

// Digest returns the number of bytes written to the data file and, with
// Config.Hash, their SHA-256 (else sum is nil). After Close it describes
// the whole file as it lies on disk — for a compressed file the compressed
// bytes, trailer included, so that sha256sum gives the same sum — also
// when the recording failed: it covers exactly the bytes the file took.
// It may be called at any time.
func (r *Recorder) Digest() (size int64, sum []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.file.digest()
}

// Wants reports whether Record writes anything for blocks of dir. If it
// does not, the caller may skip Record for dir.
func (r *Recorder) Wants(dir datafile.Direction) bool {
	return dir <= datafile.Out && r.wants[dir]
}

// Record writes one block read in direction dir. It neither keeps nor
// modifies p, and may be called for both directions at once; their blocks
// never mix. For a direction Wants denies, or an empty p, it does nothing.
// When Record returns nil, the block is in the file (uncompressed) or in the
// compressor (compressed). Otherwise the recording is broken and every later
// call returns the same error, which names the file.
func (r *Recorder) Record(dir datafile.Direction, p []byte) error {
	if dir > datafile.Out {
		return fmt.Errorf("record %s: unknown direction %d", r.path, dir)
	}
	if !r.wants[dir] || len(p) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if r.closed {
		return fmt.Errorf("record %s: %w", r.path, errClosed)
	}
	err := r.frame.begin(dir, r.now())
	if w := r.data[dir]; w != nil && err == nil {
		_, err = w.Write(p)
	}
	if err == nil {
		err = r.frame.end()
	} else {
		r.frame.abort()
	}
	if err != nil {
		r.err = fmt.Errorf("record %s: %w", r.path, err)
		return r.err
	}
	if r.flushEvery > 0 && !r.armed {
		r.arm()
	}
	return nil
}

// arm starts the flush timer; r.mu is held.
func (r *Recorder) arm() {
	r.armed = true
	r.timerRun.Add(1)
	if r.timer == nil {
		r.timer = time.AfterFunc(r.flushEvery, r.timedFlush)
		return
	}
	r.timer.Reset(r.flushEvery)
}

// timedFlush runs on the flush timer: it pushes everything recorded so far
// through the compressor into the file. A failure is told to Conn.Fail
// once the timer counts as done, so that Fail may close the recorder.
func (r *Recorder) timedFlush() {
	r.mu.Lock()
	r.armed = false
	err := r.flushLocked()
	if err == nil && r.afterFlush != nil {
		r.afterFlush()
	}
	r.mu.Unlock()
	r.timerRun.Done()
	if err != nil && r.fail != nil {
		r.fail(err)
	}
}

// flushLocked flushes the chain; r.mu is held. It returns the error it
// made sticky, if any.
func (r *Recorder) flushLocked() error {
	if r.closed || r.err != nil {
		return nil
	}
	if err := r.frame.Flush(); err != nil {
		r.err = fmt.Errorf("record %s: flush: %w", r.path, err)
		return r.err
	}
	return nil
}

// Close completes the file (flushes and ends the compressor) and closes
// it, also after an error. It returns the recording's first error, if any,
// joined with what failed while closing. Calling it again returns the same.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.timerRun.Wait()
		return r.closeErr
	}
	r.closed = true
	if r.armed && r.timer.Stop() {
		r.armed = false
		r.timerRun.Done()
	}
	var errs []error
	if r.err != nil {
		errs = append(errs, r.err)
	}
	if err := r.frame.Close(); err != nil {
		errs = append(errs, fmt.Errorf("complete %s: %w", r.path, err))
	}
	r.closeErr = errors.Join(errs...)
	r.mu.Unlock()
	// A timer that fired before Stop finds the recorder closed; wait for it
	// so that nothing of this recorder runs after Close returns.
	r.timerRun.Wait()
	return r.closeErr
}
