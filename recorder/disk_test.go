package recorder

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs with opts on a new folder and unmounts it when
// the test ends. Where mounting is not permitted (not root) it skips the
// test, unless CI is set: CI runs as root and must run it.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		if errors.Is(err, unix.EPERM) && os.Getenv("CI") == "" {
			t.Skipf("mount -t tmpfs -o %s: %v: this test needs root (it never skips when CI is set)", opts, err)
		}
		t.Fatalf("mount -t tmpfs -o %s %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// TestDiskFull records incompressible data onto a 64 KiB tmpfs until the
// disk is full: Record returns ENOSPC naming the file, every later Record
// returns the same error, and Close releases everything and reports it.
func TestDiskFull(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			disk := mountTmpfs(t, "size=64k")
			o, err := New(Config{Prefix: filepath.Join(disk, "prot"), Record: [2]bool{datafile.Out: true}, BlockStamps: true, Compression: cc.c, FlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			r, err := o.Open(Conn{N: 1, Start: t0})
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 1))
			p := randomBytes(rng, 16<<10)
			var first error
			for i := 0; i < 100 && first == nil; i++ {
				first = r.Record(datafile.Out, p)
			}
			if !errors.Is(first, syscall.ENOSPC) {
				r.Close()
				t.Fatalf("after 1.6 MB on a 64 KiB disk: got %v; want ENOSPC", first)
			}
			if !strings.Contains(first.Error(), r.Path()) {
				t.Errorf("error %q does not name the file %s", first, r.Path())
			}
			for _, d := range []datafile.Direction{datafile.Out, datafile.In} {
				if err := r.Record(d, []byte("x")); err != first {
					t.Errorf("Record(%v) after the failure: got %v; want the same error %v", d, err, first)
				}
			}
			err = r.Close()
			t.Logf("Record: %v\nClose: %v", first, err)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Close: got %v; want it to report ENOSPC", err)
			}
			if err2 := r.Close(); err2 != err {
				t.Errorf("second Close: got %v; want %v", err2, err)
			}
		})
	}
}

// TestDiskFullTimedFlush fills the disk, then records a small block that a
// compressed recorder keeps pending: the timed flush fails, reports it
// through Conn.Fail once, and later Records return it.
func TestDiskFullTimedFlush(t *testing.T) {
	for _, cc := range compressions[1:] {
		t.Run(cc.name, func(t *testing.T) {
			disk := mountTmpfs(t, "size=64k")
			filler, err := os.Create(filepath.Join(disk, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			for err == nil {
				_, err = filler.Write(make([]byte, 4096))
			}
			filler.Close()
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			o, err := New(Config{Prefix: filepath.Join(disk, "prot"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			failed := make(chan error, 10)
			r, err := o.Open(Conn{N: 1, Start: t0, Fail: func(err error) { failed <- err }})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Record(datafile.Out, []byte("pending")); err != nil {
				t.Fatalf("Record of a pending block: %v", err)
			}
			ferr := <-failed
			if !errors.Is(ferr, syscall.ENOSPC) || !strings.Contains(ferr.Error(), r.Path()) {
				t.Errorf("Fail got %v; want ENOSPC naming %s", ferr, r.Path())
			}
			if err := r.Record(datafile.Out, []byte("more")); err != ferr {
				t.Errorf("Record after the failed flush: got %v; want %v", err, ferr)
			}
			if err := r.Close(); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Close: got %v; want ENOSPC", err)
			}
			if len(failed) != 0 {
				t.Errorf("Fail called %d more times; want once", len(failed))
			}
		})
	}
}

// TestReadOnly checks that New refuses a read-only folder and that Open
// fails, with the reason, when the folder became read-only.
func TestReadOnly(t *testing.T) {
	disk := mountTmpfs(t, "size=64k")
	prefix := filepath.Join(disk, "prot")
	o, err := New(Config{Prefix: prefix, Record: [2]bool{datafile.Out: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	if err := unix.Mount("", disk, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	r, err := o.Open(Conn{N: 1, Start: t0})
	if err == nil {
		r.Close()
		t.Fatal("Open on a read-only folder succeeded")
	}
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "create data file") {
		t.Errorf("Open: got %v; want a create error with EROFS", err)
	}
	if _, err := New(Config{Prefix: prefix}); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("New: got %v; want a 'not writable' error", err)
	}
}
