package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, line string
		want       procStat
		ok         bool
	}{
		{"plain", "123 (nginx) S 45 123 123 0 -1 4194560 10 0 0 0 7 3 2 1 20 0 1 0 100 0 0", procStat{123, 45, 7, 3, 2, 1}, true},
		{"name with spaces and parentheses", "9 (a) b (c)) R 1 9 9 0 -1 0 0 0 0 0 11 12 13 14 20 0", procStat{9, 1, 11, 12, 13, 14}, true},
		{"cut short", "9 (a) R 1 9", procStat{}, false},
		{"no parenthesis", "9 a R 1", procStat{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseStat([]byte(tt.line))
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestPayloads(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"sql", 4 << 20},
		{"random", 128 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := payload(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := payload(tt.name)
			if len(a) != tt.size {
				t.Errorf("got %d bytes; want %d", len(a), tt.size)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("got two different payloads; want the same bytes each time")
			}
		})
	}
	if _, err := payload("zeros"); err == nil || err.Error() != `unknown payload "zeros" (want sql or random)` {
		t.Errorf("got error %v; want the unknown payload named", err)
	}
}

// startServer runs the loadgen server on a loopback port until the test
// ends.
func startServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go runAcceptLoop(ln, done)
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func runAcceptLoop(ln net.Listener, done chan<- struct{}) {
	acceptLoop(ln)
	close(done)
}

func TestServeUp(t *testing.T) {
	addr := startServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	if _, err := c.Write(append([]byte("UP\n"), data...)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "1000000\n" {
		t.Errorf("got count %q; want %q", line, "1000000\n")
	}
}

func TestServeDown(t *testing.T) {
	addr := startServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("DOWN sql 20\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	p := sqlPayload()
	if len(got) < pieceSize || len(got)%pieceSize != 0 {
		t.Fatalf("got %d bytes; want whole pieces of %d", len(got), pieceSize)
	}
	for off := 0; off < len(got); off += pieceSize {
		src := off % len(p)
		if !bytes.Equal(got[off:off+pieceSize], p[src:src+pieceSize]) {
			t.Fatalf("got other bytes at %d; want the payload's bytes at %d", off, src)
		}
	}
}

func TestServeEcho(t *testing.T) {
	addr := startServer(t)
	c, err := roundTrip(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("SELECT 1;\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "SELECT 1;\n" {
		t.Errorf("got echo %q; want %q", buf, "SELECT 1;\n")
	}
}

func TestBlastUp(t *testing.T) {
	addr := startServer(t)
	n, elapsed, err := blastOne(addr, "up", "sql", sqlPayload(), 20*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n%pieceSize != 0 || elapsed <= 0 {
		t.Errorf("got %d bytes in %v; want whole pieces of %d in a positive time", n, elapsed, pieceSize)
	}
}

func TestBlastUpBytes(t *testing.T) {
	addr := startServer(t)
	const limit = 3*pieceSize + 1234
	n, _, err := blastOne(addr, "up", "sql", sqlPayload(), time.Hour, limit)
	if err != nil || n != limit {
		t.Errorf("got %d bytes, %v; want exactly %d", n, err, limit)
	}
}

// TestCreateRate checks that create makes files of createSize bytes from
// every goroutine and that removeCreated leaves the folder empty.
func TestCreateRate(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "c-")
	rate, made, err := createRate(prefix, 3, 20*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 || len(made) != 3 {
		t.Fatalf("got rate %v from %d goroutines; want a positive rate from 3", rate, len(made))
	}
	for g, n := range made {
		if n == 0 {
			t.Errorf("goroutine %d made no file", g)
		}
		for i := range n {
			fi, err := os.Stat(createName(prefix, g, i))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != createSize {
				t.Errorf("%s: got %d bytes; want %d", fi.Name(), fi.Size(), createSize)
			}
		}
	}
	removeCreated(prefix, made)
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("got %d files left; want none", len(left))
	}
}

// TestCreateCount checks that -n makes exactly that many files.
func TestCreateCount(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "c-")
	_, made, err := createRate(prefix, 4, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range made {
		total += n
	}
	if len(files) != 10 || total != 10 {
		t.Errorf("got %d files, %d tried; want 10 and 10", len(files), total)
	}
	removeCreated(prefix, made)
}
