package e2e

import (
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPlantedNamesLeftAlone: at the names the daemon would use for its
// first connection in the next seconds, n=1 is a symlink to a file of
// value, n=2 a dangling symlink and n=3 a file of its own. The daemon
// follows, truncates or appends to none of them: the connection is
// recorded as n=4, and everything planted is as it was.
func TestPlantedNamesLeftAlone(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o600)
	prefix := filepath.Join(dir, "prot")
	now := time.Now().UTC()
	for s := -1; s <= 30; s++ {
		stamp := now.Add(time.Duration(s) * time.Second).Format("2006-01-02_150405")
		name := func(n int) string { return fmt.Sprintf("%s_%s_%d_127.0.0.1", prefix, stamp, n) }
		if err := os.Symlink(victim, name(1)); err != nil {
			t.Fatal(err)
		}
		os.Symlink(filepath.Join(dir, "nothing-here"), name(2))
		os.WriteFile(name(3), []byte("old\n"), 0o600)
	}
	up := startUpstream(t, echoHandler)
	d := startDaemonEnv(t, []string{"TZ=UTC"}, "-P", up.out(), "-L", "-f", prefix, "-c", dir+"/conn.log", "-C", "%N %x %f%n")
	if got, err := exchange(d.addr(), []byte("new")); err != nil || string(got) != "new" {
		t.Fatalf("exchange: %q, %v", got, err)
	}
	line := connLogLine(t, dir+"/conn.log", 1)
	d.stop()
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "1" || f[1] != "ok" || !strings.HasSuffix(f[2], "_4_127.0.0.1") {
		t.Fatalf("log line %q; want connection 1, ok, recorded as _4_", line)
	}
	if got, _ := os.ReadFile(f[2]); string(got) != "newnew" {
		t.Errorf("recording %q; want \"newnew\"", got)
	}
	fi, err := os.Lstat(f[2])
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 {
		t.Errorf("recording: %v, %v; want a regular file of mode 0640", fi.Mode(), err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Errorf("the symlink's target now holds %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nothing-here")); !os.IsNotExist(err) {
		t.Errorf("the dangling symlink's target was created (%v)", err)
	}
	planted, _ := filepath.Glob(prefix + "_*_[123]_127.0.0.1")
	for _, p := range planted {
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			t.Error(err)
		case strings.HasSuffix(p, "_3_127.0.0.1"):
			if got, _ := os.ReadFile(p); !fi.Mode().IsRegular() || string(got) != "old\n" {
				t.Errorf("%s: %v %q; want the planted file untouched", p, fi.Mode(), got)
			}
		case fi.Mode()&os.ModeSymlink == 0:
			t.Errorf("%s is no longer a symlink", p)
		}
	}
	if len(planted) != 3*32 {
		t.Errorf("%d planted names left; want %d", len(planted), 3*32)
	}
}

// TestEMFILEWhileRecording: with 64 descriptors and -l -f, 80 clients at
// once run the daemon out of descriptors at accept, at the dial and at the
// data file. Whatever
// fails, nothing is forwarded unrecorded: every payload the destination
// received is in a data file, every session has one line, and each failure
// is one of the documented outcomes.
func TestEMFILEWhileRecording(t *testing.T) {
	testkit.Need(t, "prlimit")
	const n = 80
	dir := t.TempDir()
	results := make(chan received, n)
	up := startUpstream(t, collectEcho(results))
	port := testkit.FreePort(t)
	d := startCommand(t, port, exec.Command("prlimit", "--nofile=64:64", binary, "-p", fmt.Sprintf("%d@127.0.0.1", port),
		"-P", up.out(), "-l", "-f", dir+"/prot", "-c", dir+"/conn.log", "-C", "%N %x %f%n"))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go emfileClient(d.addr(), fmt.Sprintf("payload %02d\n", i), start, &wg)
	}
	close(start)
	wg.Wait()
	lines := waitLines(t, dir+"/conn.log", n)
	if len(d.logLines(`"accept failed, retrying"`)) == 0 {
		t.Logf("no accept failed for lack of descriptors this time")
	}
	d.stop()

	recorded := map[string]bool{}
	outcomes := map[string]int{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Errorf("log line %q", l)
			continue
		}
		outcomes[f[1]]++
		switch f[1] {
		case "ok", "connect-failed", "record-error", "aborted":
		default:
			t.Errorf("log line %q: unexpected outcome", l)
		}
		if f[2] != "-" {
			b, err := os.ReadFile(f[2])
			if err != nil {
				t.Errorf("%s: %v", l, err)
			}
			recorded[string(b)] = true
		} else if f[1] == "ok" || f[1] == "aborted" {
			t.Errorf("log line %q: a relayed session without a data file", l)
		}
	}
	up.close() // every handler has reported
	close(results)
	forwarded := 0
	for r := range results {
		if len(r.data) == 0 {
			continue
		}
		forwarded++
		if !recorded[string(r.data)] {
			t.Errorf("the destination got %q, which no data file holds", r.data)
		}
	}
	t.Logf("outcomes %v; %d payloads forwarded, each recorded", outcomes, forwarded)
	for _, l := range d.logLines("connection") {
		if strings.Contains(l, " outcome=aborted ") {
			t.Logf("%s", l)
		}
	}
	if outcomes["ok"] == 0 || forwarded < outcomes["ok"] {
		t.Errorf("%d ok sessions, %d payloads forwarded; want some ok, each forwarded", outcomes["ok"], forwarded)
	}
}

// emfileClient sends payload, half-closes and reads to the end, giving up
// after 60 s; what happens to it is judged from the daemon's side.
func emfileClient(addr, payload string, start <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	<-start
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	c.Write([]byte(payload))
	c.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}
