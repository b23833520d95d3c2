package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/proxy"
)

// facts returns the facts of connection n, with a data file.
func facts(n int) *proxy.Facts {
	start := time.Date(2024, 3, 1, 12, 0, n%60, 123456789, time.UTC)
	return &proxy.Facts{
		N: uint64(n), Start: start, End: start.Add(time.Duration(n) * time.Millisecond),
		Client: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:%d", n%250+1, 40000+n)), Dest: netip.MustParseAddrPort("10.1.2.34:5432"),
		BytesIn: int64(n), BytesOut: int64(2 * n),
		File: fmt.Sprintf("/var/log/conn_rec/prot_2024-03-01_120000_%d_10.0.0.1", n), Size: int64(n),
		SHA256: fmt.Sprintf("%064x", n), Outcome: proxy.OK,
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, cfg Config) *Journal {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	j, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func appendN(t *testing.T, j *Journal, from, to int) {
	t.Helper()
	for n := from; n <= to; n++ {
		if err := j.Append(facts(n)); err != nil {
			t.Fatalf("Append %d: %v", n, err)
		}
	}
}

func closeJ(t *testing.T, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// lines returns the file's lines; a last line without a newline is
// returned too.
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l := strings.Split(string(b), "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

// chainLine is what checkChain expects of one line.
type chainLine struct {
	torn      bool  // not an entry
	recovered int64 // the entry's recovered
}

// checkChain checks lines, of one or more files in order: each entry's seq
// follows the last entry's, its prev is that entry's hash (ZeroHash for
// the first, if it has seq 1), lines marked torn are no entries, and
// recovered is as expected. want may be nil: every line an entry without
// recovered. It returns the entries.
func checkChain(t *testing.T, lines []string, want map[int]chainLine, pub ed25519.PublicKey) []*Entry {
	t.Helper()
	var entries []*Entry
	var last *Entry
	lastHash := ZeroHash
	for i, l := range lines {
		w := want[i]
		e, err := Parse([]byte(l))
		if w.torn {
			if err == nil {
				t.Errorf("line %d %q is an entry; want a torn line", i+1, l)
			}
			continue
		}
		if err != nil {
			t.Errorf("line %d %q: %v", i+1, l, err)
			continue
		}
		wantSeq := uint64(1)
		if last != nil {
			wantSeq = last.Seq + 1
		}
		if e.Seq != wantSeq || (last != nil || e.Seq == 1) && e.Prev != lastHash {
			t.Errorf("line %d: seq %d prev %s; want seq %d prev %s", i+1, e.Seq, e.Prev, wantSeq, lastHash)
		}
		if e.Recovered != w.recovered {
			t.Errorf("line %d: recovered %d; want %d", i+1, e.Recovered, w.recovered)
		}
		if pub != nil && !e.Verify(pub) {
			t.Errorf("line %d: the signature does not verify", i+1)
		}
		last, lastHash = e, LineHash([]byte(l))
		entries = append(entries, e)
	}
	return entries
}

// TestAppendWritesTheFacts: each Append is one line with the connection's
// facts, chained from seq 1, readable while the journal is open.
func TestAppendWritesTheFacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path})
	appendN(t, j, 1, 3)
	got := lines(t, path) // before Close: Append returned, the lines are there
	entries := checkChain(t, got, nil, nil)
	closeJ(t, j)
	if len(entries) != 3 {
		t.Fatalf("got %d entries; want 3", len(entries))
	}
	for i, e := range entries {
		f := facts(i + 1)
		if !e.Start.Equal(f.Start.Truncate(time.Microsecond)) || !e.End.Equal(f.End.Truncate(time.Microsecond)) ||
			e.Client != f.Client || e.Dest != f.Dest || e.Outcome != "ok" || e.BytesIn != f.BytesIn || e.BytesOut != f.BytesOut ||
			e.File != f.File || e.Size != f.Size || e.SHA256 != f.SHA256 || e.Sig != nil {
			t.Errorf("entry %d: %+v; want the facts %+v", i+1, e, f)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&^0o640 != 0 {
		t.Errorf("mode %v; want at most 0640", mode)
	}
}

// TestSigned: with a key every line is signed.
func TestSigned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path, Key: testKey})
	appendN(t, j, 1, 3)
	closeJ(t, j)
	checkChain(t, lines(t, path), nil, testKey.Public().(ed25519.PublicKey))
}

// TestNoFileNoHash: a connection without a data file has null file, size
// and sha256; a file that was not hashed is refused.
func TestNoFileNoHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path})
	defer closeJ(t, j)
	f := facts(1)
	f.File, f.Size, f.SHA256, f.Dest, f.Outcome = "", 0, "", netip.AddrPort{}, proxy.Rejected
	if err := j.Append(f); err != nil {
		t.Fatal(err)
	}
	if l := lines(t, path)[0]; !strings.Contains(l, `"dest":null,"dest_port":null,"outcome":"rejected","bytes_in":1,"bytes_out":2,"file":null,"size":null,"sha256":null,`) {
		t.Errorf("got %s; want dest, file, size and sha256 null", l)
	}
	f = facts(2)
	f.SHA256 = ""
	if err := j.Append(f); err == nil || !strings.Contains(err.Error(), "not hashed") {
		t.Errorf("Append of an unhashed file: %v; want an error", err)
	}
}

// TestRestartContinues: a journal opened again continues the chain.
func TestRestartContinues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path, Key: testKey})
	appendN(t, j, 1, 2)
	closeJ(t, j)
	j = open(t, Config{Path: path, Key: testKey})
	appendN(t, j, 3, 4)
	closeJ(t, j)
	if e := checkChain(t, lines(t, path), nil, testKey.Public().(ed25519.PublicKey)); len(e) != 4 {
		t.Errorf("got %d entries; want 4", len(e))
	}
}

// TestSecondWriterRefused: a journal open in one Journal cannot be opened
// by another (another daemon).
func TestSecondWriterRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path})
	defer closeJ(t, j)
	if j2, err := Open(Config{Path: path}); err == nil || !strings.Contains(err.Error(), "another process writes this journal") {
		if j2 != nil {
			j2.Close()
		}
		t.Errorf("second Open: %v; want refused", err)
	}
}

// TestSymlinkRefused: the journal's path is never followed.
func TestSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, nil, 0o640)
	path := filepath.Join(dir, "audit.log")
	os.Symlink(target, path)
	if j, err := Open(Config{Path: path}); !errors.Is(err, syscall.ELOOP) {
		if j != nil {
			j.Close()
		}
		t.Errorf("Open of a symlink: %v; want ELOOP", err)
	}
}

// TestReopenContinuesInNewFile: after the file is moved away, Reopen
// starts a new file whose first line chains to the old file's last; the
// two files together are one chain. Reopen with the file in place changes
// nothing.
func TestReopenContinuesInNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	j := open(t, Config{Path: path, Key: testKey})
	appendN(t, j, 1, 2)
	if err := j.Reopen(); err != nil { // not moved: the same file
		t.Fatal(err)
	}
	appendN(t, j, 3, 3)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendN(t, j, 4, 4) // still into the old file, as with logrotate before SIGHUP
	if err := j.Reopen(); err != nil {
		t.Fatal(err)
	}
	appendN(t, j, 5, 6)
	closeJ(t, j)
	old, cur := lines(t, path+".1"), lines(t, path)
	if len(old) != 4 || len(cur) != 2 {
		t.Fatalf("got %d lines in the old file and %d in the new; want 4 and 2", len(old), len(cur))
	}
	checkChain(t, append(old, cur...), nil, testKey.Public().(ed25519.PublicKey))
	// A second daemon may now take the rotated file: it is no longer locked.
	j2 := open(t, Config{Path: path + ".1"})
	closeJ(t, j2)
}

// TestTornTail: a last line torn by a crash (cut short, or not an entry)
// is left as it is, ended with a newline; the next entry records its line
// number as recovered and chains to the last complete line.
func TestTornTail(t *testing.T) {
	tests := []struct {
		name  string
		tear  func(content string, lines []string) string
		torn  int // line number of the torn line
		total int // lines after the new entry
	}{
		{"cut mid-line", func(c string, l []string) string { return c[:len(c)-len(l[2])/2-1] }, 3, 4},
		{"garbage with a newline", func(c string, l []string) string { return c + "{\"seq\":4,\x00\x00\n" }, 4, 5},
		{"zeros from a power loss", func(c string, l []string) string { return c + strings.Repeat("\x00", 300) }, 4, 5},
		{"two bad lines", func(c string, l []string) string { return c + "junk\n{\"seq\":" }, 4, 6},
		{"only a torn line", func(c string, l []string) string { return c[:len(l[0])/2] }, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			j := open(t, Config{Path: path, Key: testKey})
			appendN(t, j, 1, 3)
			closeJ(t, j)
			content, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			torn := tc.tear(string(content), lines(t, path))
			os.WriteFile(path, []byte(torn), 0o640)
			j = open(t, Config{Path: path, Key: testKey})
			appendN(t, j, 4, 4)
			closeJ(t, j)
			got := lines(t, path)
			if len(got) != tc.total {
				t.Fatalf("got %d lines %q; want %d", len(got), got, tc.total)
			}
			if !strings.HasPrefix(strings.Join(got, "\n")+"\n", torn) {
				t.Errorf("the torn file was changed: got %q; want it to begin with %q", got, torn)
			}
			want := map[int]chainLine{tc.total - 1: {recovered: int64(tc.torn)}}
			for i := tc.torn - 1; i < tc.total-1; i++ {
				want[i] = chainLine{torn: true}
			}
			checkChain(t, got, want, testKey.Public().(ed25519.PublicKey))
		})
	}
}

// TestTornTailLongJournal: the torn line's number is counted over a file
// longer than the chunks the end is read in.
func TestTornTailLongJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path})
	appendN(t, j, 1, 400)
	closeJ(t, j)
	content, _ := os.ReadFile(path)
	if len(content) < 2*chunk {
		t.Fatalf("journal of %d bytes; want more than two chunks", len(content))
	}
	os.WriteFile(path, content[:len(content)-100], 0o640)
	j = open(t, Config{Path: path})
	appendN(t, j, 401, 401)
	closeJ(t, j)
	checkChain(t, lines(t, path), map[int]chainLine{399: {torn: true}, 400: {recovered: 400}}, nil)
}

// TestOnlyNewlineLost: a last entry that lacks only its newline is whole:
// a newline is added and the chain goes on from it, nothing is torn.
func TestOnlyNewlineLost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path})
	appendN(t, j, 1, 3)
	closeJ(t, j)
	content, _ := os.ReadFile(path)
	os.WriteFile(path, content[:len(content)-1], 0o640)
	j = open(t, Config{Path: path})
	appendN(t, j, 4, 4)
	closeJ(t, j)
	if e := checkChain(t, lines(t, path), nil, nil); len(e) != 4 {
		t.Errorf("got %d entries; want 4", len(e))
	}
}

// TestGroupCommit: entries that wait while a group is synced are written
// and synced together as the next group, and the chain is one order. The
// first sync is held until all the other Appends wait, so the test does
// not depend on timing.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	const n = 100
	release := make(chan struct{})
	var mu sync.Mutex
	syncs := 0
	var j *Journal
	j = open(t, Config{Path: path, sync: func(f *os.File) error {
		mu.Lock()
		syncs++
		first := syncs == 1
		mu.Unlock()
		if first {
			<-release
		}
		return fdatasync(f)
	}})
	errc := make(chan error, n)
	go func() { errc <- j.Append(facts(0)) }()
	waitFor(t, "the first group to sync", func() bool { mu.Lock(); defer mu.Unlock(); return syncs == 1 })
	for i := 1; i < n; i++ {
		go func() { errc <- j.Append(facts(i)) }()
	}
	waitFor(t, "the other Appends to wait", func() bool { j.mu.Lock(); defer j.mu.Unlock(); return len(j.queue) == n-1 })
	close(release)
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	closeJ(t, j)
	if syncs != 2 {
		t.Errorf("%d syncs for %d entries; want 2: one for the first, one for the group that waited", syncs, n)
	}
	entries := checkChain(t, lines(t, path), nil, nil)
	seen := map[int64]bool{}
	for _, e := range entries {
		seen[e.BytesIn] = true
	}
	if len(entries) != n || len(seen) != n {
		t.Errorf("got %d entries of %d connections; want %d", len(entries), len(seen), n)
	}
}

// TestConcurrentAppends: many goroutines appending at once make one chain
// with every entry once (run with -race).
func TestConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	j := open(t, Config{Path: path, Key: testKey})
	var wg sync.WaitGroup
	errc := make(chan error, 400)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				errc <- j.Append(facts(g*50 + i))
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	closeJ(t, j)
	if e := checkChain(t, lines(t, path), nil, testKey.Public().(ed25519.PublicKey)); len(e) != 400 {
		t.Errorf("got %d entries; want 400", len(e))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// failingDisk fails writes and syncs as told: a write may land in part
// before it fails, as on a disk that fills up.
type failingDisk struct {
	mu         sync.Mutex
	writeFails int // the next writes that fail
	partial    int // bytes of a failing write that land first
	syncFails  int // the next syncs that fail
	writes     int
}

func (d *failingDisk) write(f *os.File, p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	if d.writeFails > 0 {
		d.writeFails--
		n, _ := f.Write(p[:min(d.partial, len(p))])
		return n, syscall.ENOSPC
	}
	return f.Write(p)
}

func (d *failingDisk) sync(f *os.File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.syncFails > 0 {
		d.syncFails--
		return syscall.EIO
	}
	return fdatasync(f)
}

func lowRetry(t *testing.T) {
	oldMin, oldMax := retryMin, retryMax
	retryMin, retryMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { retryMin, retryMax = oldMin, oldMax })
}

// TestWriteFailsThenWorks: a write that fails with part of a line on disk
// is retried; the part is left as a torn line, the entry is written after
// it with recovered, and Append returns only then. Meanwhile Writable
// reports the failure.
func TestWriteFailsThenWorks(t *testing.T) {
	lowRetry(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	d := &failingDisk{}
	var logged bytes.Buffer
	var logMu sync.Mutex
	j := open(t, Config{Path: path, Key: testKey, write: d.write, sync: d.sync,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil))})
	appendN(t, j, 1, 2)
	d.mu.Lock()
	d.writeFails, d.partial = 3, 40
	d.mu.Unlock()
	if err := j.Writable(); err != nil {
		t.Fatalf("Writable before the failure: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- j.Append(facts(3)) }()
	waitFor(t, "the failure to show", func() bool { return j.Writable() != nil })
	if err := j.Writable(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Writable: %v; want ENOSPC", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Append: %v; want it to wait and succeed", err)
	}
	if err := j.Writable(); err != nil {
		t.Errorf("Writable after the recovery: %v", err)
	}
	appendN(t, j, 4, 4)
	closeJ(t, j)
	got := lines(t, path)
	// Lines 1, 2; line 3: the 40 bytes of the first failed write, then
	// the 40 bytes of the second and third (each after a newline that
	// ended the torn line before); then the entry of connection 3.
	want := map[int]chainLine{2: {torn: true}, 3: {torn: true}, 4: {torn: true}, 5: {recovered: 3}}
	if len(got) != 7 {
		t.Fatalf("got %d lines %q; want 7", len(got), got)
	}
	checkChain(t, got, want, testKey.Public().(ed25519.PublicKey))
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logged.String(), "audit journal cannot be written"); n != 1 {
		t.Errorf("logged the failure %d times; want once (the same error):\n%s", n, logged.String())
	}
	if !strings.Contains(logged.String(), "audit journal written again") {
		t.Errorf("the recovery is not logged:\n%s", logged.String())
	}
}

// TestSyncFailsThenWorks: lines that were written but whose sync failed
// are found in the file on the retry and synced, not written twice.
func TestSyncFailsThenWorks(t *testing.T) {
	lowRetry(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	d := &failingDisk{syncFails: 2}
	j := open(t, Config{Path: path, write: d.write, sync: d.sync})
	appendN(t, j, 1, 3)
	closeJ(t, j)
	if got := lines(t, path); len(got) != 3 {
		t.Fatalf("got %d lines; want 3, none twice", len(got))
	} else {
		checkChain(t, got, nil, nil)
	}
}

// TestAbandonAndBacklog: while the journal cannot be written, Appends wait
// up to the backlog; beyond it they fail at once; Abandon makes the
// waiting ones fail; Close after it returns.
func TestAbandonAndBacklog(t *testing.T) {
	lowRetry(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	d := &failingDisk{writeFails: 1 << 30}
	j := open(t, Config{Path: path, write: d.write, sync: d.sync, Backlog: 2})
	errc := make(chan error, 3)
	go func() { errc <- j.Append(facts(1)) }() // the group being retried
	waitFor(t, "the failure", func() bool { return j.Writable() != nil })
	go func() { errc <- j.Append(facts(2)) }()
	go func() { errc <- j.Append(facts(3)) }()
	waitFor(t, "two entries waiting", func() bool { j.mu.Lock(); defer j.mu.Unlock(); return len(j.queue) == 2 })
	if err := j.Append(facts(4)); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "2 entries wait already") {
		t.Errorf("Append beyond the backlog: %v; want it to fail at once", err)
	}
	j.Abandon()
	for range 3 {
		if err := <-errc; !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Append after Abandon: %v; want ENOSPC", err)
		}
	}
	closeJ(t, j)
	if err := j.Append(facts(5)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v; want ErrClosed", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// BenchmarkAppend appends from many goroutines, as ending sessions do, to
// a journal in the system's temp folder: ns per entry, syncs grouped.
func BenchmarkAppend(b *testing.B) {
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		var key ed25519.PrivateKey
		if signed {
			name, key = "signed", testKey
		}
		b.Run(name, func(b *testing.B) {
			j, err := Open(Config{Path: filepath.Join(b.TempDir(), "audit.log"), Key: key, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) { appendLoop(b, pb, j) })
		})
	}
}

func appendLoop(b *testing.B, pb *testing.PB, j *Journal) {
	f := facts(1)
	for pb.Next() {
		if err := j.Append(f); err != nil {
			b.Error(err)
			return
		}
	}
}
