package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openLog opens the log at path and closes it when the test ends.
func openLog(t *testing.T, path string) *File {
	t.Helper()
	l, err := Open(path, "connection log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestOpenAppendsWithMode0640 checks that Open creates a file 0640 and that
// it appends to an existing file without truncating it.
func TestOpenAppendsWithMode0640(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()

	created := filepath.Join(dir, "new.log")
	l := openLog(t, created)
	if _, err := l.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(created)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != 0o640 {
		t.Errorf("got mode %v; want %v", got, os.FileMode(0o640))
	}

	existing := filepath.Join(dir, "existing.log")
	if err := os.WriteFile(existing, []byte("before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, existing)
	for _, e := range []string{"after\n", "", "last\n"} {
		if _, err := l.Write([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := readFile(t, existing), "before\nafter\nlast\n"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestOpenErrors checks that Open refuses what it must and that each error
// names the path.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(victim, dangling); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "dir")
	if err := os.Mkdir(subdir, 0o750); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		path  string
		errno syscall.Errno
	}{
		{"symlink to a file", link, syscall.ELOOP},
		{"dangling symlink", dangling, syscall.ELOOP},
		{"missing folder", filepath.Join(dir, "missing", "conn.log"), syscall.ENOENT},
		{"folder is a file", filepath.Join(target, "conn.log"), syscall.ENOTDIR},
		{"path is a folder", subdir, syscall.EISDIR},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Open(tc.path, "connection log")
			if err == nil {
				l.Close()
				t.Fatalf("got no error; want %v", tc.errno)
			}
			want := fmt.Sprintf("connection log: open %s: %v", tc.path, tc.errno)
			if got := err.Error(); got != want {
				t.Errorf("got %q; want %q", got, want)
			}
			if !errors.Is(err, tc.errno) {
				t.Errorf("got error %v; want one wrapping %v", err, tc.errno)
			}
		})
	}
	if got := readFile(t, target); got != "keep\n" {
		t.Errorf("symlink target: got %q; want %q", got, "keep\n")
	}
	if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dangling symlink's target: got %v; want it not created", err)
	}
}

// TestOpenReadOnlyFolder checks that a folder without write permission is an
// error. root bypasses permissions, so the test skips as root; the case of a
// folder that cannot hold the file is also covered by "folder is a file".
func TestOpenReadOnlyFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which may write into a read-only folder")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "conn.log")
	l, err := Open(path, "connection log")
	if err == nil {
		l.Close()
		t.Fatal("got no error; want permission denied")
	}
	if want := fmt.Sprintf("connection log: open %s: permission denied", path); err.Error() != want {
		t.Errorf("got %q; want %q", err, want)
	}
}

// TestClosed checks that Write, Reopen and Close of a closed Log fail with
// os.ErrClosed.
func TestClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conn.log")
	l, err := Open(path, "connection log")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Write":  func() error { _, err := l.Write([]byte("late\n")); return err },
		"Reopen": l.Reopen,
		"Close":  l.Close,
	} {
		if err := call(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s: got %v; want an error wrapping os.ErrClosed", name, err)
		}
	}
	if got := readFile(t, path); got != "" {
		t.Errorf("got %q in the log; want nothing", got)
	}
}

// TestReopenAfterRename rotates the log as logrotate does: entries written
// before Reopen are in the renamed file, entries after it in a new file.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conn.log")
	rotated := path + ".1"
	l := openLog(t, path)
	write := func(e string) {
		t.Helper()
		if _, err := l.Write([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	write("1\n")
	write("2\n")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	write("3 between rename and reopen\n")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	write("4\n")
	write("5\n")
	if got, want := readFile(t, rotated), "1\n2\n3 between rename and reopen\n"; got != want {
		t.Errorf("rotated file: got %q; want %q", got, want)
	}
	if got, want := readFile(t, path), "4\n5\n"; got != want {
		t.Errorf("new file: got %q; want %q", got, want)
	}
}

// TestReopenFailureKeepsFile makes the path unopenable and checks that Reopen
// returns the error and the Log keeps writing to the file it had.
func TestReopenFailureKeepsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conn.log")
	rotated := path + ".1"
	l := openLog(t, path)
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o750); err != nil {
		t.Fatal(err)
	}
	err := l.Reopen()
	if want := fmt.Sprintf("connection log: open %s: is a directory", path); err == nil || err.Error() != want {
		t.Fatalf("got %v; want %q", err, want)
	}
	if _, err := l.Write([]byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, rotated), "still here\n"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// entryFor returns the entry number i of goroutine g of writer: from a few
// bytes to over 4 KiB, so entries cross page boundaries of the file.
func entryFor(writer string, g, i int) string {
	pad := strings.Repeat(string(rune('a'+(g+i)%26)), (i*397+g*101)%5000)
	return fmt.Sprintf("%s g=%d i=%d %s\n", writer, g, i, pad)
}

// writeEntries writes n entries of goroutine g of writer to l, counting each
// written entry in written where it is not nil.
func writeEntries(l *File, writer string, g, n int, written *atomic.Int64) error {
	for i := range n {
		if _, err := l.Write([]byte(entryFor(writer, g, i))); err != nil {
			return err
		}
		if written != nil {
			written.Add(1)
		}
	}
	return nil
}

// checkEntries checks that the files hold, each whole on its own line,
// exactly once every entry that perGoroutine calls of writeEntries wrote for
// each writer of goroutines (its name → its number of goroutines), and
// nothing else. It returns the number of entries in each file.
func checkEntries(t *testing.T, goroutines map[string]int, perGoroutine int, files ...string) []int {
	t.Helper()
	seen := make(map[string]int)
	counts := make([]int, len(files))
	for fi, path := range files {
		data := readFile(t, path)
		if data != "" && !strings.HasSuffix(data, "\n") {
			t.Errorf("%s: got a last line without newline", path)
		}
		for line := range strings.Lines(data) {
			var (
				name string
				g, i int
			)
			if _, err := fmt.Sscanf(line, "%s g=%d i=%d", &name, &g, &i); err != nil || line != entryFor(name, g, i) {
				t.Errorf("%s: got torn or foreign line %.60q", path, line)
				continue
			}
			seen[line]++
			counts[fi]++
		}
	}
	want := 0
	for name, n := range goroutines {
		for g := range n {
			for i := range perGoroutine {
				if n := seen[entryFor(name, g, i)]; n != 1 {
					t.Errorf("entry %s g=%d i=%d: got %d times; want 1", name, g, i, n)
				}
				want++
			}
		}
	}
	if got := len(seen); got != want {
		t.Errorf("got %d distinct entries; want %d", got, want)
	}
	return counts
}

// TestConcurrentWriters writes from 8 goroutines through one Log and from 2
// through a second Log on the same path, as another daemon would.
func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conn.log")
	daemons := map[string]*File{"A": openLog(t, path), "B": openLog(t, path)}
	goroutines := map[string]int{"A": 8, "B": 2}
	const perGoroutine = 500
	errs := make(chan error, 10)
	for name, l := range daemons {
		for g := range goroutines[name] {
			go func() { errs <- writeEntries(l, name, g, perGoroutine, nil) }()
		}
	}
	for range 10 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	counts := checkEntries(t, goroutines, perGoroutine, path)
	if want := 10 * perGoroutine; counts[0] != want {
		t.Errorf("got %d lines; want %d", counts[0], want)
	}
}

// TestReopenWhileWriting rotates the log ten times while 4 goroutines write:
// every entry is in exactly one of the files, whole.
func TestReopenWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conn.log")
	l := openLog(t, path)
	const (
		goroutines   = 4
		perGoroutine = 500
		rotations    = 10
		every        = goroutines * perGoroutine / (rotations + 2)
	)
	var written atomic.Int64
	done := make(chan struct{})
	errs := make(chan error, goroutines)
	for g := range goroutines {
		go func() { errs <- writeEntries(l, "W", g, perGoroutine, &written) }()
	}
	rotated := make(chan error, 1)
	go func() { rotated <- rotate(l, path, rotations, every, &written, done) }()
	for range goroutines {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(done)
	if err := <-rotated; err != nil {
		t.Fatal(err)
	}
	files := []string{path}
	for k := 1; k <= rotations; k++ {
		files = append(files, fmt.Sprintf("%s.%d", path, k))
	}
	counts := checkEntries(t, map[string]int{"W": goroutines}, perGoroutine, files...)
	// The first rename follows `every` finished writes, all to the first file.
	if counts[1] < every {
		t.Errorf("first rotated file: got %d entries; want at least %d", counts[1], every)
	}
	t.Logf("entries per file (current, .1 … .%d): %v", rotations, counts)
}

// rotate renames the log at path to path.k and reopens it, for k from 1 to
// n, each time once another `every` entries are written or done is closed.
func rotate(l *File, path string, n int, every int64, written *atomic.Int64, done <-chan struct{}) error {
	for k := 1; k <= n; k++ {
		for written.Load() < int64(k)*every && !isClosed(done) {
			runtime.Gosched()
		}
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, k)); err != nil {
			return err
		}
		if err := l.Reopen(); err != nil {
			return err
		}
	}
	return nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestOpenRefusesFIFO: a FIFO at the path is refused at once, at Open and
// at Reopen; opening it once waited for a reader, on the goroutine that
// must see the next signal.
func TestOpenRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "conn.log")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Open(fifo, "connection log")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") && !errors.Is(err, unix.ENXIO) {
			t.Errorf("Open of a FIFO: %v; want a refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open of a FIFO waits for a reader")
	}

	path := filepath.Join(dir, "real.log")
	l := openLog(t, path)
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() { done <- l.Reopen() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Reopen onto a FIFO: nil error; want a refusal")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reopen onto a FIFO waits for a reader")
	}
	// With a reader, the FIFO opens, and is still refused.
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := l.Reopen(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Reopen onto a FIFO with a reader: %v; want not a regular file", err)
	}
	if _, err := l.Write([]byte("still here\n")); err != nil {
		t.Errorf("Write after refused reopens: %v", err)
	}
}
