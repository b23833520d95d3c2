// Package logfile is an append-only log file that logrotate can move: the
// connection log (-c) and the daemon's own log (--log-file). Each entry goes
// whole to the file with one write(2) on an O_APPEND descriptor, so the
// goroutines of a daemon and several daemons can share one file; Reopen,
// on SIGHUP, swaps in a new file at the same path.
//
//	l, err := logfile.Open("/var/log/conn_rec/connections", "connection log")
//	...
//	_, err = l.Write(entry) // one entry, one write(2)
//	err = l.Reopen()        // after logrotate moved the file; the old one stays in use on error
//	err = l.Close()
package logfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// openFlags never follow a planted symlink and always append, so several
// daemons can share one log. O_NONBLOCK makes the open of a FIFO planted
// at the path fail at once instead of waiting for a reader (on the signal
// goroutine, which then missed SIGTERM); a regular file ignores it.
const openFlags = os.O_WRONLY | os.O_APPEND | os.O_CREATE | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK

// File is an open log file. It is safe for concurrent use: Write, Reopen and
// Close may be called from any goroutine. It owns its file until Close;
// after Close, Write and Reopen return an error.
type File struct {
	path string
	what string // what the log is, for errors: "connection log"

	// mu is held shared for the whole write(2) of an entry and exclusively to
	// swap or close the file, so an entry goes whole to one file.
	mu   sync.RWMutex
	file *os.File // nil once closed
}

// Open opens the log at path for appending, creating it with mode 0640
// (less the umask) where it does not exist. It refuses a symlink and
// anything else that is not a regular file, without waiting. what
// names the log in errors ("connection log"); every error names the path
// too.
func Open(path, what string) (*File, error) {
	l := &File{path: path, what: what}
	file, err := l.open()
	if err != nil {
		return nil, err
	}
	l.file = file
	return l, nil
}

// open opens the path, which must be a regular file (a FIFO or a device
// at it is refused), or nothing.
func (l *File) open() (*os.File, error) {
	file, err := os.OpenFile(l.path, openFlags, 0o640)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.what, err) // *PathError names the path
	}
	fi, err := file.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%v)", l.path, fi.Mode().Type())
	}
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("%s: %w", l.what, err)
	}
	return file, nil
}

// Path returns the path the log was opened at.
func (l *File) Path() string { return l.path }

// Write appends entry to the log with exactly one write(2) on the O_APPEND
// file, so entries of goroutines and of other processes sharing the file
// never interleave. A short write is an error; the rest is not written in a
// second call, which could land after another writer's entry. entry is not
// kept.
func (l *File) Write(entry []byte) (int, error) {
	if len(entry) == 0 {
		return 0, nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.file == nil {
		return 0, fmt.Errorf("write %s %s: %w", l.what, l.path, os.ErrClosed)
	}
	n, err := writeOnce(l.file, entry)
	if err != nil {
		return n, fmt.Errorf("write %s %s: %w", l.what, l.path, err)
	}
	if n != len(entry) {
		return n, fmt.Errorf("write %s %s: wrote %d of %d bytes: %w", l.what, l.path, n, len(entry), io.ErrShortWrite)
	}
	return n, nil
}

// writeOnce issues a single write(2) of p on file. (*os.File).Write would
// loop over a short write, which could interleave with another writer.
func writeOnce(file *os.File, p []byte) (int, error) {
	conn, err := file.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		werr error
	)
	err = conn.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Write(int(fd), p)
			if werr != unix.EINTR { // EINTR: nothing was written, so try again
				return true
			}
		}
	})
	return max(n, 0), errors.Join(err, werr)
}

// Reopen opens the log's path anew and swaps it in, then closes the previous
// file: after logrotate renamed the file, later entries go to a new file at
// the path. An entry being written during the swap goes whole to one file or
// the other. If the path cannot be opened, the previous file stays in use and
// the error is returned.
func (l *File) Reopen() error {
	file, err := l.open()
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.file
	if old != nil {
		l.file = file
	}
	l.mu.Unlock()
	if old == nil {
		return errors.Join(fmt.Errorf("reopen %s %s: %w", l.what, l.path, os.ErrClosed), file.Close())
	}
	if err := old.Close(); err != nil {
		return fmt.Errorf("rotated %s: %w", l.what, err)
	}
	return nil
}

// Close closes the log's file after writes in progress end. Later calls of
// Write, Reopen and Close return an error wrapping os.ErrClosed.
func (l *File) Close() error {
	l.mu.Lock()
	file := l.file
	l.file = nil
	l.mu.Unlock()
	if file == nil {
		return fmt.Errorf("close %s %s: %w", l.what, l.path, os.ErrClosed)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("%s: %w", l.what, err)
	}
	return nil
}
