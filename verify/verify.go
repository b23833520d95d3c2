// Package verify is `ipprotd verify`: journals of --audit-log go in
// (package audit), one line per problem comes out — a line that is not an
// entry, a break in seq or in the prev chain, a missing or bad signature,
// a data file that is missing or differs from its entry — and a summary
// line. Cmd is its kong grammar; main runs it through kong. SPEC §9 and
// docs/integrity.md say what a clean result proves.
//
//	ipprotd verify --pubkey audit.pub /var/log/conn_rec/audit.log.1 /var/log/conn_rec/audit.log
//	/var/log/conn_rec/audit.log:17: seq 2051: data file /var/log/conn_rec/prot_…_2051_10.1.2.3.gz: SHA-256 differs from the entry's
//	4210 entries, 4102 files checked, 1 problem
package verify

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/alecthomas/kong"

	"github.com/ipprot/ipprot/audit"
	"github.com/ipprot/ipprot/internal/cmdline"
)

// Cmd is `ipprotd verify`: its arguments and flags, and Run.
type Cmd struct {
	Journals []string `arg:"" optional:"" name:"JOURNAL" help:"Journals written by --audit-log, oldest first (audit.log.2 audit.log.1 audit.log): the chain goes on from one to the next."`

	Pubkey  string `placeholder:"FILE" help:"The Ed25519 public key (PEM, as openssl pkey -pubout writes it) of --audit-key: every entry must carry a valid signature of it."`
	DataDir string `placeholder:"DIR" help:"Look for the data files in DIR by their base names, not at the paths the entries name (the recordings were moved or shipped)."`
	NoFiles bool   `help:"Check the journals only, not the data files."`
	Format  string `enum:"text,json" default:"text" placeholder:"text|json" help:"One line of text per problem, or one JSON object (default: ${default})."`
}

// Help is the text of ipprotd verify --help below its usage line.
func (c *Cmd) Help() string {
	return `Checks journals written by --audit-log: that every line is an entry as ipprotd writes it, that seq counts up by one and each entry's prev is the SHA-256 of the line before, across the journals given; with --pubkey, that every entry is signed with its key; and that each entry's data file exists with the size and SHA-256 the entry names. Prints one line per problem (JOURNAL:LINE: seq N: what), then "N entries, M files checked, K problems". See docs/integrity.md.

Exit status: 0 without problems, 1 with some, 2 on bad usage.`
}

// Problem is one thing wrong, as --format json writes it.
type Problem struct {
	Journal string `json:"journal"`
	Line    int64  `json:"line"`           // from 1; 0 when the journal could not be read
	Seq     uint64 `json:"seq,omitempty"`  // the entry's, where the line is one
	File    string `json:"file,omitempty"` // the data file concerned
	What    string `json:"problem"`
}

// Summary is the last line, as --format json writes it.
type Summary struct {
	Entries  int64 `json:"entries"`
	Files    int64 `json:"files_checked"`
	Problems int64 `json:"problems"`
}

// Run runs verify. Its error carries the exit status: 0 without problems,
// 1 with some (printed on stdout already), 2 on bad usage.
func (c *Cmd) Run(kctx *kong.Context) error {
	return c.run(kctx.Stdout, kctx.Stderr)
}

func (c *Cmd) run(stdout, stderr io.Writer) error {
	if len(c.Journals) == 0 {
		return cmdline.Usagef("verify: no JOURNAL given (see ipprotd verify --help)")
	}
	if c.DataDir != "" && c.NoFiles {
		return cmdline.Usagef("verify: --data-dir and --no-files cannot be used together")
	}
	ck := &checker{dataDir: c.DataDir, noFiles: c.NoFiles, notes: stderr}
	if c.Pubkey != "" {
		pub, err := audit.LoadPublicKey(c.Pubkey)
		if err != nil {
			return cmdline.Usagef("verify: --pubkey: %v", err)
		}
		ck.pub = pub
	}
	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	ck.report = func(p Problem) {
		if c.Format == "json" {
			enc.Encode(p)
			return
		}
		fmt.Fprintln(out, p.text())
	}
	for _, name := range c.Journals {
		ck.journalFile(name)
	}
	s := ck.summary()
	if c.Format == "json" {
		enc.Encode(s)
	} else {
		fmt.Fprintln(out, s.text())
	}
	if err := out.Flush(); err != nil {
		return cmdline.Failf("verify: %v", err)
	}
	if s.Problems > 0 {
		return cmdline.Reported(cmdline.StatusFailure)
	}
	return nil
}

func (p Problem) text() string {
	if p.Seq != 0 {
		return fmt.Sprintf("%s:%d: seq %d: %s", p.Journal, p.Line, p.Seq, p.What)
	}
	return fmt.Sprintf("%s:%d: %s", p.Journal, p.Line, p.What)
}

func (s Summary) text() string {
	return fmt.Sprintf("%d %s, %d %s checked, %d %s",
		s.Entries, plural(s.Entries, "entry", "entries"), s.Files, plural(s.Files, "file", "files"), s.Problems, plural(s.Problems, "problem", "problems"))
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// checker checks journals in order, one chain across them.
type checker struct {
	pub     ed25519.PublicKey // nil: signatures are not checked
	dataDir string
	noFiles bool
	report  func(Problem)
	notes   io.Writer // remarks that are no problems (stderr)

	last     *audit.Entry // the last entry read, of any journal
	lastHash string
	lastAt   string  // where it is, "JOURNAL:LINE"
	bad      []int64 // lines of the current journal after the last entry that are not entries

	entries, files, problems int64
}

func (ck *checker) summary() Summary {
	return Summary{Entries: ck.entries, Files: ck.files, Problems: ck.problems}
}

func (ck *checker) problem(p Problem) {
	ck.problems++
	ck.report(p)
}

// journalFile checks the journal at path.
func (ck *checker) journalFile(path string) {
	f, err := os.Open(path)
	if err != nil {
		ck.problem(Problem{Journal: path, What: fmt.Sprintf("cannot read the journal: %v", bareErr(err))})
		return
	}
	defer f.Close()
	if err := ck.journal(path, f); err != nil {
		ck.problem(Problem{Journal: path, What: fmt.Sprintf("cannot read the journal: %v", bareErr(err))})
	}
}

// maxLine bounds a line: a longer one is not an entry, and is not kept.
const maxLine = 1 << 20

// journal checks the lines of the journal name, read from r.
func (ck *checker) journal(name string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	ck.bad = ck.bad[:0]
	var n int64
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		eol := err == nil
		if eol {
			chunk = chunk[:len(chunk)-1]
		}
		if len(line)+len(chunk) <= maxLine {
			line = append(line, chunk...)
		} else {
			line = append(line[:0], "\x00too long"...) // not an entry; the rest is not kept
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if eol || len(line) > 0 {
			n++
			ck.line(name, n, line, eol)
		}
		line = line[:0]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// line checks line number n of journal name, text without its newline;
// eol tells whether it had one.
func (ck *checker) line(name string, n int64, text []byte, eol bool) {
	e, err := audit.Parse(text)
	if err != nil {
		ck.bad = append(ck.bad, n)
		what := "not an entry"
		if !eol {
			what = "not an entry, and without its newline: a line torn by a crash, or cut off"
		}
		ck.problem(Problem{Journal: name, Line: n, What: fmt.Sprintf("%s: %v", what, err)})
		return
	}
	ck.entries++
	at := Problem{Journal: name, Line: n, Seq: e.Seq}
	report := func(format string, args ...any) {
		p := at
		p.What = fmt.Sprintf(format, args...)
		ck.problem(p)
	}
	if e.Recovered != 0 && !contains(ck.bad, e.Recovered) {
		report("recovered names line %d, which is not a torn line after the entry before", e.Recovered)
	}
	ck.chain(e, at, report)
	if ck.pub != nil {
		switch {
		case e.Sig == nil:
			report("unsigned")
		case !e.Verify(ck.pub):
			report("bad signature: the entry was changed, or signed with another key")
		}
	}
	if e.File != "" && !ck.noFiles {
		ck.checkFile(e, at)
	}
	ck.last, ck.lastHash, ck.lastAt = e, audit.LineHash(text), fmt.Sprintf("%s:%d", name, n)
	ck.bad = ck.bad[:0]
}

// chain checks e's seq and prev against the entry before.
func (ck *checker) chain(e *audit.Entry, at Problem, report func(string, ...any)) {
	if ck.last == nil {
		switch {
		case e.Seq == 1 && e.Prev != audit.ZeroHash:
			report("the first entry of a chain has a prev that is not 64 zeros")
		case e.Seq != 1:
			fmt.Fprintf(ck.notes, "ipprotd: %s:%d: note: the chain begins at seq %d; the journal before it was not given, so its prev is not checked\n", at.Journal, at.Line, e.Seq)
		}
		return
	}
	prev := ck.last.Seq
	switch {
	case e.Seq == prev+1 && e.Prev == ck.lastHash:
	case e.Seq == prev+1:
		report("prev is not the SHA-256 of the entry before (seq %d, %s): an entry was changed, replaced or inserted", prev, ck.lastAt)
	case e.Seq == 1:
		report("a new chain begins after seq %d (%s): the entries after it were lost, or a journal was begun anew", prev, ck.lastAt)
	case e.Seq > prev && e.Prev == ck.lastHash:
		report("follows seq %d (%s) and chains to it: its seq was changed", prev, ck.lastAt)
	case e.Seq > prev:
		missing := e.Seq - prev - 1
		report("follows seq %d (%s): %d %s missing", prev, ck.lastAt, missing, plural(int64(missing), "entry", "entries"))
	default:
		report("follows seq %d (%s): out of order or repeated", prev, ck.lastAt)
	}
}

// checkFile checks that e's data file exists with its size and SHA-256.
func (ck *checker) checkFile(e *audit.Entry, at Problem) {
	ck.files++
	path := e.File
	if ck.dataDir != "" {
		path = filepath.Join(ck.dataDir, filepath.Base(e.File))
	}
	at.File = path
	report := func(format string, args ...any) {
		p := at
		p.What = fmt.Sprintf("data file %s: ", path) + fmt.Sprintf(format, args...)
		ck.problem(p)
	}
	size, sum, err := hashFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		report("missing")
	case err != nil:
		report("cannot be read: %v", bareErr(err))
	case size != e.Size:
		report("%d bytes, the entry says %d", size, e.Size)
	case sum != e.SHA256:
		report("SHA-256 %s, the entry says %s", sum, e.SHA256)
	}
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// bareErr strips the path from an *fs.PathError: the problem names it.
func bareErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func contains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
