package e2e

import (
	"bytes"
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file holds what the tests use to look at the daemon from outside:
// its environment, its children and resources in /proc, the runs of its
// post-processing command and the lines of its connection log.

// startDaemonEnv is startDaemon with extra environment variables (TZ,
// GOTRACEBACK) for the daemon.
func startDaemonEnv(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	port := testkit.FreePort(t)
	cmd := exec.Command(binary, append([]string{"-p", fmt.Sprintf("%d@127.0.0.1", port)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return startCommand(t, port, cmd)
}

// pid is the daemon's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop sends SIGTERM and fails the test unless the daemon exits 0.
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	if code := d.exit(60 * time.Second); code != 0 {
		d.t.Errorf("exit status %d after SIGTERM; want 0\n%s", code, d.stderr)
	}
}

// waitLines waits until the file at path has at least n lines and returns
// them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines after 60 s; want %d:\n%s", path, len(lines), n, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialFrom connects to addr from the local address ip (127.0.0.2, say).
func dialFrom(ip, addr string) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// hook is a post-processing script that records each of its runs in a
// file of its own, run.<IPPROT_CONN>: "argc=N", an "arg=…" line per
// positional parameter, the IPPROT_* environment, then whatever its extra
// shell lines print. The file appears whole (written, then renamed).
type hook struct {
	path string // the script, for -u/-uT
	dir  string // where the runs are recorded
}

// newHook writes the script; extra is shell code run after the recording
// of the parameters, with its output added to the run's file.
func newHook(t *testing.T, extra string) *hook {
	t.Helper()
	dir := t.TempDir()
	h := &hook{path: filepath.Join(dir, "hook.sh"), dir: filepath.Join(dir, "runs")}
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
out=%s/run.$IPPROT_CONN
{
  echo "argc=$#"
  for a in "$@"; do printf 'arg=%%s\n' "$a"; done
  env | grep '^IPPROT_' | sort
%s
} > "$out.tmp"
mv "$out.tmp" "$out"
`, h.dir, extra)
	if err := os.WriteFile(h.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// hookRun is one recorded run of a hook.
type hookRun struct {
	args  []string          // $1, $2, …
	env   map[string]string // IPPROT_*
	extra []string          // the lines of the extra code
}

// runs reads the recorded runs by connection number.
func (h *hook) runs(t *testing.T) map[int]hookRun {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(h.dir, "run.*"))
	if err != nil {
		t.Fatal(err)
	}
	runs := map[int]hookRun{}
	for _, path := range m {
		if strings.HasSuffix(path, ".tmp") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(path), "."))
		if err != nil {
			t.Fatalf("run file %s", path)
		}
		r := hookRun{env: map[string]string{}}
		argc := -1
		for _, l := range readLines(t, path) {
			switch {
			case strings.HasPrefix(l, "argc="):
				argc, _ = strconv.Atoi(l[5:])
			case strings.HasPrefix(l, "arg="):
				r.args = append(r.args, l[4:])
			case strings.HasPrefix(l, "IPPROT_"):
				k, v, _ := strings.Cut(l, "=")
				r.env[k] = v
			default:
				r.extra = append(r.extra, l)
			}
		}
		if argc != len(r.args) {
			t.Errorf("run %d: argc=%d but %d arg lines", n, argc, len(r.args))
		}
		runs[n] = r
	}
	return runs
}

// waitRuns waits until n runs are recorded.
func (h *hook) waitRuns(t *testing.T, n int) map[int]hookRun {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if runs := h.runs(t); len(runs) >= n {
			return runs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d hook runs after 60 s; want %d", len(h.runs(t)), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStat is a process's line in /proc/PID/stat, past the command name.
type procStat struct {
	pid, ppid, pgrp int
	state           byte
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]}, true
}

// processes lists every process of the machine.
func processes(t *testing.T) []procStat {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ps []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			ps = append(ps, st)
		}
	}
	return ps
}

// childrenOf lists the children of pid, with their states.
func childrenOf(t *testing.T, pid int) []procStat {
	t.Helper()
	var out []procStat
	for _, p := range processes(t) {
		if p.ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// groupMembers lists the processes of process group pgid.
func groupMembers(t *testing.T, pgid int) []procStat {
	t.Helper()
	var out []procStat
	for _, p := range processes(t) {
		if p.pgrp == pgid {
			out = append(out, p)
		}
	}
	return out
}

// usage is what the daemon holds: open descriptors, resident memory and
// threads, from /proc.
type usage struct {
	fds     int
	rssKiB  int64
	threads int64
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, RSS %.1f MiB, %d threads", u.fds, float64(u.rssKiB)/1024, u.threads)
}

func usageOf(t *testing.T, pid int) usage {
	t.Helper()
	u, ok := readUsage(pid)
	if !ok {
		t.Fatalf("cannot read /proc/%d", pid)
	}
	return u
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// listening reports whether a TCP socket listens on port, from
// /proc/net/tcp and /proc/net/tcp6 (state 0A), without connecting to it.
func listening(t *testing.T, port int) bool {
	t.Helper()
	suffix := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) > 3 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// sortedLines returns a file's lines in order, joined by "|".
func sortedLines(t *testing.T, path string) string {
	t.Helper()
	lines := readLines(t, path)
	sort.Strings(lines)
	return strings.Join(lines, "|")
}
