package e2e

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The load test's sessions. Each sends a random number of bytes each way
// (0–256 KiB), written in random pieces, and the two sides end their
// sending in a random order.
const (
	loadSessions = 1000
	loadMaxSize  = 256 << 10
	headerSize   = 16 // "IPPROTLD", then the session's index
)

// Half-close orders.
const (
	clientFirst = iota // the client sends all and half-closes; then the server answers
	serverFirst        // the server answers after the header and half-closes; then the client sends the rest
	together           // both send at once and half-close when done
	modes
)

// loadPlan is what one session sends each way. up is the header and a
// slice of the pool (nothing at all for an anonymous session); down a
// slice of the pool.
type loadPlan struct {
	index int
	hdr   []byte // nil: the client sends nothing
	body  []byte
	down  []byte
	mode  int
	seed  uint64
}

func (p *loadPlan) upLen() int { return len(p.hdr) + len(p.body) }

// loadRun is the sessions of one run, with what each side found.
type loadRun struct {
	plans  []*loadPlan
	anon   []byte     // what the destination answers a client that sent nothing
	served chan error // one report per connection the destination served
	failed chan error // the clients' failures
	dialed atomic.Int64
	ports  []int // each session's client port, once it dialed
}

// newLoadRun draws n plans from seed over a pool of random bytes.
func newLoadRun(seed uint64, n int) *loadRun {
	pool := randomBytes(seed, 4<<20)
	r := rand.New(rand.NewPCG(seed, 1))
	run := &loadRun{anon: pool[:4321], served: make(chan error, n), failed: make(chan error, n), ports: make([]int, n)}
	for i := range n {
		p := &loadPlan{index: i, mode: r.IntN(modes), seed: r.Uint64()}
		if up := r.IntN(loadMaxSize + 1); r.IntN(20) != 0 && up >= headerSize {
			p.hdr = make([]byte, headerSize)
			copy(p.hdr, "IPPROTLD")
			putIndex(p.hdr[8:], uint64(i))
			off := r.IntN(len(pool) - loadMaxSize)
			p.body = pool[off : off+up-headerSize]
		}
		if p.hdr == nil {
			p.down = run.anon
		} else {
			down := r.IntN(loadMaxSize + 1)
			off := r.IntN(len(pool) - loadMaxSize)
			p.down = pool[off : off+down]
		}
		run.plans = append(run.plans, p)
	}
	return run
}

func putIndex(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func getIndex(b []byte) uint64 {
	var v uint64
	for i := range 8 {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// expect checks a stream against the concatenation of parts as it comes.
type expect struct {
	parts [][]byte
	off   int // bytes matched so far
	bad   bool
}

func (e *expect) total() int {
	n := 0
	for _, p := range e.parts {
		n += len(p)
	}
	return n
}

// feed compares p with the next bytes expected.
func (e *expect) feed(p []byte) {
	for len(p) > 0 && !e.bad {
		pos, i := e.off, 0
		for i < len(e.parts) && pos >= len(e.parts[i]) {
			pos -= len(e.parts[i])
			i++
		}
		if i == len(e.parts) {
			e.bad = true
			return
		}
		n := min(len(p), len(e.parts[i])-pos)
		if !bytes.Equal(p[:n], e.parts[i][pos:pos+n]) {
			e.bad = true
			return
		}
		e.off += n
		p = p[n:]
	}
}

// complete reports whether exactly the expected bytes came.
func (e *expect) complete() bool { return !e.bad && e.off == e.total() }

// writeChunks writes b in random pieces: mostly up to 32 KiB, sometimes a
// few bytes, now and then after a short pause.
func writeChunks(c *net.TCPConn, b []byte, r *rand.Rand) error {
	for len(b) > 0 {
		n := 1 + r.IntN(32<<10)
		if r.IntN(10) == 0 {
			n = 1 + r.IntN(64)
		}
		n = min(n, len(b))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if r.IntN(50) == 0 {
			time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
		}
	}
	return nil
}

// readExpect reads c to its end in random pieces, checking every byte.
func readExpect(c *net.TCPConn, e *expect, r *rand.Rand) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf[:1+r.IntN(len(buf))])
		e.feed(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// serve is the destination's side of a session.
func (run *loadRun) serve(c *net.TCPConn) {
	hdr := make([]byte, headerSize)
	n, err := io.ReadFull(c, hdr)
	if n == 0 && err == io.EOF {
		run.served <- run.answer(c, "anonymous", run.anon, rand.New(rand.NewPCG(uint64(len(run.anon)), 2)))
		return
	}
	if err != nil || !bytes.HasPrefix(hdr, []byte("IPPROTLD")) {
		run.served <- fmt.Errorf("destination: header %q: %v", hdr[:n], err)
		return
	}
	i := getIndex(hdr[8:])
	if i >= uint64(len(run.plans)) {
		run.served <- fmt.Errorf("destination: header names session %d", i)
		return
	}
	p := run.plans[i]
	r := rand.New(rand.NewPCG(p.seed, 3))
	in := &expect{parts: [][]byte{p.body}}
	name := fmt.Sprintf("session %d (mode %d) at the destination", i, p.mode)
	switch p.mode {
	case clientFirst:
		err = errors.Join(readExpect(c, in, r), run.answer(c, name, p.down, r))
	case serverFirst:
		err = errors.Join(run.answer(c, name, p.down, r), readExpect(c, in, r))
	case together:
		errc := make(chan error, 1)
		go answerTo(run, c, name, p.down, rand.New(rand.NewPCG(p.seed, 4)), errc)
		err = errors.Join(readExpect(c, in, r), <-errc)
	}
	if err == nil && !in.complete() {
		err = fmt.Errorf("%s: received %d bytes, matching=%v; want %d", name, in.off, !in.bad, in.total())
	}
	run.served <- err
}

func answerTo(run *loadRun, c *net.TCPConn, name string, b []byte, r *rand.Rand, errc chan<- error) {
	errc <- run.answer(c, name, b, r)
}

// answer sends b and half-closes.
func (run *loadRun) answer(c *net.TCPConn, name string, b []byte, r *rand.Rand) error {
	if err := writeChunks(c, b, r); err != nil {
		return fmt.Errorf("%s: write: %w", name, err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("%s: half-close: %w", name, err)
	}
	return nil
}

// client runs the client's side of session p once start is closed.
func (run *loadRun) client(addr string, p *loadPlan, start <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	name := fmt.Sprintf("session %d (mode %d, %d up, %d down) at the client", p.index, p.mode, p.upLen(), len(p.down))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		run.dialed.Add(1)
		run.failed <- fmt.Errorf("%s: %w", name, err)
		return
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	run.ports[p.index] = tc.LocalAddr().(*net.TCPAddr).Port
	run.dialed.Add(1)
	<-start
	in := &expect{parts: [][]byte{p.down}}
	readDone := make(chan error, 1)
	go readTo(tc, in, rand.New(rand.NewPCG(p.seed, 5)), readDone)
	r := rand.New(rand.NewPCG(p.seed, 6))
	var werr, rerr error
	switch {
	case p.hdr == nil:
		werr = tc.CloseWrite()
		rerr = <-readDone
	case p.mode == serverFirst:
		werr = writeChunks(tc, p.hdr, r)
		rerr = <-readDone // the destination's FIN comes before the rest
		werr = errors.Join(werr, writeChunks(tc, p.body, r), tc.CloseWrite())
	default:
		werr = errors.Join(writeChunks(tc, p.hdr, r), writeChunks(tc, p.body, r), tc.CloseWrite())
		rerr = <-readDone
	}
	if werr != nil || rerr != nil {
		run.failed <- fmt.Errorf("%s: write %v, read %v", name, werr, rerr)
		return
	}
	if !in.complete() {
		run.failed <- fmt.Errorf("%s: received %d bytes, matching=%v; want %d", name, in.off, !in.bad, in.total())
	}
}

func readTo(c *net.TCPConn, e *expect, r *rand.Rand, done chan<- error) {
	done <- readExpect(c, e, r)
}

// sampler keeps the highest usage seen of a process until stopped.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	peak usage
}

func sample(pid int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go s.run(pid)
	return s
}

func (s *sampler) run(pid int) {
	defer close(s.done)
	for {
		if u, ok := readUsage(pid); ok {
			s.peak.fds = max(s.peak.fds, u.fds)
			s.peak.rssKiB = max(s.peak.rssKiB, u.rssKiB)
			s.peak.threads = max(s.peak.threads, u.threads)
		}
		select {
		case <-s.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *sampler) end() usage {
	close(s.stop)
	<-s.done
	return s.peak
}

// readUsage reads a process's usage from /proc; false if it cannot
// (the process ended). The sampler's goroutine calls it without a test.
func readUsage(pid int) (usage, bool) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return usage{}, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, false
	}
	u := usage{fds: len(fds)}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			u.rssKiB = n
		case "Threads":
			u.threads = n
		}
	}
	return u, true
}

// goroutinesAtQuit ends the daemon with SIGQUIT (it runs with
// GOTRACEBACK=all) and returns, from the dump, the goroutines running
// ipprot's code, each by its innermost ipprot function.
func goroutinesAtQuit(t *testing.T, d *daemon) []string {
	t.Helper()
	d.signal(syscall.SIGQUIT)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatal("no exit after SIGQUIT")
	}
	dump := d.stderr.String()
	i := strings.Index(dump, "SIGQUIT: quit")
	if i < 0 {
		t.Fatalf("no goroutine dump after SIGQUIT:\n%s", dump)
	}
	var ours []string
	for _, g := range strings.Split(dump[i:], "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		for _, l := range strings.Split(g, "\n") {
			if strings.HasPrefix(l, "github.com/ipprot/ipprot/") || strings.HasPrefix(l, "main.") {
				ours = append(ours, l[:strings.LastIndexByte(l, '(')])
				break
			}
		}
	}
	return ours
}

// maxWaitingWorkers is proxy's maxIdleWorkers: goroutines that ran a
// session or a direction and wait for the next one, which belong to no
// connection.
const maxWaitingWorkers = 64

// withoutWaitingWorkers removes the goroutines whose innermost ipprot
// frame is the workers' loop, that is, workers waiting for work, and
// returns how many there were.
func withoutWaitingWorkers(goroutines []string) (rest []string, waiting int) {
	for _, g := range goroutines {
		if g == "github.com/ipprot/ipprot/proxy.(*workers).run" {
			waiting++
			continue
		}
		rest = append(rest, g)
	}
	return rest, waiting
}

// cpuTime is the user and system time pid has used so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// loadSeed is the seed of the load test: IPPROT_E2E_SEED, or the clock.
func loadSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IPPROT_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IPPROT_E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (repeat with IPPROT_E2E_SEED=%d)", seed, seed)
	return seed
}

// runSessions dials every session of run through addr, waits until all
// stand — the daemon holding, per session, its two sockets and its data
// file (fdsReady, if not zero) — and hold longer, then lets them all send
// at once, and reports every failure, at the clients or at the
// destination.
func runSessions(t *testing.T, addr string, run *loadRun, pid, fdsReady int, hold time.Duration) {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range run.plans {
		wg.Add(1)
		go run.client(addr, p, start, &wg)
	}
	deadline := time.Now().Add(120 * time.Second)
	for run.dialed.Load() < int64(len(run.plans)) || (fdsReady > 0 && usageOf(t, pid).fds < fdsReady) {
		if time.Now().After(deadline) {
			close(start)
			t.Fatalf("after 120 s, %d of %d sessions dialed, the daemon holds %d descriptors; want %d",
				run.dialed.Load(), len(run.plans), usageOf(t, pid).fds, fdsReady)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(hold)
	close(start)
	wg.Wait()
	close(run.failed)
	failures := 0
	report := func(err error) {
		if err != nil {
			if failures++; failures <= 20 {
				t.Error(err)
			}
		}
	}
	for err := range run.failed {
		report(err)
	}
	for range run.plans {
		select {
		case err := <-run.served:
			report(err)
		case <-time.After(60 * time.Second):
			t.Fatal("the destination did not report every session within 60 s")
		}
	}
	if failures > 20 {
		t.Errorf("… and %d failures more", failures-20)
	}
}

// checkLoadRecording decompresses a session's -z -M -L recording and checks
// that each direction's blocks give back exactly what that side sent.
func checkLoadRecording(t *testing.T, path string, p *loadPlan) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	rec, err := io.ReadAll(zr)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	blocks, err := parseBlocks(rec)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	in := &expect{parts: [][]byte{p.hdr, p.body}}
	out := &expect{parts: [][]byte{p.down}}
	for _, b := range blocks {
		if b.iso != "" {
			t.Errorf("%s: an ISO line without -t", path)
		}
		if b.marker == "848367" {
			in.feed(b.data)
		} else {
			out.feed(b.data)
		}
	}
	if !in.complete() || !out.complete() {
		t.Errorf("session %d's recording %s: client blocks %d bytes (matching=%v; want %d), server blocks %d (matching=%v; want %d)",
			p.index, path, in.off, !in.bad, in.total(), out.off, !out.bad, out.total())
	}
}

// loadArgs is the daemon's command line for the load test, recording into
// dir and forwarding to up.
func loadArgs(up *upstream, dir, hooks string) []string {
	return []string{"-P", up.out(), "-L", "-z", "-M", "-f", dir + "/data/prot",
		"-u", filepath.Join(hooks, "hook.sh"), "-c", dir + "/conn.log", "-C", "%N %p %x %r %w %f%n"}
}

// newLoadHook writes the load test's hook into a folder of its own, where
// each run leaves an empty file named by the connection's number.
func newLoadHook(t *testing.T) string {
	t.Helper()
	hooks := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\n: > %s/run.$IPPROT_CONN\n", hooks)
	if err := os.WriteFile(filepath.Join(hooks, "hook.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return hooks
}

// hookRunCount counts the runs the load hook left.
func hookRunCount(t *testing.T, hooks string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(hooks, "run.*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// TestLoadThousandSessions opens 1,000 sessions at once through
// -L -z -M with a hook and a connection log, then lets all of them send
// at the same moment: random sizes 0–256 KiB each way, random pieces,
// random half-close order. Every byte arrives unchanged both ways; every
// recording, decompressed and split at its block stamps, gives back
// exactly what each side sent; each session has one ok line with the
// right counts and one hook run. Afterwards the daemon holds the same
// descriptors as before, and no more goroutines than an idle daemon;
// memory and threads are reported. With IPPROT_E2E_HEAVY=1 the daemon runs
// under a soft memory limit and two more rounds follow; the third must not
// leave the daemon's memory higher than the second.
func TestLoadThousandSessions(t *testing.T) {
	testkit.Need(t, "gzip")
	n := loadSessions
	seed := loadSeed(t)
	var current atomic.Pointer[loadRun]
	up := startUpstream(t, func(c *net.TCPConn) { current.Load().serve(c) })
	env := []string{"GOTRACEBACK=all"}
	heavy := os.Getenv("IPPROT_E2E_HEAVY") != ""
	if heavy {
		env = append(env, "GOMEMLIMIT=256MiB")
	}
	const warm = 10
	// The warm-up sessions stand idle this long before they send, as the
	// load's sessions do while the others dial: long enough for the proxy
	// to park their idle directions (after 1 s), so that what parking
	// starts once is in the baseline.
	const idleHold = 2 * time.Second

	// An idle daemon of the same configuration, after a few sessions: the
	// goroutines a daemon keeps.
	idleDir, idleHooks := t.TempDir(), newLoadHook(t)
	idle := startDaemonEnv(t, env, loadArgs(up, idleDir, idleHooks)...)
	idleRun := newLoadRun(seed+1, warm)
	current.Store(idleRun)
	runSessions(t, idle.addr(), idleRun, 0, 0, idleHold)
	idle.waitLog(`"post-cmd exited"`, warm)
	idleGoroutines := goroutinesAtQuit(t, idle)

	// The daemon under test, warmed up the same way.
	dir, hooks := t.TempDir(), newLoadHook(t)
	d := startDaemonEnv(t, env, loadArgs(up, dir, hooks)...)
	warmRun := newLoadRun(seed+2, warm)
	current.Store(warmRun)
	runSessions(t, d.addr(), warmRun, 0, 0, idleHold)
	waitLines(t, dir+"/conn.log", warm)
	d.waitLog(`"post-cmd exited"`, warm)
	before := usageOf(t, d.pid())

	lr := newLoadRun(seed, n)
	current.Store(lr)
	s := sample(d.pid())
	start := time.Now()
	runSessions(t, d.addr(), lr, d.pid(), before.fds+3*n, 0)
	lines := waitLines(t, dir+"/conn.log", warm+n)[warm:]
	exits := d.waitLog(`"post-cmd exited"`, warm+n)
	took := time.Since(start)
	peak := s.end()

	after := settle(t, d.pid(), before.fds)
	t.Logf("%d sessions, all at once, in %v; before: %v; peak: %v; after: %v",
		n, took.Round(time.Millisecond), before, peak, after)
	if after.fds > before.fds { // fewer: a warm-up hook's pipe was still open before
		t.Errorf("the daemon holds %d descriptors after the load; want the %d of before: %s", after.fds, before.fds, fdTargets(d.pid()))
	}

	byPort := map[string]*loadPlan{}
	for i, port := range lr.ports {
		byPort[strconv.Itoa(port)] = lr.plans[i]
	}
	seen := map[int]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Errorf("log line %q", l)
			continue
		}
		p, ok := byPort[f[1]]
		if !ok || seen[p.index] {
			t.Errorf("log line %q: not one of the sessions, or its second line", l)
			continue
		}
		seen[p.index] = true
		if want := fmt.Sprintf("ok %d %d", p.upLen(), len(p.down)); strings.Join(f[2:5], " ") != want {
			t.Errorf("log line %q; want %s for session %d", l, want, p.index)
		}
		checkLoadRecording(t, f[5], p)
		if p.index%100 == 0 {
			run(t, "gzip", "-t", f[5])
		}
	}
	if len(seen) != n {
		t.Errorf("%d sessions logged; want %d", len(seen), n)
	}
	if got := hookRunCount(t, hooks); got != warm+n || len(exits) != warm+n {
		t.Errorf("%d hook runs, %d exit lines; want %d each", got, len(exits), warm+n)
	}
	for _, l := range exits {
		if !strings.Contains(l, " status=0 ") {
			t.Errorf("hook failed: %s", l)
		}
	}

	// Memory: Go returns freed memory to the system only after garbage
	// collections, which an idle daemon runs every two minutes, and then
	// slowly; what the load left cannot be expected back within a test.
	// The heavy variant runs the daemon with a soft memory limit, which
	// makes the runtime collect and return memory as it goes, and runs the
	// load twice more: a daemon that keeps something per session ends the
	// third round higher than the second.
	if heavy {
		var rounds []usage
		for round := 2; round <= 3; round++ {
			lr := newLoadRun(seed+uint64(round)+10, n)
			current.Store(lr)
			s := sample(d.pid())
			runSessions(t, d.addr(), lr, d.pid(), before.fds+3*n, 0)
			waitLines(t, dir+"/conn.log", warm+round*n)
			d.waitLog(`"post-cmd exited"`, warm+round*n)
			peak := s.end()
			u := settle(t, d.pid(), before.fds)
			t.Logf("round %d of %d sessions: peak %v; after %v", round, n, peak, u)
			if u.fds > before.fds {
				t.Errorf("the daemon holds %d descriptors after round %d; want %d", u.fds, round, before.fds)
			}
			rounds = append(rounds, u)
		}
		if r2, r3 := rounds[0].rssKiB, rounds[1].rssKiB; r3 > r2+r2/10+16<<10 {
			t.Errorf("RSS %d KiB after the third round, %d KiB after the second; want no more than a tenth and 16 MiB more", r3, r2)
		}
	}
	t.Logf("the daemon's CPU time: %v", cpuTime(t, d.pid()))
	goroutines, waiting := withoutWaitingWorkers(goroutinesAtQuit(t, d))
	idleGoroutines, _ = withoutWaitingWorkers(idleGoroutines)
	t.Logf("ipprot goroutines: %d after the load %q and %d workers waiting, %d in an idle daemon %q", len(goroutines), goroutines, waiting, len(idleGoroutines), idleGoroutines)
	if waiting > maxWaitingWorkers {
		t.Errorf("%d workers wait for work after the load; want at most %d", waiting, maxWaitingWorkers)
	}
	if len(goroutines) > len(idleGoroutines) {
		t.Errorf("%d goroutines running ipprot code after the load; want no more than the %d of an idle daemon; the dump:\n%s",
			len(goroutines), len(idleGoroutines), d.stderr.String()[strings.Index(d.stderr.String(), "SIGQUIT: quit"):])
	}
}

// fdTargets lists what pid's descriptors point to.
func fdTargets(pid int) string {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range entries {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		out = append(out, e.Name()+"→"+target)
	}
	return strings.Join(out, " ")
}

// TestSlowClientBackpressure: a destination pushes as fast as it can, a
// client reads 100 KiB/s, through -L -z -M. The daemon does not buffer:
// its memory stays flat while the destination, which would push hundreds
// of megabytes in these seconds if the daemon took them, is held back to
// what the client read plus what the kernel's socket buffers hold. Every
// byte the client reads is the destination's, in order.
func TestSlowClientBackpressure(t *testing.T) {
	pattern := randomBytes(7, 1<<20)
	// What the destination pushed, per connection in the order accepted.
	var mu sync.Mutex
	var pushed []*atomic.Int64
	up := startUpstream(t, func(c *net.TCPConn) {
		var n atomic.Int64
		mu.Lock()
		pushed = append(pushed, &n)
		mu.Unlock()
		c.SetWriteBuffer(64 << 10)
		for {
			k, err := c.Write(pattern)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	})
	dir := t.TempDir()
	d := startDaemon(t, "-P", up.out(), "-L", "-z", "-M", "-f", dir+"/prot")
	// Warm up: a session that reads 4 MiB at full speed, so that the
	// baseline has what a recording session allocates once.
	warm, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(warm, make([]byte, 4<<20)); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	warm.Close()
	before := usageOf(t, d.pid())
	c, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	s := sample(d.pid())
	read, inOrder := 0, true
	buf := make([]byte, 10<<10)
	for range 40 { // 4 s at 100 KiB/s
		n, err := io.ReadFull(c, buf)
		if err != nil {
			t.Fatalf("client read: %v", err)
		}
		for i, b := range buf[:n] {
			inOrder = inOrder && b == pattern[(read+i)%len(pattern)]
		}
		read += n
		time.Sleep(100 * time.Millisecond)
	}
	peak := s.end()
	mu.Lock()
	if len(pushed) != 2 {
		t.Fatalf("the destination saw %d connections; want 2", len(pushed))
	}
	held := pushed[1].Load()
	mu.Unlock()
	if !inOrder {
		t.Errorf("the client read bytes the destination did not send, or not in order")
	}
	// The most the kernel can hold between the destination and the client:
	// the destination's send buffer, the daemon's receive and send buffers
	// at their largest, the client's receive buffer (each doubled by the
	// kernel for its bookkeeping), and two blocks in the daemon.
	kernel := 2*(64<<10) + 2*sysctlMax(t, "/proc/sys/net/ipv4/tcp_rmem") + 2*sysctlMax(t, "/proc/sys/net/ipv4/tcp_wmem") + 2*(64<<10) + 2*300000
	growth := peak.rssKiB - before.rssKiB
	t.Logf("client read %d KiB in 4 s; destination pushed %d KiB (kernel buffers at most %d KiB); daemon RSS %d KiB before, peak %d KiB (+%d KiB)",
		read>>10, held>>10, kernel>>10, before.rssKiB, peak.rssKiB, growth)
	if growth > 20<<10 {
		t.Errorf("the daemon's RSS grew by %d KiB with one slow client; want at most 20 MiB", growth)
	}
	if held > int64(read+kernel) {
		t.Errorf("the destination pushed %d bytes with %d read; want at most %d more, what the kernel holds: the daemon buffers", held, read, kernel)
	}
}

// sysctlMax is the last of the three numbers in a tcp_rmem/tcp_wmem file.
func sysctlMax(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("%s: %q", path, b)
	}
	return n
}

// settle waits until pid holds no more than fds descriptors (the last
// hooks' pipes may take a moment to close), at most 30 s, and returns its
// usage then.
func settle(t *testing.T, pid, fds int) usage {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		u := usageOf(t, pid)
		if u.fds <= fds || time.Now().After(deadline) {
			return u
		}
	}
}
