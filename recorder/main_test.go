package recorder

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") == "1" {
		// A helper process only runs TestHelperProcess and must not wait
		// for goroutines: it is killed or exits on its own.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

// zone is the fixed local zone of the tests, as in the manual's example.
var zone = time.FixedZone("", 3600)

// t0 is the time of the manual's first block: 1386170322361458 µs.
var t0 = time.UnixMicro(1386170322361458).In(zone)

// block is one block of a test sequence.
type block struct {
	dir  datafile.Direction
	at   time.Time
	data []byte
}

// model is an independent, byte-at-a-time statement of SPEC §3: what the
// data file of blocks must hold, uncompressed.
func model(cfg Config, blocks []block) []byte {
	var out []byte
	var inRun [2]bool
	var lastISO time.Time
	iso := false
	for _, b := range blocks {
		if len(b.data) == 0 {
			continue
		}
		if cfg.BlockStamps {
			m := "#948366#"
			if b.dir == datafile.In {
				m = "#848367#"
			}
			out = fmt.Appendf(out, "%s%d\n", m, b.at.UnixNano()/1000)
		}
		if b.dir == datafile.In && cfg.StampInterval > 0 && (!iso || b.at.Sub(lastISO) >= cfg.StampInterval) {
			_, off := b.at.Zone()
			sign := '+'
			if off < 0 {
				sign, off = '-', -off
			}
			out = fmt.Appendf(out, "#748369#%04d-%02d-%02d %02d:%02d:%02d%c%02d:%02d\n",
				b.at.Year(), b.at.Month(), b.at.Day(), b.at.Hour(), b.at.Minute(), b.at.Second(),
				sign, off/3600, off%3600/60)
			lastISO, iso = b.at, true
		}
		if !cfg.Record[b.dir] {
			continue
		}
		for _, c := range b.data {
			ok := c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c <= 0x7e)
			switch {
			case !cfg.Printable || ok:
				out = append(out, c)
				inRun[b.dir] = false
			case !inRun[b.dir]:
				out = append(out, ' ')
				inRun[b.dir] = true
			}
		}
	}
	return out
}

// openOne opens connection 1 of client, started at t0, with a new Opener
// of cfg.
func openOne(t testing.TB, cfg Config, client string) *Recorder {
	t.Helper()
	o, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	r, err := o.Open(Conn{N: 1, Start: t0, Client: netip.MustParseAddr(client)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

// record opens a recorder of cfg (Prefix set to a fresh folder), records
// blocks with the clock set to each block's time, closes it and returns its
// path.
func record(t testing.TB, cfg Config, blocks []block) string {
	t.Helper()
	var now time.Time
	cfg.Now = func() time.Time { return now }
	if cfg.Prefix == "" {
		cfg.Prefix = filepath.Join(t.TempDir(), "prot")
	}
	r := openOne(t, cfg, "127.0.0.1")
	for i, b := range blocks {
		now = b.at
		if err := r.Record(b.dir, b.data); err != nil {
			r.Close()
			t.Fatalf("Record block %d: %v", i, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return r.Path()
}

// decompress returns the data of a data file as the real tools give it
// back, with their error (a cut-off file makes them fail after writing what
// they could).
func decompress(t testing.TB, path string, c datafile.Compression) ([]byte, error) {
	t.Helper()
	switch c {
	case datafile.Gzip:
		return tool("gzip", "-dc", path)
	case datafile.Bzip2:
		return tool("bzip2", "-dc", path)
	}
	return os.ReadFile(path)
}

// testFile is like decompress, and also requires the tools' integrity test
// to pass.
func testFile(t testing.TB, path string, c datafile.Compression) []byte {
	t.Helper()
	switch c {
	case datafile.Gzip:
		if out, err := tool("gzip", "-t", path); err != nil {
			t.Fatalf("gzip -t: %v: %s", err, out)
		}
	case datafile.Bzip2:
		if out, err := tool("bzip2", "-t", path); err != nil {
			t.Fatalf("bzip2 -t: %v: %s", err, out)
		}
	}
	data, err := decompress(t, path, c)
	if err != nil {
		t.Fatalf("decompress %s: %v", path, err)
	}
	return data
}

func tool(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, err
}

// firstDiff describes where got and want part, for failure messages.
func firstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	lo := max(0, i-20)
	return fmt.Sprintf("lengths %d, %d; first difference at %d: got %q; want %q",
		len(got), len(want), i, got[lo:min(len(got), i+20)], want[lo:min(len(want), i+20)])
}

var compressions = []struct {
	name string
	c    datafile.Compression
}{{"plain", datafile.None}, {"gzip", datafile.Gzip}, {"bzip2", datafile.Bzip2}}
