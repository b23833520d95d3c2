package postproc

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"

	"go.uber.org/goleak"

	"github.com/ipprot/ipprot/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logBuf is the daemon's log in a test: text lines without time.
type logBuf struct{ testkit.SyncBuffer }

// lines returns the lines logged so far that contain every one of subs.
func (b *logBuf) lines(subs ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(b.String(), "\n") {
		if l == "" {
			continue
		}
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// newLogger returns a logger writing to a logBuf at debug level, without
// the time.
func newLogger() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	h := slog.NewTextHandler(b, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), b
}

// newRunner returns a Runner for cfg logging to a logBuf, with a clock that
// stands still so that every duration logged is 0s.
func newRunner(t *testing.T, cfg Config) (*Runner, *logBuf) {
	t.Helper()
	log, buf := newLogger()
	cfg.Logger = log
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	at := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return at }
	return r, buf
}

// writeHook writes an executable shell script called name into dir and
// returns its path.
func writeHook(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// quote returns s single-quoted for sh.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// facts returns the facts of connection n with data file file, which is
// created.
func facts(t testing.TB, n uint64, file string) *proxy.Facts {
	t.Helper()
	if err := os.WriteFile(file, []byte("recording\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &proxy.Facts{
		N:        n,
		Start:    time.Date(2024, 3, 1, 12, 34, 56, 0, time.FixedZone("", 5400)),
		End:      time.Date(2024, 3, 1, 6, 35, 7, 999, time.FixedZone("", -5*3600)),
		Client:   netip.MustParseAddrPort("192.0.2.10:40000"),
		Dest:     netip.MustParseAddrPort("198.51.100.7:5432"),
		OutHost:  "db.example",
		OutPort:  5432,
		BytesIn:  1234,
		BytesOut: 56789,
		File:     file,
		Size:     10,
		SHA256:   recordingSHA256,
		Outcome:  proxy.Aborted,
	}
}

// recordingSHA256 is the SHA-256 of the "recording\n" facts writes.
const recordingSHA256 = "c6bcba35ea2b8f4bb3f75d1a770aaf6e5e4ff32d3cf3fa7bf15ff45e6a0f65b8"

// waitFor polls until cond holds, for at most 20 s: a bound against a hung
// test, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// procStat is a line of /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// readStat reads /proc/PID/stat; ok is false if the process is gone.
func readStat(pid int) (st procStat, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return st, false
	}
	// The command name in parentheses may hold spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return st, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return st, false
	}
	st.pid = pid
	st.state = f[0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	return st, true
}

// processes returns every process of the machine.
func processes(t *testing.T) []procStat {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var all []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			all = append(all, st)
		}
	}
	return all
}

// alive reports whether pid is a process that has not yet died: a zombie
// is dead, whoever has still to reap it.
func alive(pid int) bool {
	st, ok := readStat(pid)
	return ok && st.state != "Z" && st.state != "X"
}

// readInt reads the decimal number in file.
func readInt(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return n
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
