package recorder

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// TestConcurrent runs 200 recorders (plain, gzip and bzip2) at once, each
// fed by two goroutines, one per direction, with -L -M, and checks that
// every file holds every block of both directions, whole and in order.
func TestConcurrent(t *testing.T) { testConcurrent(t) }

// TestConcurrentTightBudget: with a budget far below what the sessions
// send at once, compressed sessions wait for room, none for ever, and
// every file is still exact.
func TestConcurrentTightBudget(t *testing.T) {
	old := pendingBudget
	pendingBudget = 256 << 10
	t.Cleanup(func() { pendingBudget = old })
	testConcurrent(t)
}

func testConcurrent(t *testing.T) {
	const sessions, blocks = 200, 16
	dir := t.TempDir()
	openers := make([]*Opener, len(compressions))
	for i, cc := range compressions {
		o, err := New(Config{Prefix: filepath.Join(dir, cc.name), Record: [2]bool{true, true}, BlockStamps: true, Compression: cc.c, FlushInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		openers[i] = o
	}
	type session struct {
		r    *Recorder
		c    datafile.Compression
		sent [2][][]byte
	}
	ss := make([]*session, sessions)
	for i := range ss {
		o := openers[i%len(openers)]
		r, err := o.Open(Conn{N: uint64(i + 1), Start: t0, Client: netip.MustParseAddr("2001:db8::1")})
		if err != nil {
			t.Fatal(err)
		}
		ss[i] = &session{r: r, c: o.cfg.Compression}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*sessions)
	for i, s := range ss {
		for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
			s.sent[d] = makeBlocks(uint64(i), d, blocks)
			wg.Go(func() { errs <- sendAll(s.r, d, s.sent[d]) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, s := range ss {
		if err := s.r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range ss {
		got := parseBlocks(t, testFile(t, s.r.Path(), s.c))
		for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
			if len(got[d]) != len(s.sent[d]) {
				t.Errorf("%s: %d blocks of %v; want %d", s.r.Path(), len(got[d]), d, len(s.sent[d]))
				continue
			}
			for j := range got[d] {
				if !bytes.Equal(got[d][j], s.sent[d][j]) {
					t.Errorf("%s: %v block %d: %s", s.r.Path(), d, j, firstDiff(got[d][j], s.sent[d][j]))
				}
			}
		}
	}
}

// makeBlocks returns n blocks of random letters and newlines (no '#', so
// that markers find the block boundaries), up to 2 KiB each.
func makeBlocks(seed uint64, d datafile.Direction, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, 1+rng.IntN(2<<10))
		for j := range p {
			p[j] = "abcdefghijklmnopqrstuvwxyz\n"[rng.IntN(27)]
		}
		out[i] = p
	}
	return out
}

func sendAll(r *Recorder, d datafile.Direction, blocks [][]byte) error {
	for i, p := range blocks {
		if err := r.Record(d, p); err != nil {
			return fmt.Errorf("%s: Record(%v) block %d: %w", r.Path(), d, i, err)
		}
	}
	return nil
}

// parseBlocks splits a -M file into the blocks of each direction.
func parseBlocks(t *testing.T, data []byte) (blocks [2][][]byte) {
	t.Helper()
	for len(data) > 0 {
		var d datafile.Direction
		switch {
		case bytes.HasPrefix(data, []byte(datafile.MarkerIn)):
			d = datafile.In
		case bytes.HasPrefix(data, []byte(datafile.MarkerOut)):
			d = datafile.Out
		default:
			t.Fatalf("no marker at %q", data[:min(len(data), 40)])
		}
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			t.Fatalf("marker line without newline: %q", data)
		}
		data = data[nl+1:]
		end := bytes.IndexByte(data, '#')
		if end < 0 {
			end = len(data)
		}
		blocks[d] = append(blocks[d], data[:end])
		data = data[end:]
	}
	return blocks
}
