package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

// The tests of this file drive --audit-log, --audit-key and ipprotd
// verify (SPEC §7 %h, §9) through the binary.

// auditKeys makes an Ed25519 key pair with openssl, as the manual says:
// the private key (PKCS#8 PEM) and the public key (PEM).
func auditKeys(t *testing.T) (key, pub string) {
	t.Helper()
	testkit.Need(t, "openssl")
	dir := t.TempDir()
	key, pub = filepath.Join(dir, "audit.key"), filepath.Join(dir, "audit.pub")
	run(t, "openssl", "genpkey", "-algorithm", "ed25519", "-out", key)
	run(t, "openssl", "pkey", "-in", key, "-pubout", "-out", pub)
	os.Chmod(key, 0o600)
	return key, pub
}

// verifyRun runs `ipprotd verify args…` and returns its stdout, stderr
// and exit status.
func verifyRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(binary, append([]string{"verify"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// journalEntry is what the tests read of a journal line.
type journalEntry struct {
	Seq       uint64  `json:"seq"`
	Client    string  `json:"client"`
	Outcome   string  `json:"outcome"`
	BytesIn   int64   `json:"bytes_in"`
	BytesOut  int64   `json:"bytes_out"`
	File      *string `json:"file"`
	Size      *int64  `json:"size"`
	SHA256    *string `json:"sha256"`
	Prev      string  `json:"prev"`
	Recovered int64   `json:"recovered"`
	Sig       string  `json:"sig"`
}

func parseEntry(t *testing.T, line string) journalEntry {
	t.Helper()
	var e journalEntry
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("journal line %q: %v", line, err)
	}
	return e
}

// exchanges runs n echo exchanges through d and waits until the journal
// has want lines.
func exchanges(t *testing.T, d *daemon, n int, journal string, want int) []string {
	t.Helper()
	for i := range n {
		if _, err := exchange(d.addr(), []byte(fmt.Sprintf("exchange %d\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	return waitLines(t, journal, want)
}

// TestHashAgrees: for plain, gzip'd and bzip2'd recordings, sha256sum of
// the data file, the connection log's %h, the hook's IPPROT_SHA256 and the
// journal's sha256 are the same, and so are the sizes; the hook finds the
// connection's entry in the journal already.
func TestHashAgrees(t *testing.T) {
	testkit.Need(t, "sha256sum")
	for _, mode := range []string{"plain", "-z", "-j"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			journal := filepath.Join(dir, "audit.log")
			hook := writeScript(t, fmt.Sprintf(`in=no; grep -qF "\"file\":\"$1\"" %s && in=yes
printf '%%s %%s\n' "$IPPROT_SHA256" "$in" > %s/hook.$IPPROT_CONN
`, journal, dir))
			args := []string{"-L", "-M", "-f", filepath.Join(dir, "prot"), "-c", filepath.Join(dir, "conn.log"), "-C", "%N %h %f%n",
				"-u", hook, "--audit-log", journal}
			if mode != "plain" {
				args = append(args, mode)
			}
			up := startUpstream(t, echoHandler)
			d := startDaemon(t, append(args, "-P", up.out())...)
			msg := bytes.Repeat([]byte("SELECT 1;\n"), 5000)
			if got, err := exchange(d.addr(), msg); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("exchange: %d bytes, %v", len(got), err)
			}
			hookOut := waitLines(t, filepath.Join(dir, "hook.1"), 1)[0]
			d.stop()
			entry := parseEntry(t, readLines(t, journal)[0])
			logFields := strings.Fields(readLines(t, filepath.Join(dir, "conn.log"))[0])
			file := logFields[2]
			sum := strings.Fields(string(run(t, "sha256sum", file)))[0]
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if logFields[1] != sum || hookOut != sum+" yes" || entry.SHA256 == nil || *entry.SHA256 != sum ||
				entry.File == nil || *entry.File != file || entry.Size == nil || *entry.Size != fi.Size() {
				t.Errorf("sha256sum %s (%d bytes); %%h %s; hook %q; journal %+v: want the same sum and size everywhere, and the entry in the journal before the hook ran",
					sum, fi.Size(), logFields[1], hookOut, entry)
			}
		})
	}
}

// TestJournalAcrossRestartRotationAndTear: one chain through a restart, a
// logrotate-style rename and SIGHUP, and a line torn as by a crash; ipprotd
// verify checks it whole across the files, reporting only the torn line.
func TestJournalAcrossRestartRotationAndTear(t *testing.T) {
	key, pub := auditKeys(t)
	dir := t.TempDir()
	journal := filepath.Join(dir, "audit.log")
	up := startUpstream(t, echoHandler)
	args := []string{"-P", up.out(), "-L", "-f", filepath.Join(dir, "prot"), "--audit-log", journal, "--audit-key", key}

	d := startDaemon(t, args...)
	exchanges(t, d, 2, journal, 2)
	d.stop()

	// Restart: the chain goes on.
	d = startDaemon(t, args...)
	exchanges(t, d, 2, journal, 4)

	// Rotation: the file is moved, SIGHUP, the chain goes on in the new one.
	if err := os.Rename(journal, journal+".1"); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	d.waitLog(`"reloaded after SIGHUP"`, 1)
	exchanges(t, d, 2, journal, 2)
	d.stop()
	if out, stderr, code := verifyRun(t, "--pubkey", pub, journal+".1", journal); code != 0 || out != "6 entries, 6 files checked, 0 problems\n" {
		t.Fatalf("verify after restart and rotation: status %d\n%s%s", code, out, stderr)
	}
	if out, _, code := verifyRun(t, "--pubkey", pub, journal, journal+".1"); code != 1 || !strings.Contains(out, "a new chain begins after seq 6") {
		t.Errorf("verify of the files in the wrong order: status %d\n%s; want 1, a new chain after seq 6", code, out)
	}

	// A crash tears the last line: the next daemon leaves it, ends it
	// with a newline, and its first entry names it as recovered.
	b, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journal, b[:len(b)-100], 0o640); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, args...)
	lines := exchanges(t, d, 1, journal, 3)
	d.stop()
	first, last := parseEntry(t, lines[0]), parseEntry(t, lines[2])
	if first.Seq != 5 || last.Seq != 6 || last.Recovered != 2 {
		t.Errorf("after the tear: seq %d, then seq %d recovered %d; want 5, then 6 (the torn line's seq again) recovered 2", first.Seq, last.Seq, last.Recovered)
	}
	out, _, code := verifyRun(t, "--pubkey", pub, journal+".1", journal)
	want := journal + ":2: not an entry: not a journal entry: unexpected EOF\n6 entries, 6 files checked, 1 problem\n"
	if code != 1 || out != want {
		t.Errorf("verify after the tear: status %d\n%s\nwant 1\n%s", code, out, want)
	}
}

// TestVerifyFindsTampering: ipprotd verify --pubkey finds each kind of
// tampering with a journal the daemon wrote and its recordings, and names
// the line, the seq and the data file.
func TestVerifyFindsTampering(t *testing.T) {
	key, pub := auditKeys(t)
	dir := t.TempDir()
	journal := filepath.Join(dir, "audit.log")
	up := startUpstream(t, echoHandler)
	d := startDaemon(t, "-P", up.out(), "-L", "-z", "-f", filepath.Join(dir, "prot"), "--audit-log", journal, "--audit-key", key)
	lines := exchanges(t, d, 5, journal, 5)
	d.stop()
	if out, _, code := verifyRun(t, "--pubkey", pub, journal); code != 0 {
		t.Fatalf("verify of the untouched journal: status %d\n%s", code, out)
	}
	entries := make([]journalEntry, len(lines))
	for i, l := range lines {
		entries[i] = parseEntry(t, l)
	}
	original, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	setLines := func(l []string) { os.WriteFile(journal, []byte(strings.Join(l, "\n")+"\n"), 0o640) }
	bad := func(n int) string {
		return fmt.Sprintf("%s:%d: seq %d: bad signature: the entry was changed, or signed with another key", journal, n, n)
	}
	tests := []struct {
		name   string
		tamper func()
		undo   func()
		want   []string
	}{
		{"a flipped byte in a recording", func() {
			f := *entries[2].File
			b, _ := os.ReadFile(f)
			b[len(b)/2] ^= 1
			os.WriteFile(f, b, 0o640)
		}, func() {
			f := *entries[2].File
			b, _ := os.ReadFile(f)
			b[len(b)/2] ^= 1
			os.WriteFile(f, b, 0o640)
		}, []string{fmt.Sprintf("%s:3: seq 3: data file %s: SHA-256 ", journal, *entries[2].File)}},
		{"a deleted line", func() { setLines(append(lines[:1:1], lines[2:]...)) }, nil,
			[]string{fmt.Sprintf("%s:2: seq 3: follows seq 1 (%s:1): 1 entry missing", journal, journal)}},
		{"an inserted line", func() { setLines(append(lines[:2:2], append([]string{lines[1]}, lines[2:]...)...)) }, nil,
			[]string{fmt.Sprintf("%s:3: seq 2: follows seq 2 (%s:2): out of order or repeated", journal, journal)}},
		{"reordered lines", func() { setLines([]string{lines[0], lines[2], lines[1], lines[3], lines[4]}) }, nil,
			[]string{
				fmt.Sprintf("%s:2: seq 3: follows seq 1 (%s:1): 1 entry missing", journal, journal),
				fmt.Sprintf("%s:3: seq 2: follows seq 3 (%s:2): out of order or repeated", journal, journal),
				fmt.Sprintf("%s:4: seq 4: follows seq 2 (%s:3): 1 entry missing", journal, journal),
			}},
		{"an edited field", func() {
			l := append([]string(nil), lines...)
			l[1] = strings.Replace(l[1], `"outcome":"ok"`, `"outcome":"aborted"`, 1)
			setLines(l)
		}, nil, []string{bad(2), fmt.Sprintf("%s:3: seq 3: prev is not the SHA-256 of the entry before (seq 2, %s:2)", journal, journal)}},
		{"an edited field, the chain recomputed without the key", func() {
			l := append([]string(nil), lines...)
			l[1] = strings.Replace(l[1], `"outcome":"ok"`, `"outcome":"aborted"`, 1)
			for i := 2; i < len(l); i++ {
				sum := sha256hex([]byte(l[i-1]))
				l[i] = strings.Replace(l[i], `"prev":"`+entries[i].Prev+`"`, `"prev":"`+sum+`"`, 1)
			}
			setLines(l)
		}, nil, []string{bad(2), bad(3), bad(4), bad(5)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.tamper()
			defer os.WriteFile(journal, original, 0o640)
			if tc.undo != nil {
				defer tc.undo()
			}
			out, stderr, code := verifyRun(t, "--pubkey", pub, journal)
			if !problemLines(out, tc.want) || code != 1 {
				t.Errorf("status %d\n%s%s\nwant status 1, lines beginning\n%s", code, out, stderr, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestJournalUnwritable: with the journal's file system full, a
// connection that ends waits for its entry (its hook does not run), new
// connections are refused (reset, no dial), and the failure is logged;
// once space is free the waiting entries are written, the hook runs and
// connections are admitted again. The journal then verifies clean.
func TestJournalUnwritable(t *testing.T) {
	key, pub := auditKeys(t)
	disk := mountTmpfs(t, "64k")
	dir := t.TempDir()
	journal := filepath.Join(disk, "audit.log")
	hook := writeScript(t, fmt.Sprintf(": > %s/hook.$IPPROT_CONN\n", dir))
	counter := &countingEcho{}
	up := startUpstream(t, counter.handle)
	d := startDaemon(t, "-P", up.out(), "-L", "-f", filepath.Join(dir, "prot"), "-u", hook,
		"--audit-log", journal, "--audit-key", key)

	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)
	if _, err := exchange(d.addr(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	d.waitLog(`"audit journal cannot be written; new connections are refused and ending ones wait until it can"`, 1)
	accepted := counter.accepted.Load()
	if _, err := exchange(d.addr(), []byte("refused")); !isReset(err) {
		t.Errorf("a connection while the journal is full: %v; want a reset", err)
	}
	if n := counter.accepted.Load(); n != accepted {
		t.Errorf("the destination accepted %d connections while the journal was full; want none", n-accepted)
	}
	refused := d.waitLog("connection", 2)[1]
	if !strings.Contains(refused, "outcome=rejected") || !strings.Contains(refused, "refused while the audit journal cannot be written") {
		t.Errorf("log line of the refused connection %q; want rejected, with the reason", refused)
	}
	if _, err := os.Stat(filepath.Join(dir, "hook.1")); err == nil {
		t.Errorf("the hook of connection 1 ran before its audit entry was written")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.waitLog(`"audit journal written again; new connections are admitted"`, 1)
	waitFile(t, filepath.Join(dir, "hook.1"))
	if _, err := exchange(d.addr(), []byte("after")); err != nil {
		t.Fatal(err)
	}
	lines := waitLines(t, journal, 3)
	d.stop()
	outcomes := []string{parseEntry(t, lines[0]).Outcome, parseEntry(t, lines[1]).Outcome, parseEntry(t, lines[2]).Outcome}
	if strings.Join(outcomes, " ") != "ok rejected ok" {
		t.Errorf("journal outcomes %q; want ok rejected ok", outcomes)
	}
	if out, stderr, code := verifyRun(t, "--pubkey", pub, journal); code != 0 {
		t.Errorf("verify: status %d\n%s%s", code, out, stderr)
	}
}

// problemLines reports whether verify's output out is one line beginning
// with each of want, in order, and the summary with their number.
func problemLines(out string, want []string) bool {
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(got) != len(want)+1 {
		return false
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			return false
		}
	}
	problems := fmt.Sprintf(", %d problems", len(want))
	if len(want) == 1 {
		problems = ", 1 problem"
	}
	return strings.HasSuffix(got[len(want)], problems)
}

// fileSHA256 returns the SHA-256 of the file at path, in lowercase hex.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256hex(b)
}

func sha256hex(p []byte) string {
	sum := sha256.Sum256(p)
	return hex.EncodeToString(sum[:])
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// TestAuditUsage: a bad key and a journal held by another daemon are
// refused at start, with the option named.
func TestAuditUsage(t *testing.T) {
	dir := t.TempDir()
	notKey := filepath.Join(dir, "key.pem")
	os.WriteFile(notKey, []byte("not a key\n"), 0o600)
	out, err := exec.Command(binary, "-p", "1@127.0.0.1", "--audit-log", filepath.Join(dir, "a.log"), "--audit-key", notKey).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || string(out) != "ipprotd: --audit-key: "+notKey+": no PEM block (openssl genpkey -algorithm ed25519 makes the file)\n" {
		t.Errorf("bad key: %v %q; want exit 2 and one line naming --audit-key", err, out)
	}

	journal := filepath.Join(dir, "audit.log")
	up := startUpstream(t, echoHandler)
	startDaemon(t, "-P", up.out(), "--audit-log", journal)
	out, err = exec.Command(binary, "-p", fmt.Sprint(testkit.FreePort(t))+"@127.0.0.1", "--audit-log", journal).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "--audit-log: "+journal+": another process writes this journal") {
		t.Errorf("second daemon on the journal: %v %q; want exit 1, refused", err, out)
	}
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not exist after 30 s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
