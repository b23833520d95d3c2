package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rss prints the VmRSS, in KiB, of the given processes and all their
// descendants summed (nginx's and socat's children, each counted once).
func rss(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("no PID given")
	}
	roots, err := pids(args)
	if err != nil {
		return err
	}
	fmt.Println(treeSum(roots, vmRSS))
	return nil
}

func pids(args []string) ([]int, error) {
	var ps []int
	for _, a := range args {
		pid, err := strconv.Atoi(a)
		if err != nil {
			return nil, fmt.Errorf("PID %q: %w", a, err)
		}
		ps = append(ps, pid)
	}
	return ps, nil
}

// treeSum sums f over the roots and all their descendants, each once.
func treeSum(roots []int, f func(pid int) int64) int64 {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue // it ended meanwhile
		}
		if st, ok := parseStat(b); ok {
			children[st.ppid] = append(children[st.ppid], st.pid)
		}
	}
	var total int64
	seen := map[int]bool{}
	todo := slices.Clone(roots)
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		total += f(pid)
		todo = append(todo, children[pid]...)
	}
	return total
}

// procStat is what the benchmark reads of /proc/PID/stat.
type procStat struct {
	pid, ppid      int
	utime, stime   int64 // clock ticks
	cutime, cstime int64 // clock ticks of the children it has waited for
}

// parseStat reads a /proc/PID/stat line; the command name in parentheses
// may itself hold spaces and parentheses.
func parseStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	head := strings.Fields(string(b[:i]))
	tail := strings.Fields(string(b[i+1:])) // from field 3, the state
	if len(head) < 1 || len(tail) < 15 {
		return procStat{}, false
	}
	var st procStat
	var errs [6]error
	st.pid, errs[0] = strconv.Atoi(head[0])
	st.ppid, errs[1] = strconv.Atoi(tail[1])
	st.utime, errs[2] = strconv.ParseInt(tail[11], 10, 64)
	st.stime, errs[3] = strconv.ParseInt(tail[12], 10, 64)
	st.cutime, errs[4] = strconv.ParseInt(tail[13], 10, 64)
	st.cstime, errs[5] = strconv.ParseInt(tail[14], 10, 64)
	return st, errors.Join(errs[:]...) == nil
}

// cpuTicks returns the CPU time pid used so far, in clock ticks.
func cpuTicks(pid int) int64 {
	st := statOf(pid)
	return st.utime + st.stime
}

// lifeTicks returns the CPU time pid and the children it has waited for
// used so far, in clock ticks: summed over a tree, it counts every
// process that ever ran in it once (an orphan's time is lost).
func lifeTicks(pid int) int64 {
	st := statOf(pid)
	return st.utime + st.stime + st.cutime + st.cstime
}

func statOf(pid int) procStat {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}
	}
	st, _ := parseStat(b)
	return st
}

// cpu prints the machine's busy clock ticks so far (all CPUs, steal
// included) and those of the given processes' trees, so that two readings
// tell how much CPU went to processes outside the benchmark meanwhile.
func cpu(args []string) error {
	roots, err := pids(args)
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	fmt.Println(busy, treeSum(roots, lifeTicks))
	return nil
}

// vmRSS returns the VmRSS of pid in KiB, 0 if it is gone.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// quiet waits until the given processes and their descendants use almost
// no CPU (at most one clock tick in 200 ms), so that a proxy still
// compressing the end of the last load does not slow the next one. It
// gives up, silently, after -max.
func quiet(args []string) error {
	fs := flag.NewFlagSet("quiet", flag.ExitOnError)
	maxWait := fs.Duration("max", 10*time.Second, "give up after this long")
	fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no PID given")
	}
	roots, err := pids(fs.Args())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(*maxWait)
	last := treeSum(roots, cpuTicks)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		now := treeSum(roots, cpuTicks)
		if now-last <= 1 {
			return nil
		}
		last = now
	}
	return nil
}
