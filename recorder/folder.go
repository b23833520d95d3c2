package recorder

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// folder is the data files' folder, held open so that files are created
// in the folder the daemon started with, never through a symlink planted
// at its path later: a file is created with openat(2) relative to the
// folder's descriptor, and before each the path is checked (one
// fstatat(2)) to still name that folder.
//
// The folder's parent is opened once, at New, as configured (symlinks in
// the configured path are the operator's and are followed then). After
// that:
//   - the folder removed (a clean-up job): it is made again in the parent,
//     mode 0750;
//   - the folder renamed and a new one made at its path: the new one is
//     used;
//   - a symlink (or anything but a directory) at its path: creating data
//     files fails, loudly, until the path names a folder again. Recording
//     into wherever the symlink points would let anyone who can write the
//     parent choose where recordings go.
//
// Files are created one at a time. The kernel does so anyway: an open
// with O_CREAT holds the folder's lock (its inode's i_rwsem) exclusively
// while the file system makes the file, so creates in one folder never
// overlap. Where making a file is slow (a journal-less ext4 after files
// were deleted scans the inodes freed in the last minutes, under that
// lock), every session that waits in the kernel holds a thread, spins on
// the lock while its holder runs, and holds one of the runtime's
// processors until the monitor takes it back; waiting here holds nothing
// but a parked goroutine (docs/design.md, "Creating data files on a slow
// disk").
type folder struct {
	path string // as configured, for errors
	// real is the parent's path with the symlinks of the configured one
	// resolved at New, for remake: no symlink planted since is followed.
	real   string
	name   string // its base name in the parent
	parent int    // O_PATH descriptor of the parent

	creating chan struct{} // holds a token while a file is being created

	// mu guards fd, dev, ino and parent: read-locked while a create uses
	// fd, so that a reopen (write-locked) never closes it under openat.
	mu  sync.RWMutex
	fd  int // O_PATH descriptor of the folder; -1 when it must be (re)opened
	dev uint64
	ino uint64
}

// openFolder creates dir (with its missing parents, 0750) if needed and
// opens it.
func openFolder(dir string) (*folder, error) {
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return nil, fmt.Errorf("create data file folder: %w", err)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("data file folder %s: not writable: %w", dir, err)
	}
	parent, err := unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("data file folder %s: %w", dir, &os.PathError{Op: "open", Path: filepath.Dir(dir), Err: err})
	}
	real, err := filepath.EvalSymlinks(filepath.Dir(dir))
	if err != nil {
		unix.Close(parent)
		return nil, fmt.Errorf("data file folder %s: %w", dir, err)
	}
	f := &folder{path: dir, real: real, name: filepath.Base(dir), parent: parent, fd: -1, creating: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reopen(false); err != nil {
		unix.Close(parent)
		return nil, err
	}
	return f, nil
}

// create creates the file name in the folder, failing with an error
// satisfying os.ErrExist if anything, even a dangling symlink, has that
// name. It waits while another create runs. The descriptor is wrapped
// with os.NewFile: os.OpenFile would try to add the regular file to the
// runtime's poller, which costs a failed epoll_ctl and three fcntl calls
// per connection.
func (f *folder) create(name string) (*os.File, error) {
	f.creating <- struct{}{}
	defer func() { <-f.creating }()
	path := filepath.Join(f.path, name)
	for {
		f.mu.RLock()
		dirfd, ok := f.check()
		if !ok {
			f.mu.RUnlock()
			if err := f.refresh(); err != nil {
				return nil, err
			}
			continue
		}
		if testHookCreate != nil {
			testHookCreate()
		}
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
		f.mu.RUnlock()
		switch err {
		case nil:
			return os.NewFile(uintptr(fd), path), nil
		case unix.EINTR:
			continue
		default:
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// testHookCreate, if set, runs in create between the check of the
// folder's path and the openat through its descriptor.
var testHookCreate func()

// check returns the folder's descriptor if its path still names it; f.mu
// is held (for reading at least).
func (f *folder) check() (int, bool) {
	var st unix.Stat_t
	err := unix.Fstatat(f.parent, f.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return f.fd, err == nil && f.fd >= 0 && st.Dev == f.dev && st.Ino == f.ino
}

// refresh makes or reopens the folder where its path no longer names the
// descriptor held.
func (f *folder) refresh() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parent < 0 {
		return fmt.Errorf("data file folder %s: closed", f.path)
	}
	if _, ok := f.check(); ok {
		return nil // another create did it
	}
	var st unix.Stat_t
	err := unix.Fstatat(f.parent, f.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		// Removed since (a clean-up job): make it again.
		return f.reopen(true)
	case err != nil:
		return fmt.Errorf("data file folder %s: %w", f.path, err)
	default:
		return f.reopen(false)
	}
}

// reopen opens the folder at its path anew, without following a symlink,
// making it first if mkdir; f.mu is held.
func (f *folder) reopen(mkdir bool) error {
	if mkdir {
		err := unix.Mkdirat(f.parent, f.name, folderMode)
		if errors.Is(err, unix.ENOENT) {
			// The parent went too: make the configured path again, as at
			// start, and hold its parent anew.
			err = f.remake()
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create data file folder: %w", &os.PathError{Op: "mkdir", Path: f.path, Err: err})
		}
	}
	fd, err := unix.Openat(f.parent, f.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("data file folder %s is no longer a folder but a symlink or a file: recordings refused until it is one again", f.path)
		}
		return fmt.Errorf("data file folder: %w", &os.PathError{Op: "open", Path: f.path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("data file folder %s: %w", f.path, err)
	}
	if f.fd >= 0 {
		unix.Close(f.fd)
	}
	f.fd, f.dev, f.ino = fd, st.Dev, st.Ino
	return nil
}

// remake makes the folder's path with its missing parents, as
// openFolder does, and opens the parent again; f.mu is held.
func (f *folder) remake() error {
	if err := os.MkdirAll(f.real, folderMode); err != nil {
		return err
	}
	// Every component as it was resolved at New: a symlink planted since
	// (the parent removed and a link made in its place) is refused.
	parent, err := unix.Openat2(unix.AT_FDCWD, f.real, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("the parent of data file folder %s is no longer a folder but a symlink or a file: recordings refused until it is one again", f.path)
		}
		return err
	}
	if err := unix.Mkdirat(parent, f.name, folderMode); err != nil && !errors.Is(err, unix.EEXIST) {
		unix.Close(parent)
		return err
	}
	unix.Close(f.parent)
	f.parent = parent
	return nil
}

// close gives back the descriptors. A create after it fails: its numbers
// are -1, never a number since reused for another folder.
func (f *folder) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parent < 0 {
		return nil
	}
	err := unix.Close(f.parent)
	f.parent = -1
	if f.fd >= 0 {
		err = errors.Join(err, unix.Close(f.fd))
		f.fd = -1
	}
	return err
}
