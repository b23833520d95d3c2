package playback

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/recorder"
)

// followed gathers what Follow delivers, for a test to wait on.
type followed struct {
	mu     sync.Mutex
	blocks []Block
	more   chan struct{} // signalled after each block
}

func (f *followed) add(b Block) error {
	f.mu.Lock()
	f.blocks = append(f.blocks, b)
	f.mu.Unlock()
	select {
	case f.more <- struct{}{}:
	default:
	}
	return nil
}

// waitFor waits until the merged blocks are want's first n, or fails
// after a generous deadline: no timing is asserted.
func (f *followed) waitFor(t *testing.T, want []tblock, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		f.mu.Lock()
		got, err := merge(f.blocks)
		f.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= n && complete(got[n-1], want[n-1]) {
			checkPrefix(t, got, want)
			return
		}
		select {
		case <-f.more:
		case <-deadline:
			t.Fatalf("after 20 s, got %d blocks; want %d", len(got), n)
		}
	}
}

func complete(b Block, w tblock) bool { return bytes.Equal(b.Data, w.data) }

// TestFollow follows a recording while recorder writes it: the blocks
// written after Follow started arrive, plain and gzip (decompressed as the
// sync-flushed file grows). A gzip recording's end ends Follow; a plain
// one's is not known, so the test cancels it.
func TestFollow(t *testing.T) {
	for _, c := range []datafile.Compression{datafile.None, datafile.Gzip, datafile.Bzip2} {
		t.Run(extensions[c], func(t *testing.T) {
			blocks := session(6, 3000)
			var mu sync.Mutex
			var now time.Time
			o, err := recorder.New(recorder.Config{
				Prefix: filepath.Join(t.TempDir(), "prot"), Record: [2]bool{true, true}, BlockStamps: true,
				Compression: c, FlushInterval: 5 * time.Millisecond,
				Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			r, err := o.Open(recorder.Conn{N: 1, Start: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			write := func(b tblock) {
				mu.Lock()
				now = b.at
				mu.Unlock()
				if err := r.Record(b.dir, b.data); err != nil {
					t.Fatal(err)
				}
			}
			write(blocks[0])

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &followed{more: make(chan struct{}, 1)}
			done := make(chan error, 1)
			go func() { done <- Follow(ctx, r.Path(), datafile.Out, 10*time.Millisecond, f.add) }()

			f.waitFor(t, blocks, 1)
			for i := 1; i < len(blocks); i++ {
				write(blocks[i])
				f.waitFor(t, blocks, i+1)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if c != datafile.Gzip {
				cancel()
			}
			select {
			case err := <-done:
				switch {
				case c == datafile.Gzip && err != nil:
					t.Errorf("Follow of a completed gzip recording: %v; want nil", err)
				case c != datafile.Gzip && !errors.Is(err, context.Canceled):
					t.Errorf("Follow after cancel: %v; want context.Canceled", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Follow did not return within 20 s")
			}
			got, _ := merge(f.blocks)
			if len(got) != len(blocks) {
				t.Errorf("got %d blocks; want %d", len(got), len(blocks))
			}
		})
	}
}

// TestFollowShrink: a followed file that shrinks is an error.
func TestFollowShrink(t *testing.T) {
	blocks := session(2, 100)
	path := record(t, recorder.Config{Record: [2]bool{true, true}, BlockStamps: true}, blocks)
	f := &followed{more: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- Follow(context.Background(), path, datafile.Out, 10*time.Millisecond, f.add) }()
	f.waitFor(t, blocks, 1)
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("shrank")) {
			t.Errorf("got %v; want an error saying the file shrank", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Follow did not return within 20 s")
	}
}
