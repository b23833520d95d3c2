// Package audit is the tamper-evident journal of --audit-log: the facts of
// each ended connection go in, one JSON line per connection comes out
// (SPEC §9), chained to the line before by its SHA-256 and, with a key,
// signed with Ed25519. Append returns once the line is on disk. Parse
// reads a line back, for ipprotd verify; docs/integrity.md says what a
// journal proves and what it does not.
//
//	j, err := audit.Open(audit.Config{Path: "/var/log/conn_rec/audit.log", Key: key})
//	...
//	err = j.Append(facts) // the line is written and fsync'd
//	err = j.Reopen()      // SIGHUP, after logrotate moved the file: the chain goes on in the new one
//	err = j.Close()
//
// One goroutine writes the journal. The entries of sessions that end while
// it writes and syncs wait, and it then writes them all with one write(2)
// and makes them durable with one fdatasync(2) (group commit), assigning
// seq and prev in the order they are written: sessions that end together
// share the cost of a sync, and the chain has one total order.
//
// A journal that cannot be written is retried, with a back-off, until it
// can: Append waits meanwhile (the hook of its connection must not run
// before its entry is durable), and Writable reports the failure, for the
// daemon to refuse new connections. Abandon, at the end of a stop, makes
// waiting entries fail instead.
package audit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipprot/ipprot/proxy"
)

// Config configures a Journal. Path must be set.
type Config struct {
	// Path is the journal file. It is created (0640) if missing, never
	// followed if it is a symlink, and locked (flock) against a second
	// writer while open.
	Path string

	// Key signs every line. If nil, lines carry no sig.
	Key ed25519.PrivateKey

	// Logger receives the failures to write the journal and its recovery.
	// If nil, slog.Default() is used.
	Logger *slog.Logger

	// Backlog is the number of entries that may wait while the journal
	// cannot be written; beyond it Append fails at once. If zero, 10000.
	Backlog int

	// write and sync are the journal's system calls; tests replace them.
	write func(f *os.File, p []byte) (int, error)
	sync  func(f *os.File) error
}

// Retry delays while the journal cannot be written; tests lower them.
var (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
	// logEvery is how often a journal that stays unwritable is logged
	// again with the same error.
	logEvery = 30 * time.Second
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit journal closed")

// ErrLocked is returned by Open and Reopen for a journal that another
// process (another daemon) has open.
var ErrLocked = errors.New("another process writes this journal")

// Journal is an open journal. Append, Writable, Reopen, Abandon and Close
// are safe for concurrent use. It owns its file and one goroutine until
// Close.
type Journal struct {
	path    string
	key     ed25519.PrivateKey
	log     *slog.Logger
	backlog int
	write   func(*os.File, []byte) (int, error)
	sync    func(*os.File) error

	failing atomic.Pointer[error] // the last write error while the journal cannot be written

	mu      sync.Mutex
	queue   []*pending    // entries waiting for the writer
	wake    chan struct{} // (cap 1) the queue became non-empty, or the journal closes
	closing bool

	stop     chan struct{} // closed by Abandon or Close: retry no more
	stopOnce sync.Once
	stopped  chan struct{} // closed when the writer returns

	// The writer's state, held by the writer while it writes a group and
	// by Reopen to swap the file.
	fmu       sync.Mutex
	file      *os.File
	seq       uint64 // of the last line written
	prev      string // hash of the last line written
	recovered int64  // the torn line the next entry follows; 0: none
	noEOL     bool   // the file ends without a newline: write one first
	dirty     bool   // a write or sync failed: read the file's end again first
	buf       []byte
}

// pending is an entry waiting to be written.
type pending struct {
	e      Entry
	hash   string // of its line as last written, for a retry to find it
	inFile bool   // a retry found its line in the file
	done   chan error
}

// Open opens the journal at cfg.Path and reads its end to continue its
// chain: the next entry has the seq after the last complete line's and
// chains to it. Lines after that one that are not entries — a line torn
// by a crash — are left as they are; a newline ends a torn last line,
// and the next entry records the first of them as "recovered". (A last
// entry that lacks only its newline is whole: it gets its newline and
// the chain goes on from it.) An empty or new file begins a chain at
// seq 1.
func Open(cfg Config) (*Journal, error) {
	f, err := openFile(cfg.Path)
	if err != nil {
		return nil, err
	}
	if err := lock(f, cfg.Path); err != nil {
		f.Close()
		return nil, err
	}
	t, err := tailOf(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", cfg.Path, err)
	}
	j := &Journal{
		path:    cfg.Path,
		key:     cfg.Key,
		log:     cfg.Logger,
		backlog: cfg.Backlog,
		write:   cfg.write,
		sync:    cfg.sync,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		file:    f,
		prev:    ZeroHash,
	}
	if j.log == nil {
		j.log = slog.Default()
	}
	if j.backlog == 0 {
		j.backlog = 10000
	}
	if j.write == nil {
		j.write = (*os.File).Write
	}
	if j.sync == nil {
		j.sync = fdatasync
	}
	if t.last != nil {
		j.seq, j.prev = t.seq, LineHash(t.last)
	}
	j.recovered, j.noEOL = t.torn, t.noEOL
	go j.run()
	return j, nil
}

// openFile opens path for appending and reading, creating it if missing;
// a symlink is refused. The folder is synced, so that a new file's name
// survives a crash as its lines do.
func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lock takes f's flock, so that no second daemon chains into the same
// file.
func lock(f *os.File, path string) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%s: %w", path, ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

func tailOf(f *os.File) (tail, error) {
	fi, err := f.Stat()
	if err != nil {
		return tail{}, err
	}
	return readTail(f, fi.Size())
}

// Path returns the journal's path.
func (j *Journal) Path() string { return j.path }

// Append writes the entry of the ended connection f and returns once it is
// in the file and the file is synced. While the journal cannot be written
// it waits, retrying, unless Config.Backlog entries wait already or
// Abandon was called: then it returns the write error. After Close it
// returns ErrClosed. f.SHA256 must be set where f.File is.
func (j *Journal) Append(f *proxy.Facts) error {
	e, err := entryOf(f)
	if err != nil {
		return err
	}
	p := &pending{e: e, done: make(chan error, 1)}
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		return ErrClosed
	}
	if ep := j.failing.Load(); ep != nil && len(j.queue) >= j.backlog {
		n := len(j.queue)
		j.mu.Unlock()
		return fmt.Errorf("%d entries wait already: %w", n, *ep)
	}
	j.queue = append(j.queue, p)
	if len(j.queue) == 1 {
		j.signal()
	}
	j.mu.Unlock()
	return <-p.done
}

// entryOf makes the entry of f; seq, prev and recovered come when it is
// written.
func entryOf(f *proxy.Facts) (Entry, error) {
	e := Entry{
		Start:    f.Start,
		End:      f.End,
		Client:   f.Client,
		Dest:     f.Dest,
		Outcome:  f.Outcome.String(),
		BytesIn:  f.BytesIn,
		BytesOut: f.BytesOut,
	}
	if f.File != "" {
		file, err := filepath.Abs(f.File)
		if err != nil {
			return Entry{}, err
		}
		if f.SHA256 == "" {
			return Entry{}, fmt.Errorf("audit entry of %s: the data file was not hashed", file)
		}
		e.File, e.Size, e.SHA256 = file, f.Size, f.SHA256
	}
	return e, nil
}

// signal wakes the writer; j.mu is held or the journal is closing.
func (j *Journal) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// Writable returns nil while the journal can be written, else the error
// of the last attempt. It is cheap: the daemon asks it for every new
// connection (proxy.Config.Admit).
func (j *Journal) Writable() error {
	if ep := j.failing.Load(); ep != nil {
		return *ep
	}
	return nil
}

// run is the writer: it writes the waiting entries as one group, again
// and again, until Close.
func (j *Journal) run() {
	defer close(j.stopped)
	for {
		j.mu.Lock()
		for len(j.queue) == 0 && !j.closing {
			j.mu.Unlock()
			<-j.wake
			j.mu.Lock()
		}
		group := j.queue
		j.queue = nil
		j.mu.Unlock()
		if len(group) == 0 {
			return // closing, and nothing waits
		}
		err := j.commit(group)
		for _, p := range group {
			p.done <- err
		}
	}
}

// commit writes group until it is durable, retrying with a back-off while
// the journal cannot be written, unless Abandon or Close was called.
func (j *Journal) commit(group []*pending) error {
	delay := retryMin
	var failedAt, loggedAt time.Time
	var logged string
	for {
		err := j.writeGroup(group)
		if err == nil {
			if ep := j.failing.Swap(nil); ep != nil {
				attrs := []any{"path", j.path, "entries", len(group)}
				if !failedAt.IsZero() {
					attrs = append(attrs, "failed_for", time.Since(failedAt).Round(time.Millisecond).String())
				}
				j.log.Warn("audit journal written again; new connections are admitted", attrs...)
			}
			return nil
		}
		err = fmt.Errorf("audit journal %s: %w", j.path, err)
		if failedAt.IsZero() {
			failedAt = time.Now()
		}
		j.failing.Store(&err)
		if err.Error() != logged || time.Since(loggedAt) >= logEvery {
			logged, loggedAt = err.Error(), time.Now()
			j.log.Error("audit journal cannot be written; new connections are refused and ending ones wait until it can", "err", err, "entries", len(group), "retry_in", delay.String())
		}
		select {
		case <-j.stop:
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, retryMax)
	}
}

// writeGroup gives the entries of group their seq and prev, writes their
// lines with one write and syncs the file.
func (j *Journal) writeGroup(group []*pending) error {
	j.fmu.Lock()
	defer j.fmu.Unlock()
	if j.dirty {
		if err := j.resync(group); err != nil {
			return err
		}
	}
	buf := j.buf[:0]
	if j.noEOL {
		buf = append(buf, '\n')
	}
	seq, prev, recovered := j.seq, j.prev, j.recovered
	for _, p := range group {
		if p.inFile {
			continue
		}
		seq++
		p.e.Seq, p.e.Prev, p.e.Recovered = seq, prev, recovered
		recovered = 0
		start := len(buf)
		buf = p.e.AppendLine(buf, j.key)
		prev = LineHash(buf[start:])
		p.hash = prev
		buf = append(buf, '\n')
	}
	if cap(buf) <= 1<<20 {
		j.buf = buf
	}
	if len(buf) > 0 {
		if _, err := j.write(j.file, buf); err != nil {
			j.dirty = true
			return err
		}
	}
	if err := j.sync(j.file); err != nil {
		j.dirty = true
		return fmt.Errorf("sync: %w", err)
	}
	j.seq, j.prev, j.recovered, j.noEOL = seq, prev, 0, false
	return nil
}

// resync reads the file's end again after a failed write or sync, which
// may have left some of group's lines in the file, whole or in part. The
// lines found whole are kept (their entries count as written once the
// file is synced); a part of a line is left as a torn line, which the
// next entry records as recovered. An entry at the end that is not
// this daemon's changes nothing: the chain goes on from the last line
// the daemon knows it wrote, and verify reports the stranger. j.fmu is
// held.
func (j *Journal) resync(group []*pending) error {
	t, err := tailOf(j.file)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if t.last != nil {
		h := LineHash(t.last)
		for i, p := range group {
			if p.hash != "" && p.hash == h && !p.inFile {
				for _, q := range group[:i+1] {
					q.inFile = true
				}
				j.seq, j.prev = p.e.Seq, h
				break
			}
		}
	}
	j.recovered, j.noEOL, j.dirty = t.torn, t.noEOL, false
	return nil
}

// Reopen opens the journal's path anew (after logrotate moved the file)
// and goes on writing there; the chain continues: the first line of the
// new file chains to the last of the old. If the path still names the
// same file, nothing changes. If the new file cannot be opened or locked,
// the old one stays in use and the error is returned.
func (j *Journal) Reopen() error {
	f, err := openFile(j.path)
	if err != nil {
		return err
	}
	j.fmu.Lock()
	same, err := sameFile(f, j.file)
	j.fmu.Unlock()
	if err != nil || same {
		f.Close()
		return err
	}
	if err := lock(f, j.path); err != nil {
		f.Close()
		return err
	}
	t, err := tailOf(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", j.path, err)
	}
	j.fmu.Lock()
	old := j.file
	j.file = f
	if t.last != nil && LineHash(t.last) != j.prev {
		j.log.Warn("the reopened audit journal ends with an entry this daemon did not write last; the chain goes on from its own last entry", "path", j.path, "its_seq", t.seq, "own_seq", j.seq)
	}
	if t.torn != 0 {
		j.recovered = t.torn
	}
	j.noEOL = t.noEOL
	j.fmu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("rotated audit journal: %w", err)
	}
	return nil
}

func sameFile(a, b *os.File) (bool, error) {
	ai, err := a.Stat()
	if err != nil {
		return false, err
	}
	bi, err := b.Stat()
	if err != nil {
		return false, err
	}
	return os.SameFile(ai, bi), nil
}

// Abandon stops retrying: entries waiting for a journal that cannot be
// written fail, and later ones are tried once. The daemon calls it when a
// stop must end.
func (j *Journal) Abandon() {
	j.stopOnce.Do(func() { close(j.stop) })
}

// Close writes the entries still waiting (once, without retrying), ends
// the writer and closes the file. Later calls of Append return ErrClosed.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		<-j.stopped
		return ErrClosed
	}
	j.closing = true
	j.signal()
	j.mu.Unlock()
	j.Abandon()
	<-j.stopped
	j.fmu.Lock()
	defer j.fmu.Unlock()
	return j.file.Close()
}
