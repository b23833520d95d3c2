package recorder

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// TestFolderNotClosedUnderCreate: while one create uses the folder's
// descriptor in openat, a reopen by another (the folder was renamed and
// made anew) must not close it: the openat would run on a closed
// descriptor number (EBADF) or on whatever reused the number, another
// folder (the file lands there) or a socket (ENOTDIR). Found by review.
func TestFolderNotClosedUnderCreate(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	f, err := openFolder(data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the operator: rename the folder away and make a new one
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			old := filepath.Join(base, fmt.Sprintf("old%d", i))
			os.Rename(data, old)
			os.Mkdir(data, 0o750)
		}
	}()
	// Something else opening and closing descriptors, so that a closed
	// number is soon reused (in the daemon: sockets, data files).
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if fd, err := syscall.Open(base, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0); err == nil {
				syscall.Close(fd)
			}
		}
	}()
	var mu sync.Mutex
	bad := map[string]int{}
	elsewhere := 0
	var cw sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for w := range 4 {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				name := fmt.Sprintf("f-%d-%d", w, i)
				file, err := f.create(name)
				if err == nil {
					file.Close()
					// Where did it land? In base itself means the descriptor
					// number had been reused by the other goroutine's open
					// of base.
					if _, err := os.Lstat(filepath.Join(base, name)); err == nil {
						mu.Lock()
						elsewhere++
						mu.Unlock()
					}
					continue
				}
				var errno syscall.Errno
				if errors.As(err, &errno) && (errno == syscall.EBADF || errno == syscall.ENOTDIR) {
					mu.Lock()
					bad[errno.Error()]++
					mu.Unlock()
				}
			}
		}()
	}
	cw.Wait()
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 || elsewhere > 0 {
		t.Errorf("openat on a descriptor a concurrent reopen closed: errors %v, %d files created outside the data folder (in its parent)", bad, elsewhere)
	}
}

// TestRemakeRefusesPlantedParentSymlink: the data folder's parent is
// removed after start and a symlink planted at its path: making the folder
// again must not follow it (recordings once landed where it pointed).
func TestRemakeRefusesPlantedParentSymlink(t *testing.T) {
	base := t.TempDir()
	parent := filepath.Join(base, "rec")
	data := filepath.Join(parent, "data")
	evil := filepath.Join(base, "evil")
	o, err := New(Config{Prefix: filepath.Join(data, "prot"), Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(evil, 0o755)
	if err := os.Symlink(evil, parent); err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(Conn{N: 1, Start: t0})
	if err != nil {
		t.Logf("Open refused: %v", err)
		return
	}
	r.Close()
	if entries, _ := os.ReadDir(filepath.Join(evil, "data")); len(entries) > 0 {
		t.Errorf("a recording was created through a symlink planted at the folder's parent: %s", filepath.Join(evil, "data", entries[0].Name()))
	}
}
