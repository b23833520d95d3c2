package recorder

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// TestPlantedNames plants a dangling symlink, a symlink to a file and a
// regular file at the first three names a session would take: all stay
// untouched and the recorder takes the fourth.
func TestPlantedNames(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			dir := t.TempDir()
			prefix := filepath.Join(dir, "prot")
			client := netip.MustParseAddr("192.0.2.1")
			name := func(n uint64) string { return datafile.FileName(prefix, t0, n, client, cc.c) }

			dangling := filepath.Join(dir, "not-there")
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("victim's data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(dangling, name(5)); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, name(6)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name(7), []byte("an older file"), 0o600); err != nil {
				t.Fatal(err)
			}

			o, err := New(Config{Prefix: prefix, Record: [2]bool{datafile.Out: true}, Compression: cc.c})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 5, Start: t0, Client: client})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Record(datafile.Out, []byte("new data")); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if got, want := r.Path(), name(8); got != want {
				t.Errorf("path %q; want %q", got, want)
			}
			if got := testFile(t, r.Path(), cc.c); string(got) != "new data" {
				t.Errorf("recorded %q; want %q", got, "new data")
			}
			if _, err := os.Lstat(dangling); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the dangling symlink's target: %v; want it still missing", err)
			}
			for path, want := range map[string]string{victim: "victim's data", name(7): "an older file"} {
				if got, err := os.ReadFile(path); err != nil || string(got) != want {
					t.Errorf("%s: got %q, %v; want %q", path, got, err, want)
				}
			}
			for n, target := range map[uint64]string{5: dangling, 6: victim} {
				if got, err := os.Readlink(name(n)); err != nil || got != target {
					t.Errorf("symlink %d: got %q, %v; want %q", n, got, err, target)
				}
			}
			fi, err := os.Stat(r.Path())
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o640&^umask() {
				t.Errorf("mode %v; want %v", got, os.FileMode(0o640&^umask()))
			}
		})
	}
}

func umask() os.FileMode {
	// Creating a file is the only portable way to read the umask.
	dir, err := os.MkdirTemp("", "umask")
	if err != nil {
		return 0
	}
	defer os.RemoveAll(dir)
	f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_CREATE|os.O_WRONLY, 0o777)
	if err != nil {
		return 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return 0o777 &^ fi.Mode().Perm()
}

// TestNamesExhausted checks that Open gives up, with an error, when the
// next 1000 names are taken.
func TestNamesExhausted(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "p")
	o, err := New(Config{Prefix: prefix, Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	for n := uint64(1); n <= maxNameTries; n++ {
		if err := os.Symlink("x", datafile.FileName(prefix, t0, n, netip.Addr{}, datafile.None)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := o.Open(Conn{N: 1, Start: t0})
	if err == nil {
		r.Close()
		t.Fatalf("Open succeeded with %s", r.Path())
	}
	if !strings.Contains(err.Error(), "names are all taken") {
		t.Errorf("got %v; want an error saying the names are taken", err)
	}
}

// TestFolders checks that New creates the missing folders of the prefix
// (0750), that Open creates them again when they vanished, and that a
// folder that is not a directory is an error.
func TestFolders(t *testing.T) {
	base := t.TempDir()
	prefix := filepath.Join(base, "a", "b", "prot")
	o, err := New(Config{Prefix: prefix, Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	fi, err := os.Stat(filepath.Dir(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), 0o750&^umask(); got != want {
		t.Errorf("folder mode %v; want %v", got, want)
	}
	if err := os.RemoveAll(filepath.Join(base, "a")); err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(Conn{N: 1, Start: t0})
	if err != nil {
		t.Fatalf("Open after the folder vanished: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// A prefix ending in a slash names the folder itself.
	o, err = New(Config{Prefix: filepath.Join(base, "c") + "/", Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	r, err = o.Open(Conn{N: 1, Start: t0})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if got, want := r.Path(), filepath.Join(base, "c", "_2013-12-04_161842_1_unknown"); got != want {
		t.Errorf("path %q; want %q", got, want)
	}

	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty prefix", Config{}, "empty data file prefix"},
		{"folder is a file", Config{Prefix: filepath.Join(file, "prot")}, "not a directory"},
		{"folder below a file", Config{Prefix: filepath.Join(file, "x", "prot")}, "not a directory"},
		{"compression", Config{Prefix: prefix, Compression: 3}, "unknown compression 3"},
		{"stamp interval", Config{Prefix: prefix, StampInterval: -1}, "negative stamp interval"},
		{"flush interval", Config{Prefix: prefix, FlushInterval: -1}, "negative flush interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestWants(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		in, out bool
	}{
		{"default: out", Config{Record: [2]bool{datafile.Out: true}}, false, true},
		{"-l", Config{Record: [2]bool{datafile.In: true}}, true, false},
		{"-L", Config{Record: [2]bool{true, true}}, true, true},
		{"nothing", Config{}, false, false},
		{"-M", Config{Record: [2]bool{datafile.Out: true}, BlockStamps: true}, true, true},
		{"-M nothing recorded", Config{BlockStamps: true}, true, true},
		{"-t", Config{Record: [2]bool{datafile.Out: true}, StampInterval: time.Second}, true, true},
		{"-l -t", Config{Record: [2]bool{datafile.In: true}, StampInterval: time.Second}, true, false},
		{"-s", Config{Record: [2]bool{datafile.Out: true}, Printable: true}, false, true},
		{"-z", Config{Record: [2]bool{datafile.Out: true}, Compression: datafile.Gzip}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Prefix = filepath.Join(t.TempDir(), "p")
			o, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Wants(datafile.In); got != tt.in {
				t.Errorf("Wants(In) = %v; want %v", got, tt.in)
			}
			if got := r.Wants(datafile.Out); got != tt.out {
				t.Errorf("Wants(Out) = %v; want %v", got, tt.out)
			}
			if r.Wants(datafile.Out + 1) {
				t.Errorf("Wants(2) = true; want false")
			}
			// What Wants denies, Record must not write.
			for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
				if r.Wants(d) {
					continue
				}
				if err := r.Record(d, []byte("x")); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(r.Path()); err != nil || fi.Size() != 0 {
					t.Errorf("Record(%v) with Wants false wrote: %v, %v", d, fi.Size(), err)
				}
			}
		})
	}
}

// TestWriteThrough checks that an uncompressed block is in the file when
// Record returns, and that it reached the file stage in one Write.
func TestWriteThrough(t *testing.T) {
	for _, s := range []bool{false, true} {
		o, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Record: [2]bool{true, true}, Printable: s, BlockStamps: true, StampInterval: time.Second, Now: func() time.Time { return t0 }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		r, err := o.Open(Conn{N: 1, Start: t0})
		if err != nil {
			t.Fatal(err)
		}
		counter := &countingStage{stage: r.frame.next}
		r.frame.next = counter
		var blocks []block
		for i, b := range []string{"GET\x00\x01 / \x02", "200", "x", "\x00\x01\x02"} {
			dir := datafile.Direction(i % 2)
			if err := r.Record(dir, []byte(b)); err != nil {
				t.Fatal(err)
			}
			blocks = append(blocks, block{dir, t0, []byte(b)})
			want := model(o.cfg, blocks)
			got, err := os.ReadFile(r.Path())
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("-s %v: after block %d the file holds %q; want %q", s, i, got, want)
			}
			if counter.writes != i+1 {
				t.Errorf("-s %v: %d writes for %d blocks; want one each", s, counter.writes, i+1)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

type countingStage struct {
	stage
	writes int
}

func (c *countingStage) Write(p []byte) (int, error) {
	c.writes++
	return c.stage.Write(p)
}

// TestCloseAndAfter checks that Close is idempotent and that Record after
// Close fails.
func TestCloseAndAfter(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			o, err := New(Config{Prefix: filepath.Join(t.TempDir(), "p"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Record(datafile.Out, []byte("data")); err != nil {
				t.Fatal(err)
			}
			if err := r.Record(datafile.In+2, []byte("data")); err == nil {
				t.Error("Record(2) succeeded; want an error")
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := r.Record(datafile.Out, []byte("more")); !errors.Is(err, errClosed) {
				t.Errorf("Record after Close: got %v; want %v", err, errClosed)
			}
			if got := testFile(t, r.Path(), cc.c); string(got) != "data" {
				t.Errorf("got %q; want %q", got, "data")
			}
		})
	}
}

// TestFolderReplacedBySymlink: a symlink planted at the data folder's path
// after start is never followed (recordings once landed where it
// pointed): creating files fails, naming the folder, until a folder is
// there again; a folder renamed and made anew is used.
func TestFolderReplacedBySymlink(t *testing.T) {
	base := t.TempDir()
	data, elsewhere := filepath.Join(base, "data"), filepath.Join(base, "elsewhere")
	o, err := New(Config{Prefix: filepath.Join(data, "prot"), Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(data, filepath.Join(base, "data.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, data); err != nil {
		t.Fatal(err)
	}
	_, err = o.Open(Conn{N: 1, Start: t0})
	if err == nil || !strings.Contains(err.Error(), "data file folder "+data+" is no longer a folder but a symlink") {
		t.Errorf("Open through a symlinked folder: %v; want a refusal naming the folder", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("files created where the symlink points: %v", entries)
	}

	// A folder again at the path: it is used.
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	r, err := o.Open(Conn{N: 2, Start: t0})
	if err != nil {
		t.Fatalf("Open in the new folder: %v", err)
	}
	r.Close()
	if got, want := filepath.Dir(r.Path()), data; got != want {
		t.Errorf("file in %s; want %s", got, want)
	}
	if _, err := os.Stat(r.Path()); err != nil {
		t.Errorf("the file is not in the new folder: %v", err)
	}
}

// TestCreatesOneAtATime holds the folder's create turn, as a create in
// progress does, and checks that an Open waits for it without touching
// the folder, then creates its file once the turn is given back.
func TestCreatesOneAtATime(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		prefix := filepath.Join(dir, "prot")
		o, err := New(Config{Prefix: prefix, Record: [2]bool{datafile.Out: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		client := netip.MustParseAddr("192.0.2.1")
		want := datafile.FileName(prefix, t0, 1, client, datafile.None)

		o.folder.creating <- struct{}{} // a create in progress
		opened := make(chan error, 1)
		go func() {
			r, err := o.Open(Conn{N: 1, Start: t0, Client: client})
			if err == nil {
				err = r.Close()
			}
			opened <- err
		}()
		synctest.Wait() // the Open waits for its turn
		if _, err := os.Lstat(want); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("while another create runs: got %v for %s; want it not to exist yet", err, want)
		}
		<-o.folder.creating
		if err := <-opened; err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(want); err != nil {
			t.Errorf("after the turn: %v", err)
		}
	})
}
