// Package testkit holds what the tests of several packages need alike:
// tools that CI must install, free ports, a buffer shared between a
// writer and readers, tshark and a PostgreSQL server of their own. It is
// imported by tests only.
package testkit

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Need skips the test when a tool is missing, except in CI (CI set),
// where it fails: CI must install it.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := debianPackage(tool)
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; CI must install it (Debian package %s, see .ci/run)", tool, pkg)
			}
			t.Skipf("%s is not installed: apt-get install %s (.ci/run installs every tool the tests use)", tool, pkg)
		}
	}
}

// debianPackages names the Debian package of each tool the tests use that
// is not named after it.
var debianPackages = map[string]string{
	"capinfos":                "wireshark-common",
	"psql":                    "postgresql-client-15",
	"pgbench":                 "postgresql-client-15",
	"initdb":                  "postgresql-15",
	"postgres":                "postgresql-15",
	"runuser":                 "util-linux",
	"prlimit":                 "util-linux",
	"nginx":                   "nginx-light",
	"openssl":                 "openssl",
	"haproxy":                 "haproxy",
	"strace":                  "strace",
	"systemd-socket-activate": "systemd",
}

// debianPackage returns the Debian package that installs tool.
func debianPackage(tool string) string {
	if p, ok := debianPackages[tool]; ok {
		return p
	}
	return tool
}

// FreePort returns a TCP port that was free on every address a moment
// ago. It is taken below the kernel's ephemeral range (32768 and up), from
// which every outgoing connection of every test takes its local port: a
// port of that range, free when probed, could be a client's by the time
// a server binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range portSpan {
		p := portBase + int(nextPort.Add(1)%portSpan)
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatalf("no free port in %d-%d", portBase, portBase+portSpan-1)
	return 0
}

const (
	portBase = 20000
	portSpan = 12000
)

// nextPort walks the span from a place of its own for each test process.
var nextPort atomic.Int64

func init() { nextPort.Store(int64(os.Getpid()) * 7919) }

// SyncBuffer is a bytes.Buffer safe for a writer and readers at once.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tshark runs tshark with args and returns its output. Anything it says
// on stderr fails the test, except its warning about running as root.
func Tshark(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("tshark", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.HasPrefix(line, `Running as user "root"`) {
			t.Errorf("tshark %s says on stderr: %s", strings.Join(args, " "), line)
		}
	}
	return stdout.String()
}

// FollowTCP returns the two directions' bytes of the capture at path as
// tshark's "Follow TCP stream" reassembles them: node 0 (the client) sent
// the lines without a tab, node 1 the lines with one.
func FollowTCP(t testing.TB, path string) (client, server []byte) {
	t.Helper()
	body := false
	for _, line := range strings.Split(Tshark(t, "-r", path, "-q", "-z", "follow,tcp,raw,0"), "\n") {
		switch {
		case strings.HasPrefix(line, "Node 1:"):
			body = true
			continue
		case strings.HasPrefix(line, "====="):
			body = false
		}
		if !body || line == "" {
			continue
		}
		p, err := hex.DecodeString(strings.TrimPrefix(line, "\t"))
		if err != nil {
			t.Fatalf("follow output %q: %v", line, err)
		}
		if strings.HasPrefix(line, "\t") {
			server = append(server, p...)
		} else {
			client = append(client, p...)
		}
	}
	return client, server
}
