package recorder

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// sha256sum returns what the real sha256sum says of path, and its size.
func sha256sum(t *testing.T, path string) (string, int64) {
	t.Helper()
	out, err := tool("sha256sum", path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, _, _ := strings.Cut(string(out), " ")
	return sum, fi.Size()
}

// checkDigest compares r's Digest with the file on disk.
func checkDigest(t *testing.T, r *Recorder, when string) {
	t.Helper()
	size, sum := r.Digest()
	wantSum, wantSize := sha256sum(t, r.Path())
	if got := hex.EncodeToString(sum); got != wantSum || size != wantSize {
		t.Errorf("%s: Digest %d bytes %s; sha256sum says %d bytes %s", when, size, got, wantSize, wantSum)
	}
}

// TestDigest records random blocks plain, gzip'd and bzip2'd, with and
// without -M -s: after every flush and after Close, Digest is the size and
// SHA-256 of the file as sha256sum reads it from disk.
func TestDigest(t *testing.T) {
	for _, cc := range compressions {
		for _, stamps := range []bool{false, true} {
			name := cc.name
			if stamps {
				name += "-M-s"
			}
			t.Run(name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(7, 1))
				cfg := Config{Record: [2]bool{true, true}, Compression: cc.c, FlushInterval: time.Hour, Prefix: filepath.Join(t.TempDir(), "prot"), Hash: true}
				cfg.BlockStamps, cfg.Printable = stamps, stamps
				r := openOne(t, cfg, "127.0.0.1")
				defer r.Close()
				for i, b := range randomBlocks(rng, 20, true) {
					if err := r.Record(b.dir, b.data); err != nil {
						t.Fatalf("Record %d: %v", i, err)
					}
					if i%7 == 6 {
						syncFlush(t, r)
						checkDigest(t, r, "after a flush")
					}
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				checkDigest(t, r, "after Close")
			})
		}
	}
}

// TestDigestEmpty: a recording without data has the digest of its empty
// file, or of the compressed stream's frame.
func TestDigestEmpty(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			r := openOne(t, Config{Record: [2]bool{datafile.Out: true}, Compression: cc.c, Prefix: filepath.Join(t.TempDir(), "prot"), Hash: true}, "::1")
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			checkDigest(t, r, "after Close")
			if cc.c == datafile.None {
				if size, sum := r.Digest(); size != 0 || [32]byte(sum) != sha256.Sum256(nil) {
					t.Errorf("got %d bytes %x; want the empty file's", size, sum)
				}
			}
		})
	}
}

// TestDigestDiskFull: a recording that failed for a full disk still has
// the digest of exactly what its file holds, also of a write that the
// disk took only in part.
func TestDigestDiskFull(t *testing.T) {
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			disk := mountTmpfs(t, "size=64k")
			r := openOne(t, Config{Prefix: filepath.Join(disk, "prot"), Record: [2]bool{datafile.Out: true}, Compression: cc.c, FlushInterval: time.Hour, Hash: true}, "127.0.0.1")
			rng := rand.New(rand.NewPCG(1, 1))
			// An odd size, so that the last write is likely cut short.
			p := randomBytes(rng, 10001)
			var err error
			for i := 0; i < 400 && err == nil; i++ {
				err = r.Record(datafile.Out, p)
			}
			if cerr := r.Close(); err == nil {
				err = cerr // a compressor may meet the full disk only at Close
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("got %v; want ENOSPC", err)
			}
			checkDigest(t, r, "after a failed recording")
		})
	}
}

// TestDigestUnhashed: without Config.Hash, Digest counts the bytes but
// has no sum.
func TestDigestUnhashed(t *testing.T) {
	r := openOne(t, Config{Record: [2]bool{datafile.Out: true}, Prefix: filepath.Join(t.TempDir(), "prot")}, "127.0.0.1")
	if err := r.Record(datafile.Out, []byte("twelve bytes")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if size, sum := r.Digest(); size != 12 || sum != nil {
		t.Errorf("got %d bytes, sum %x; want 12 bytes, no sum", size, sum)
	}
}
