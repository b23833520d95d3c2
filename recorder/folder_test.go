package recorder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// TestReopenWaitsForCreate: a reopen of the folder (renamed and made
// anew) that comes while a create holds the folder's descriptor waits
// until the openat is done, and the file is made through the descriptor
// the create checked. A reopen that did not wait would close it under the
// openat: EBADF, or a number reused by another folder.
func TestReopenWaitsForCreate(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	f, err := openFolder(data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	reopened := make(chan error, 1)
	t.Cleanup(func() { testHookCreate = nil })
	testHookCreate = func() {
		testHookCreate = nil
		if err := os.Rename(data, filepath.Join(base, "old")); err != nil {
			t.Error(err)
		}
		if err := os.Mkdir(data, 0o750); err != nil {
			t.Error(err)
		}
		go func() { reopened <- f.refresh() }()
		// Time for a reopen that does not wait to close the descriptor.
		time.Sleep(100 * time.Millisecond)
	}
	file, err := f.create("x")
	if err != nil {
		t.Fatalf("create while the folder was reopened: %v", err)
	}
	file.Close()
	if err := <-reopened; err != nil {
		t.Errorf("reopen: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(base, "old", "x")); err != nil {
		t.Errorf("the file is not in the folder the create checked: %v", err)
	}
	// The next create uses the folder now at the path.
	file, err = f.create("y")
	if err != nil {
		t.Fatal(err)
	}
	file.Close()
	if _, err := os.Lstat(filepath.Join(data, "y")); err != nil {
		t.Errorf("after the reopen: %v", err)
	}
}

// TestCreateAfterClose: a create after close fails, naming the folder,
// and uses no descriptor number (one since reused could be another
// folder's).
func TestCreateAfterClose(t *testing.T) {
	f, err := openFolder(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if err := f.close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	file, err := f.create("x")
	if err == nil {
		file.Close()
		t.Fatal("create after close succeeded")
	}
	if !strings.Contains(err.Error(), "closed") {
		t.Errorf("create after close: %v; want it to say the folder is closed", err)
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
