package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ipprot/ipprot/audit"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	key      = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
)

// fixture is a folder with data files and a journal of them written by
// package audit, as the daemon writes it.
type fixture struct {
	dir     string
	journal string
	files   []string // the data file of entry i+1; "" for a connection without one
	pubkey  string   // PEM file of key's public key
}

// newFixture writes n entries; entry 3 (if n ≥ 3) is a rejected
// connection without a data file. signer may be nil: unsigned.
func newFixture(t *testing.T, n int, signer ed25519.PrivateKey) *fixture {
	t.Helper()
	fx := &fixture{dir: t.TempDir()}
	fx.journal = filepath.Join(fx.dir, "audit.log")
	fx.pubkey = writePub(t, fx.dir, "pub.pem", key)
	j, err := audit.Open(audit.Config{Path: fx.journal, Key: signer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := 1; i <= n; i++ {
		f := fx.facts(t, i, i != 3)
		fx.files = append(fx.files, f.File)
		if err := j.Append(f); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

// facts writes the data file of connection i, if it has one, and returns
// its facts.
func (fx *fixture) facts(t testing.TB, i int, withFile bool) *proxy.Facts {
	t.Helper()
	start := time.Date(2024, 3, 1, 12, 0, i, 0, time.UTC)
	f := &proxy.Facts{
		N: uint64(i), Start: start, End: start.Add(time.Second),
		Client: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:4000%d", i, i)), Outcome: proxy.Rejected,
	}
	if !withFile {
		return f
	}
	data := bytes.Repeat([]byte(fmt.Sprintf("recording %d\n", i)), i)
	f.File = filepath.Join(fx.dir, fmt.Sprintf("prot_2024-03-01_120000_%d_10.0.0.%d", i, i))
	if err := os.WriteFile(f.File, data, 0o640); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	f.Dest, f.Outcome, f.BytesIn, f.BytesOut = netip.MustParseAddrPort("10.1.2.34:5432"), proxy.OK, int64(len(data)), 7
	f.Size, f.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
	return f
}

func writePub(t *testing.T, dir, name string, k ed25519.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (fx *fixture) lines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(fx.journal)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (fx *fixture) setLines(t *testing.T, lines []string) {
	t.Helper()
	if err := os.WriteFile(fx.journal, []byte(strings.Join(lines, "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
}

// verify runs the command and returns its output, notes and exit status.
func verify(t *testing.T, c Cmd) (stdout, stderr string, status int) {
	t.Helper()
	if c.Format == "" {
		c.Format = "text"
	}
	var out, errOut bytes.Buffer
	err := c.run(&out, &errOut)
	if err != nil && err.Error() != "" {
		fmt.Fprintf(&errOut, "ipprotd: %v\n", err)
	}
	return out.String(), errOut.String(), cmdline.Status(err)
}

// rechain rewrites prev (and seq from first on) of every line from index
// from on so that the chain is whole again, keeping each line's signature
// as it is: what someone without the key can do.
func rechain(t *testing.T, lines []string, from int) []string {
	t.Helper()
	out := append([]string(nil), lines...)
	for i := from; i < len(out); i++ {
		e, err := audit.Parse([]byte(out[i]))
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		prev, err := audit.Parse([]byte(out[i-1]))
		if err != nil {
			t.Fatal(err)
		}
		sig := e.Sig
		e.Seq, e.Prev = prev.Seq+1, audit.LineHash([]byte(out[i-1]))
		line := e.AppendLine(nil, nil)
		if sig != nil {
			line = append(line[:len(line)-1], fmt.Sprintf(`,"sig":"%s"}`, base64.StdEncoding.EncodeToString(sig))...)
		}
		out[i] = string(line)
	}
	return out
}

// TestTampering: each way of tampering with a journal or a recording is
// found, with the line, the seq and the data file named.
func TestTampering(t *testing.T) {
	type tc struct {
		name    string
		signed  bool
		pubkey  bool
		tamper  func(t *testing.T, fx *fixture)
		want    []string // problem lines, with J for the journal and F<i> for data file i
		summary string
	}
	tests := []tc{
		{name: "clean, signed", signed: true, pubkey: true, tamper: func(*testing.T, *fixture) {},
			summary: "5 entries, 4 files checked, 0 problems"},
		{name: "clean, unsigned, no key", tamper: func(*testing.T, *fixture) {},
			summary: "5 entries, 4 files checked, 0 problems"},
		{name: "a flipped byte in a recording", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) { flipByte(t, fx.files[1], 5) },
			want:   []string{"J:2: seq 2: data file F2: SHA-256 * the entry says *"}, summary: "5 entries, 4 files checked, 1 problem"},
		{name: "a recording cut short", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) { os.Truncate(fx.files[3], 3) },
			want:   []string{"J:4: seq 4: data file F4: 3 bytes, the entry says 48"}, summary: "5 entries, 4 files checked, 1 problem"},
		{name: "a recording deleted", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) { os.Remove(fx.files[4]) },
			want:   []string{"J:5: seq 5: data file F5: missing"}, summary: "5 entries, 4 files checked, 1 problem"},
		{name: "a deleted line", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				fx.setLines(t, append(l[:2:2], l[3:]...))
			},
			want: []string{"J:3: seq 4: follows seq 2 (J:2): 1 entry missing"}, summary: "4 entries, 4 files checked, 1 problem"},
		{name: "an inserted line, signed with another key", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				e, _ := audit.Parse([]byte(l[1]))
				e.Seq, e.Prev = 3, audit.LineHash([]byte(l[1]))
				forged := string(e.AppendLine(nil, otherKey))
				fx.setLines(t, append(l[:2:2], append([]string{forged}, l[2:]...)...))
			},
			want: []string{
				"J:3: seq 3: bad signature: the entry was changed, or signed with another key",
				"J:4: seq 3: follows seq 3 (J:3): out of order or repeated",
			}, summary: "6 entries, 5 files checked, 2 problems"},
		{name: "reordered lines", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				l[2], l[3] = l[3], l[2]
				fx.setLines(t, l)
			},
			want: []string{
				"J:3: seq 4: follows seq 2 (J:2): 1 entry missing",
				"J:4: seq 3: follows seq 4 (J:3): out of order or repeated",
				"J:5: seq 5: follows seq 3 (J:4): 1 entry missing",
			}, summary: "5 entries, 4 files checked, 3 problems"},
		{name: "an edited field", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				l[1] = strings.Replace(l[1], `"bytes_out":7`, `"bytes_out":8`, 1)
				fx.setLines(t, l)
			},
			want: []string{
				"J:2: seq 2: bad signature: the entry was changed, or signed with another key",
				"J:3: seq 3: prev is not the SHA-256 of the entry before (seq 2, J:2): an entry was changed, replaced or inserted",
			}, summary: "5 entries, 4 files checked, 2 problems"},
		{name: "an edited field, the chain recomputed without the key", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				l[1] = strings.Replace(l[1], `"bytes_out":7`, `"bytes_out":8`, 1)
				fx.setLines(t, rechain(t, l, 2))
			},
			want: []string{
				"J:2: seq 2: bad signature: the entry was changed, or signed with another key",
				"J:3: seq 3: bad signature: the entry was changed, or signed with another key",
				"J:4: seq 4: bad signature: the entry was changed, or signed with another key",
				"J:5: seq 5: bad signature: the entry was changed, or signed with another key",
			}, summary: "5 entries, 4 files checked, 4 problems"},
		{name: "the same, unsigned: nothing shows it (why --audit-key)", signed: false, pubkey: false,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				l[1] = strings.Replace(l[1], `"bytes_out":7`, `"bytes_out":8`, 1)
				fx.setLines(t, rechain(t, l, 2))
			},
			summary: "5 entries, 4 files checked, 0 problems"},
		{name: "a recording and its entry both changed, chain recomputed", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				os.WriteFile(fx.files[3], []byte("forged\n"), 0o640)
				sum := sha256.Sum256([]byte("forged\n"))
				l := fx.lines(t)
				e, _ := audit.Parse([]byte(l[3]))
				e.Size, e.SHA256 = 7, hex.EncodeToString(sum[:])
				l[3] = string(e.AppendLine(nil, otherKey))
				fx.setLines(t, rechain(t, l, 4))
			},
			want: []string{
				"J:4: seq 4: bad signature: the entry was changed, or signed with another key",
				"J:5: seq 5: bad signature: the entry was changed, or signed with another key",
			}, summary: "5 entries, 4 files checked, 2 problems"},
		{name: "a seq changed in an unsigned journal", tamper: func(t *testing.T, fx *fixture) {
			l := fx.lines(t)
			l[4] = strings.Replace(l[4], `"seq":5`, `"seq":9`, 1)
			fx.setLines(t, l)
		},
			want:    []string{"J:5: seq 9: follows seq 4 (J:4) and chains to it: its seq was changed"},
			summary: "5 entries, 4 files checked, 1 problem"},
		{name: "unsigned entries with --pubkey", signed: false, pubkey: true, tamper: func(*testing.T, *fixture) {},
			want:    []string{"J:1: seq 1: unsigned", "J:2: seq 2: unsigned", "J:3: seq 3: unsigned", "J:4: seq 4: unsigned", "J:5: seq 5: unsigned"},
			summary: "5 entries, 4 files checked, 5 problems"},
		{name: "the first line deleted", signed: true, pubkey: true,
			tamper:  func(t *testing.T, fx *fixture) { fx.setLines(t, fx.lines(t)[1:]) },
			summary: "4 entries, 3 files checked, 0 problems"}, // a note on stderr: the chain begins at seq 2
		{name: "a line that is not JSON", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				fx.setLines(t, append(l[:2:2], append([]string{"garbage"}, l[2:]...)...))
			},
			want:    []string{"J:3: not an entry: not a JSON object"},
			summary: "5 entries, 4 files checked, 1 problem"},
		{name: "a torn last line", signed: true, pubkey: true,
			tamper: func(t *testing.T, fx *fixture) {
				b, _ := os.ReadFile(fx.journal)
				os.WriteFile(fx.journal, b[:len(b)-50], 0o640)
			},
			want:    []string{"J:5: not an entry, and without its newline: a line torn by a crash, or cut off: not a journal entry: unexpected EOF"},
			summary: "4 entries, 3 files checked, 1 problem"},
		{name: "a recovered that names no torn line", signed: false,
			tamper: func(t *testing.T, fx *fixture) {
				l := fx.lines(t)
				e, _ := audit.Parse([]byte(l[3]))
				e.Recovered = 2
				l[3] = string(e.AppendLine(nil, nil))
				fx.setLines(t, rechain(t, l, 4))
			},
			want:    []string{"J:4: seq 4: recovered names line 2, which is not a torn line after the entry before"},
			summary: "5 entries, 4 files checked, 1 problem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var signer ed25519.PrivateKey
			if tc.signed {
				signer = key
			}
			fx := newFixture(t, 5, signer)
			tc.tamper(t, fx)
			c := Cmd{Journals: []string{fx.journal}}
			if tc.pubkey {
				c.Pubkey = fx.pubkey
			}
			stdout, stderr, status := verify(t, c)
			wantStatus := 0
			if len(tc.want) > 0 {
				wantStatus = 1
			}
			got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			want := append(fx.expand(tc.want), tc.summary)
			if !matchLines(got, want) || status != wantStatus {
				t.Errorf("got status %d and\n%s\nwant status %d and\n%s\nstderr: %s", status, stdout, wantStatus, strings.Join(want, "\n"), stderr)
			}
		})
	}
}

// expand puts the journal's path for J and data file i's path for Fi.
func (fx *fixture) expand(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		for k := len(fx.files); k >= 1; k-- {
			l = strings.ReplaceAll(l, fmt.Sprintf("F%d", k), fx.files[k-1])
		}
		out[i] = strings.ReplaceAll(l, "J:", fx.journal+":")
	}
	return out
}

// matchLines compares lines; a * in want stands for a word (no blank).
func matchLines(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(want[i]), `\*`, `\S+`) + "$"
		if !regexp.MustCompile(re).MatchString(got[i]) {
			return false
		}
	}
	return true
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestChainBeginsLater: a journal whose first entry is not seq 1 (the
// older journals were not given) is no problem, but a note says that its
// prev is not checked.
func TestChainBeginsLater(t *testing.T) {
	fx := newFixture(t, 5, key)
	fx.setLines(t, fx.lines(t)[2:])
	stdout, stderr, status := verify(t, Cmd{Journals: []string{fx.journal}, Pubkey: fx.pubkey})
	if status != 0 || stdout != "3 entries, 2 files checked, 0 problems\n" {
		t.Errorf("got status %d, %q; want 0 and a clean summary", status, stdout)
	}
	if want := fx.journal + ":1: note: the chain begins at seq 3"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q; want it to say %q", stderr, want)
	}
}

// TestRotatedJournals: a journal reopened into a new file (logrotate and
// SIGHUP) is one chain across the two files, given oldest first; given in
// the wrong order, or with the older one missing, it is not.
func TestRotatedJournals(t *testing.T) {
	fx := &fixture{dir: t.TempDir()}
	fx.journal = filepath.Join(fx.dir, "audit.log")
	j, err := audit.Open(audit.Config{Path: fx.journal, Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		if i == 3 {
			os.Rename(fx.journal, fx.journal+".1")
			if err := j.Reopen(); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.Append(fx.facts(t, i, true)); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	old := fx.journal + ".1"
	pub := writePub(t, fx.dir, "pub.pem", key)
	for _, tc := range []struct {
		name     string
		journals []string
		want     []string
	}{
		{"in order", []string{old, fx.journal}, []string{"4 entries, 4 files checked, 0 problems"}},
		{"reversed", []string{fx.journal, old}, []string{
			old + ":1: seq 1: a new chain begins after seq 4 (" + fx.journal + ":2): the entries after it were lost, or a journal was begun anew",
			"4 entries, 4 files checked, 1 problem"}},
		{"the older one missing", []string{old + ".gone", fx.journal}, []string{
			old + ".gone:0: cannot read the journal: no such file or directory",
			"2 entries, 2 files checked, 1 problem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, _ := verify(t, Cmd{Journals: tc.journals, Pubkey: pub})
			if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); !matchLines(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s\nstderr: %s", stdout, strings.Join(tc.want, "\n"), stderr)
			}
		})
	}
}

// TestTornThenRecovered: a journal torn by a crash and continued by the
// daemon has one problem, the torn line; the entry after it names it as
// recovered and chains to the last whole entry.
func TestTornThenRecovered(t *testing.T) {
	fx := newFixture(t, 3, key)
	b, _ := os.ReadFile(fx.journal)
	os.WriteFile(fx.journal, b[:len(b)-30], 0o640)
	j, err := audit.Open(audit.Config{Path: fx.journal, Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append(fx.facts(t, 4, true)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	stdout, _, status := verify(t, Cmd{Journals: []string{fx.journal}, Pubkey: fx.pubkey})
	want := []string{fx.journal + ":3: not an entry: not a journal entry: unexpected EOF", "3 entries, 3 files checked, 1 problem"}
	if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); !matchLines(got, want) || status != 1 {
		t.Errorf("got status %d and\n%s\nwant 1 and\n%s", status, stdout, strings.Join(want, "\n"))
	}
}

// TestJSON: --format json writes one object per problem and a summary.
func TestJSON(t *testing.T) {
	fx := newFixture(t, 3, key)
	flipByte(t, fx.files[0], 0)
	stdout, _, status := verify(t, Cmd{Journals: []string{fx.journal}, Pubkey: fx.pubkey, Format: "json"})
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if status != 1 || len(lines) != 2 {
		t.Fatalf("got status %d and %q; want 1 and two objects", status, stdout)
	}
	var p Problem
	var s Summary
	if err := json.Unmarshal([]byte(lines[0]), &p); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &s); err != nil {
		t.Fatal(err)
	}
	if p.Journal != fx.journal || p.Line != 1 || p.Seq != 1 || p.File != fx.files[0] || !strings.Contains(p.What, "SHA-256") {
		t.Errorf("problem %+v; want line 1, seq 1, the file, its SHA-256", p)
	}
	if s != (Summary{Entries: 3, Files: 2, Problems: 1}) {
		t.Errorf("summary %+v; want 3 entries, 2 files, 1 problem", s)
	}
	if !strings.Contains(lines[1], `"files_checked":2`) {
		t.Errorf("summary %s; want files_checked", lines[1])
	}
}

// TestDataDir: with --data-dir the files are looked for there by name;
// --no-files checks none.
func TestDataDir(t *testing.T) {
	fx := newFixture(t, 3, nil)
	moved := t.TempDir()
	for _, f := range fx.files {
		if f != "" {
			os.Rename(f, filepath.Join(moved, filepath.Base(f)))
		}
	}
	for _, tc := range []struct {
		c    Cmd
		want string
	}{
		{Cmd{Journals: []string{fx.journal}}, "3 entries, 2 files checked, 2 problems"},
		{Cmd{Journals: []string{fx.journal}, DataDir: moved}, "3 entries, 2 files checked, 0 problems"},
		{Cmd{Journals: []string{fx.journal}, NoFiles: true}, "3 entries, 0 files checked, 0 problems"},
	} {
		stdout, _, _ := verify(t, tc.c)
		if lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); lines[len(lines)-1] != tc.want {
			t.Errorf("%+v: got %q; want the summary %q", tc.c, stdout, tc.want)
		}
	}
}

// TestUsage: bad usage is exit status 2 with one line naming the problem.
func TestUsage(t *testing.T) {
	fx := newFixture(t, 1, nil)
	notKey := filepath.Join(fx.dir, "notkey")
	os.WriteFile(notKey, []byte("hello"), 0o644)
	privKey := filepath.Join(fx.dir, "priv.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(privKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	for _, tc := range []struct {
		c    Cmd
		want string
	}{
		{Cmd{}, "ipprotd: verify: no JOURNAL given"},
		{Cmd{Journals: []string{fx.journal}, Pubkey: filepath.Join(fx.dir, "none")}, "ipprotd: verify: --pubkey: open " + filepath.Join(fx.dir, "none") + ": no such file or directory"},
		{Cmd{Journals: []string{fx.journal}, Pubkey: notKey}, "ipprotd: verify: --pubkey: " + notKey + ": no PEM block"},
		{Cmd{Journals: []string{fx.journal}, Pubkey: privKey}, `ipprotd: verify: --pubkey: ` + privKey + `: a PEM "PRIVATE KEY", not a "PUBLIC KEY"`},
		{Cmd{Journals: []string{fx.journal}, DataDir: "x", NoFiles: true}, "ipprotd: verify: --data-dir and --no-files cannot be used together"},
	} {
		stdout, stderr, status := verify(t, tc.c)
		if status != 2 || stdout != "" || !strings.HasPrefix(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%+v: got status %d, stdout %q, stderr %q; want 2, nothing, one line beginning %q", tc.c, status, stdout, stderr, tc.want)
		}
	}
}

// TestLongLine: a line longer than any entry, longer than the read
// buffer, is one problem, and the lines around it are read as lines.
func TestLongLine(t *testing.T) {
	fx := newFixture(t, 2, nil)
	l := fx.lines(t)
	fx.setLines(t, []string{l[0], strings.Repeat("x", 3<<20), l[1]})
	stdout, _, status := verify(t, Cmd{Journals: []string{fx.journal}})
	want := []string{fx.journal + ":2: not an entry: not a JSON object", "2 entries, 2 files checked, 1 problem"}
	if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); !matchLines(got, want) || status != 1 {
		t.Errorf("got status %d and\n%s\nwant 1 and\n%s", status, stdout, strings.Join(want, "\n"))
	}
}

// FuzzJournal: no journal makes verify panic; every line is an entry or a
// problem, and the summary counts what was reported.
func FuzzJournal(f *testing.F) {
	dir := f.TempDir()
	j, err := audit.Open(audit.Config{Path: filepath.Join(dir, "audit.log"), Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	fx := &fixture{dir: dir}
	for i := 1; i <= 3; i++ {
		if err := j.Append(fx.facts(f, i, i != 2)); err != nil {
			f.Fatal(err)
		}
	}
	j.Close()
	good, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	f.Add(good)
	f.Add(good[:len(good)-40])
	f.Add(append(append([]byte{}, good...), good...))
	f.Add([]byte("\n\n{}\n{\"seq\":1}\n"))
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, journal []byte) {
		var reported int64
		ck := &checker{pub: pub, noFiles: true, notes: io.Discard, report: func(Problem) { reported++ }}
		if err := ck.journal("fuzz", bytes.NewReader(journal)); err != nil {
			t.Fatal(err)
		}
		lines := int64(bytes.Count(journal, []byte{'\n'}))
		if len(journal) > 0 && journal[len(journal)-1] != '\n' {
			lines++
		}
		s := ck.summary()
		if s.Problems != reported || s.Entries > lines || s.Entries+reported < lines {
			t.Fatalf("%d lines: %d entries, %d problems reported, summary %+v", lines, s.Entries, reported, s)
		}
	})
}
