package recorder

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// TestHelperProcess is not a test: it is the process that TestKill and
// TestMemory start (the GO_WANT_HELPER_PROCESS pattern). Its arguments
// follow "--".
func TestHelperProcess(t *testing.T) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") != "1" {
		return
	}
	args := flag.Args()
	var err error
	switch args[0] {
	case "record":
		err = helperRecord(args[1], args[2])
	case "memory":
		err = helperMemory(args[1], args[2])
	default:
		err = fmt.Errorf("unknown helper %q", args[0])
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helper(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "GO_WANT_HELPER_PROCESS=1")
	cmd.Stderr = os.Stderr
	return cmd
}

func parseCompression(s string) datafile.Compression {
	for _, cc := range compressions {
		if cc.name == s {
			return cc.c
		}
	}
	return datafile.None
}

// streamBlock returns the next block of the known stream that the record
// helper records: 1 byte to 16 KiB of text with some noise.
func streamBlock(rng *rand.Rand) []byte {
	p := make([]byte, 1+rng.IntN(16<<10))
	for i := range p {
		if rng.IntN(8) == 0 {
			p[i] = byte(rng.Uint32())
		} else {
			p[i] = "abcdefgh \n"[rng.IntN(10)]
		}
	}
	return p
}

// helperRecord records the known stream for ever with a 20 ms flush
// interval, and prints "flushed N" after every timed flush, where N is a
// count of bytes that flush brought into the file.
func helperRecord(comp, dir string) error {
	o, err := New(Config{Prefix: filepath.Join(dir, "prot"), Record: [2]bool{datafile.Out: true}, Compression: parseCompression(comp), FlushInterval: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	defer o.Close()
	r, err := o.Open(Conn{N: 1, Start: time.Now()})
	if err != nil {
		return err
	}
	var done atomic.Int64
	r.mu.Lock()
	r.afterFlush = func() {
		// Under the recorder's lock: every Record counted in done has
		// finished before this flush began, so the flush covered it.
		fmt.Printf("flushed %d\n", done.Load())
	}
	r.mu.Unlock()
	fmt.Printf("path %s\n", r.Path())
	rng := rand.New(rand.NewPCG(42, 42))
	for {
		p := streamBlock(rng)
		if err := r.Record(datafile.Out, p); err != nil {
			return err
		}
		done.Add(int64(len(p)))
	}
}

// TestKill records a known stream in a helper process, kills it with
// SIGKILL after some timed flushes, and checks that gzip -dc / bzip2 -dc
// give back a byte-exact prefix of the stream that covers at least
// everything the last reported flush covered.
func TestKill(t *testing.T) {
	for _, cc := range compressions[1:] {
		t.Run(cc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := helper(t, "record", cc.name, dir)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var path string
			var flushed int64
			flushes := 0
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 2 && f[0] == "path":
					path = f[1]
				case len(f) == 2 && f[0] == "flushed":
					n, err := strconv.ParseInt(f[1], 10, 64)
					if err != nil {
						t.Errorf("helper said %q", sc.Text())
					}
					flushed = max(flushed, n)
					if flushes++; flushes == 8 {
						// Let it run on a little, so the kill lands at a
						// different point of the stream in each run.
						time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
						cmd.Process.Signal(syscall.SIGKILL)
					}
				default:
					t.Errorf("helper said %q", sc.Text())
				}
			}
			err = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("helper ended with %v, not by SIGKILL", err)
			}
			if path == "" || flushes < 8 {
				t.Fatalf("helper reported path %q and %d flushes", path, flushes)
			}
			got, derr := decompress(t, path, cc.c)
			rng := rand.New(rand.NewPCG(42, 42))
			var want []byte
			for len(want) < len(got) {
				want = append(want, streamBlock(rng)...)
			}
			if !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("recovered data is not a prefix of the stream: %s", firstDiff(got, want[:len(got)]))
			}
			if int64(len(got)) < flushed {
				t.Errorf("recovered %d bytes; the last flush covered %d", len(got), flushed)
			}
			t.Logf("recovered %d bytes, last reported flush %d bytes; tool: %v", len(got), flushed, derr)
		})
	}
}

// helperMemory opens 1000 recorders and records 4 KiB blocks from a
// goroutine each, with 100 ms flushes, then prints its peak RSS, heap and
// goroutines while all are open, and closes them.
func helperMemory(comp, rounds string) error {
	const sessions = 1000
	n, err := strconv.Atoi(rounds)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "recorder-memory")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o, err := New(Config{Prefix: filepath.Join(dir, "prot"), Record: [2]bool{true, true}, BlockStamps: true, Compression: parseCompression(comp), FlushInterval: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	defer o.Close()
	corpus := textCorpus(4 << 20)
	recs := make([]*Recorder, sessions)
	for i := range recs {
		if recs[i], err = o.Open(Conn{N: uint64(i + 1), Start: time.Now(), Client: netip.MustParseAddr("192.0.2.1")}); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i, r := range recs {
		wg.Go(func() { errs <- feed(r, corpus, i, n) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fmt.Printf("open %d goroutines %d heapinuse_mb %d sys_mb %d %s\n",
		sessions, runtime.NumGoroutine(), m.HeapInuse>>20, m.Sys>>20, vmHWM())
	for _, r := range recs {
		if err := r.Close(); err != nil {
			return err
		}
	}
	fmt.Printf("closed goroutines %d\n", runtime.NumGoroutine())
	return nil
}

// feed records n 4 KiB blocks of corpus on r, each followed by a pause.
func feed(r *Recorder, corpus []byte, i, n int) error {
	rng := rand.New(rand.NewPCG(uint64(i), 3))
	for range n {
		off := rng.IntN(len(corpus) - 4096)
		if err := r.Record(datafile.Direction(rng.IntN(2)), corpus[off:off+4096]); err != nil {
			return err
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
	return nil
}

// vmHWM returns the process's peak resident set size line.
func vmHWM() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "vmhwm unknown"
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			return "vmhwm_kb " + f[1]
		}
	}
	return "vmhwm unknown"
}

// textCorpus returns n bytes of Go source from GOROOT: text that
// compresses like protocol traffic does, the same in every run.
func textCorpus(n int) []byte {
	var b []byte
	filepath.WalkDir(filepath.Join(runtime.GOROOT(), "src", "net"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && len(b) < n {
			data, _ := os.ReadFile(p)
			b = append(b, data...)
		}
		return nil
	})
	for len(b) < n {
		b = append(b, b...)
	}
	return b[:n]
}

// TestMemory opens 1,000 compressed recorders in a helper process,
// records on all of them at once and checks the peak RSS stays well under
// 1 GiB (the figure is logged), and that Close leaves no goroutine behind.
func TestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the 1,000-session memory test takes seconds")
	}
	if raceEnabled {
		t.Skip("memory figures under -race are the race detector's; run without -race")
	}
	for _, cc := range compressions {
		t.Run(cc.name, func(t *testing.T) {
			rounds := "40"
			if cc.c == datafile.Bzip2 {
				rounds = "8" // 32 MB through bzip2 takes seconds
			}
			out, err := helper(t, "memory", cc.name, rounds).Output()
			if err != nil {
				t.Fatalf("helper: %v: %s", err, out)
			}
			t.Logf("%s", bytes.TrimSpace(out))
			var goroutines, heap, sys, hwm, after int
			if _, err := fmt.Sscanf(string(out), "open 1000 goroutines %d heapinuse_mb %d sys_mb %d vmhwm_kb %d\nclosed goroutines %d",
				&goroutines, &heap, &sys, &hwm, &after); err != nil {
				t.Fatalf("helper said %q: %v", out, err)
			}
			if hwm > 512<<10 {
				t.Errorf("peak RSS %d MiB with 1000 sessions; want well under 1 GiB (< 512 MiB)", hwm>>10)
			}
			if after > 3 {
				t.Errorf("%d goroutines after closing all recorders", after)
			}
		})
	}
}
