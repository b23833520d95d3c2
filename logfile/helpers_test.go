package logfile

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary runs as a helper process when helperEnv names a helper;
// helperPathEnv is the log's path.
const (
	helperEnv     = "CONNLOG_TEST_HELPER"
	helperPathEnv = "CONNLOG_TEST_PATH"
)

// runHelper runs the helper named mode and returns the exit status.
func runHelper(mode string) int {
	path := os.Getenv(helperPathEnv)
	var err error
	switch mode {
	case "short-write":
		err = helperShortWrite(path)
	case "write-entries":
		err = helperWriteEntries(path)
	default:
		err = fmt.Errorf("unknown helper %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// shortWriteLimit is the file size limit of the short-write helper.
const shortWriteLimit = 100

// helperShortWrite limits the size of files this process writes to
// shortWriteLimit bytes, writes a longer entry and prints Write's error.
func helperShortWrite(path string) error {
	log, err := Open(path, "connection log")
	if err != nil {
		return err
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	lim.Cur = shortWriteLimit
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	fmt.Print(writeErr(log.Write(bytes.Repeat([]byte("x"), shortWriteLimit+50))))
	return log.Close()
}

// helperWriteEntries writes the entries of straceEntries.
func helperWriteEntries(path string) error {
	log, err := Open(path, "connection log")
	if err != nil {
		return err
	}
	for _, e := range straceEntries() {
		if _, err := log.Write(e); err != nil {
			return err
		}
	}
	return log.Close()
}

// straceEntries are entries from a few bytes to 4 MiB, each starting with a
// marker strace shows.
func straceEntries() [][]byte {
	var entries [][]byte
	for i, size := range []int{32, 4096, 100000, 4 << 20} {
		e := fmt.Appendf(nil, "connlog-strace-%d ", i)
		e = append(e, bytes.Repeat([]byte{'a' + byte(i)}, size-len(e)-1)...)
		entries = append(entries, append(e, '\n'))
	}
	return entries
}

// helperCommand returns a command that runs the test binary as helper mode
// on the log at path.
func helperCommand(t *testing.T, mode, path string, prefix ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(prefix, exe, "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperPathEnv+"="+path)
	return cmd
}

// TestShortWriteIsError makes the kernel write only part of an entry (a file
// size limit) and checks that Write reports it rather than writing the rest
// in a second call.
func TestShortWriteIsError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conn.log")
	cmd := helperCommand(t, "short-write", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, stderr.Bytes())
	}
	want := fmt.Sprintf("write connection log %s: wrote %d of %d bytes: short write", path, shortWriteLimit, shortWriteLimit+50)
	if string(out) != want {
		t.Errorf("got %q; want %q", out, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != shortWriteLimit {
		t.Errorf("got %d bytes in the file; want %d", len(data), shortWriteLimit)
	}
}

// TestOneWriteSyscallPerEntry traces a process writing entries of up to
// 4 MiB with strace and counts one write(2) per entry.
func TestOneWriteSyscallPerEntry(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "conn.log")
	trace := filepath.Join(dir, "trace")
	cmd := helperCommand(t, "write-entries", path,
		"strace", "-f", "-qq", "-e", "trace=write", "-e", "signal=none", "-s", "20", "-o", trace)
	if out, err := cmd.CombinedOutput(); err != nil {
		if bytes.Contains(out, []byte("ptrace")) {
			t.Skipf("strace cannot trace here: %s", out)
		}
		t.Fatalf("strace helper: %v: %s", err, out)
	}
	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	lines := joinResumed(string(data))
	entries := straceEntries()
	for i, e := range entries {
		marker := fmt.Sprintf(`"connlog-strace-%d `, i)
		var calls []string
		for _, line := range lines {
			if strings.Contains(line, " write(") && strings.Contains(line, marker) {
				calls = append(calls, strings.Join(strings.Fields(line), " ")) // strace aligns "= n"
			}
		}
		if len(calls) != 1 {
			t.Errorf("entry %d (%d bytes): got %d write calls %q; want 1", i, len(e), len(calls), calls)
			continue
		}
		if want := fmt.Sprintf(", %d) = %d", len(e), len(e)); !strings.HasSuffix(calls[0], want) {
			t.Errorf("entry %d: got call %q; want one ending %q", i, calls[0], want)
		}
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(entries, nil); !bytes.Equal(data, want) {
		t.Errorf("got %d bytes in the log; want the %d bytes of the entries", len(data), len(want))
	}
}

// joinResumed returns the lines of an strace -f output, a call that another
// thread interrupted ("<unfinished ...>" … "<... write resumed>") joined into
// one line.
func joinResumed(trace string) []string {
	var lines []string
	unfinished := make(map[string]string) // pid → the call's first part
	for line := range strings.Lines(trace) {
		line = strings.TrimSpace(line)
		pid, rest, _ := strings.Cut(line, " ")
		if call, ok := strings.CutSuffix(line, " <unfinished ...>"); ok {
			unfinished[pid] = call
			continue
		}
		if _, tail, ok := strings.Cut(rest, " resumed>"); ok {
			line = unfinished[pid] + tail
			delete(unfinished, pid)
		}
		lines = append(lines, line)
	}
	return lines
}

// TestJoinResumed checks the joining of interrupted strace calls that
// TestOneWriteSyscallPerEntry relies on.
func TestJoinResumed(t *testing.T) {
	trace := `123  write(3, "connlog-strace-0 aaa"..., 32 <unfinished ...>
124  write(1, "x", 1)                   = 1
123  <... write resumed>)               = 32
`
	want := []string{
		`124  write(1, "x", 1)                   = 1`,
		`123  write(3, "connlog-strace-0 aaa"..., 32)               = 32`,
	}
	got := joinResumed(trace)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q; want %q", got, want)
	}
}

// writeErr is the error of a Write.
func writeErr(_ int, err error) error { return err }
