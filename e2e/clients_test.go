package e2e

import (
	"bytes"
	"context"
	"fmt"
	"github.com/ipprot/ipprot/internal/testkit"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pg is the PostgreSQL server of the package, started by the first test
// that needs it and stopped by TestMain.
var pg struct {
	once sync.Once
	port int
	err  error
}

// postgresPort returns the port of a PostgreSQL 15 server on 127.0.0.1 with
// trust authentication for the user postgres, starting it if needed.
func postgresPort(t *testing.T) int {
	t.Helper()
	testkit.Need(t, "runuser", "psql")
	initdb, postgres := testkit.PgTool(t, "initdb"), testkit.PgTool(t, "postgres")
	pg.once.Do(func() {
		pg.port = testkit.FreePort(t)
		var stop func()
		if stop, pg.err = testkit.StartPostgres(initdb, postgres, pg.port); pg.err == nil {
			registerAtExit(stop)
		}
	})
	if pg.err != nil {
		t.Fatalf("PostgreSQL: %v", pg.err)
	}
	return pg.port
}

// pgEnv is libpq's environment for a plain-text session: no TLS, no GSS,
// so the recording shows the protocol.
var pgEnv = []string{"PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=10", "PGUSER=postgres", "PGDATABASE=postgres"}

func pgCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), pgEnv...)
	return cmd
}

// connLogFields splits a line of the default -C format
// (%s %e %S %i %p %o %O %r %w %x %f) into its named fields.
func connLogFields(t *testing.T, line string) map[string]string {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 13 {
		t.Fatalf("connection log line %q has %d fields; want 13", line, len(f))
	}
	m := map[string]string{"s": f[0] + " " + f[1], "e": f[2] + " " + f[3]}
	for i, k := range []string{"S", "i", "p", "o", "O", "r", "w", "x", "f"} {
		m[k] = f[4+i]
	}
	return m
}

// TestPsqlManualSecondExample runs psql through the manual's second
// example (-L -s -j -u HOOK, with -c): the SQL and the reply rows are in
// the bzip2 recording, printable only; the hook ran once with the five
// parameters, found a whole file (bzip2 -t) and the connection's log line
// already written; the line says ok.
func TestPsqlManualSecondExample(t *testing.T) {
	testkit.Need(t, "psql", "bzip2")
	pgPort := postgresPort(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "connection_protocol", "conn.log")
	h := newHook(t, fmt.Sprintf(`bzip2 -t "$1" && echo bzip2-t=ok
echo "log-count=$(grep -c -F -- " $1" %[1]s)"
grep -F -- " $1" %[1]s | sed 's/^/log=/'`, logPath))
	prefix := filepath.Join(dir, "connection_protocol", "prot")
	d := startDaemon(t, "-P", fmt.Sprintf("%d@127.0.0.1", pgPort), "-L", "-s", "-f", prefix, "-j", "-u", h.path, "-c", logPath)

	const sql = "SELECT n, 'row-' || n AS label FROM generate_series(1, 3) AS n"
	out, err := pgCommand("psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(d.port), "-c", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if want := "1|row-1\n2|row-2\n3|row-3\n"; string(out) != want {
		t.Fatalf("psql printed %q; want %q", out, want)
	}
	runs := h.waitRuns(t, 1)
	d.stop()

	files := dataFiles(t, prefix)
	if len(files) != 1 || !strings.HasSuffix(files[0], "_1_127.0.0.1.bz2") {
		t.Fatalf("data files %v; want one ..._1_127.0.0.1.bz2", files)
	}
	rec := run(t, "bzip2", "-dc", files[0])
	for _, want := range []string{
		sql + " ",                       // the Query message; its NUL became a blank
		"label",                         // the RowDescription
		"D 1 row-1D 2 row-2D 3 row-3C ", // three DataRows: 'D', lengths (one blank), values
	} {
		if !bytes.Contains(rec, []byte(want)) {
			t.Errorf("the recording lacks %q:\n%q", want, rec)
		}
	}
	for i, c := range rec {
		if !(c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c <= 0x7e)) {
			t.Fatalf("byte %d of the -s recording is 0x%02x; want printable only", i, c)
		}
	}

	lines := readLines(t, logPath)
	if len(lines) != 1 {
		t.Fatalf("connection log %q; want one line", lines)
	}
	f := connLogFields(t, lines[0])
	if f["x"] != "ok" || f["f"] != files[0] || f["i"] != "127.0.0.1" || f["o"] != "127.0.0.1" || f["O"] != strconv.Itoa(pgPort) {
		t.Errorf("log line %q; want ok, file %s, client 127.0.0.1, destination 127.0.0.1:%d", lines[0], files[0], pgPort)
	}
	conn := d.logLines("connection")
	if len(conn) != 1 || !strings.Contains(conn[0], " bytes_in="+f["r"]+" bytes_out="+f["w"]+" ") {
		t.Errorf("daemon log %q; want bytes_in=%s bytes_out=%s", conn, f["r"], f["w"])
	}

	if len(runs) != 1 {
		t.Fatalf("hook runs %v; want one", sortedKeys(runs))
	}
	r := runs[1]
	want := []string{files[0], "127.0.0.1", f["p"], "127.0.0.1", strconv.Itoa(pgPort)}
	if got, w := strings.Join(r.args, "|"), strings.Join(want, "|"); got != w {
		t.Errorf("hook args\n got %s\nwant %s", got, w)
	}
	wantExtra := []string{"bzip2-t=ok", "log-count=1", "log=" + lines[0]}
	if got, w := strings.Join(r.extra, "\n"), strings.Join(wantExtra, "\n"); got != w {
		t.Errorf("the hook saw\n%s\nwant\n%s", got, w)
	}
}

// TestPgbenchRecorded runs pgbench -S with 4 clients for 3 s through
// -L -z: every session is logged ok, has its own complete recording
// (gzip -t), and each recording holds exactly the bytes the log line
// counts both ways (no -M, no -s: the file is the two directions' data).
func TestPgbenchRecorded(t *testing.T) {
	testkit.Need(t, "pgbench", "gzip")
	pgPort := postgresPort(t)
	pgbench := testkit.PgTool(t, "pgbench")
	if out, err := pgCommand(pgbench, "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", strconv.Itoa(pgPort)).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "conn.log")
	d := startDaemon(t, "-P", fmt.Sprintf("%d@127.0.0.1", pgPort), "-L", "-z", "-f", dir+"/prot",
		"-c", logPath, "-C", "%N %x %r %w %f%n")
	out, err := pgCommand(pgbench, "-n", "-S", "-c", "4", "-j", "2", "-T", "3", "-h", "127.0.0.1", "-p", strconv.Itoa(d.port)).CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindSubmatch(out)
	if m == nil || string(m[1]) == "0" {
		t.Fatalf("pgbench processed nothing:\n%s", out)
	}
	d.stop() // waits for every session: all are logged now

	lines := readLines(t, logPath)
	files := dataFiles(t, dir+"/prot")
	if len(lines) < 4 || len(files) != len(lines) {
		t.Fatalf("%d log lines and %d files; want one file per connection, at least 4", len(lines), len(files))
	}
	selects := 0
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 5 || f[1] != "ok" {
			t.Errorf("log line %q; want N ok r w file", l)
			continue
		}
		if n, _ := strconv.Atoi(f[0]); n < 1 || n > len(lines) {
			t.Errorf("line %d names connection %s; want 1..%d", i, f[0], len(lines))
		}
		run(t, "gzip", "-t", f[4])
		rec := run(t, "gzip", "-dc", f[4])
		r, _ := strconv.Atoi(f[2])
		w, _ := strconv.Atoi(f[3])
		if len(rec) == 0 || len(rec) != r+w {
			t.Errorf("%s holds %d bytes; want %d received + %d written, not 0", f[4], len(rec), r, w)
		}
		if bytes.Contains(rec, []byte("SELECT abalance FROM pgbench_accounts WHERE aid = ")) {
			selects++
		}
	}
	if selects != 4 {
		t.Errorf("%d recordings hold pgbench's SELECT; want 4, one per client", selects)
	}
	t.Logf("pgbench through ipprotd -L -z: %s, %d connections", m[0], len(lines))
}

// teeListener hands out connections whose writes are also copied to w.
type teeListener struct {
	net.Listener
	w *testkit.SyncBuffer
}

func (l teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return teeConn{Conn: c, w: l.w}, nil
}

type teeConn struct {
	net.Conn
	w *testkit.SyncBuffer
}

func (c teeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.Write(p[:n])
	return n, err
}

// block is one block of a -M recording: its marker ("848367" from the
// client, "948366" to it), its stamp, its ISO line if any, its data.
type block struct {
	marker string
	stamp  string
	iso    string
	data   []byte
}

// Block stamp markers, from the client and to it.
var (
	markIn  = []byte("#848367#")
	markOut = []byte("#948366#")
)

// nextStamp returns where the next stamp line (a marker, digits, a newline)
// in b begins and ends, or -1. It searches with bytes.Index, which a -race
// build does not slow down, so megabytes of random data parse quickly.
func nextStamp(b []byte) (start, end int) {
	for off := 0; off < len(b); {
		i := bytes.Index(b[off:], markIn)
		if j := bytes.Index(b[off:], markOut); j >= 0 && (i < 0 || j < i) {
			i = j
		}
		if i < 0 {
			return -1, -1
		}
		i += off
		k := i + len(markIn)
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		if k > i+len(markIn) && k < len(b) && b[k] == '\n' {
			return i, k + 1
		}
		off = i + 1
	}
	return -1, -1
}

// parseBlocks splits a -M recording into its blocks. Data is what lies
// between one stamp line and the next; random data would have to contain a
// whole stamp line to confuse it.
func parseBlocks(rec []byte) ([]block, error) {
	var blocks []block
	for len(rec) > 0 {
		start, end := nextStamp(rec)
		if start != 0 {
			return nil, fmt.Errorf("no stamp line at %q", rec[:min(len(rec), 40)])
		}
		b := block{marker: string(rec[1:7]), stamp: string(rec[8 : end-1])}
		rec = rec[end:]
		if bytes.HasPrefix(rec, []byte("#748369#")) {
			i := bytes.IndexByte(rec, '\n')
			if i < 0 {
				return nil, fmt.Errorf("unterminated ISO line %q", rec)
			}
			b.iso = string(rec[8:i])
			rec = rec[i+1:]
		}
		next, _ := nextStamp(rec)
		if next < 0 {
			next = len(rec)
		}
		b.data = rec[:next]
		rec = rec[next:]
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// TestCurlManualBlockStamps reproduces the manual's -M -t example with
// curl and a real HTTP server, in Europe/Berlin as the manual's (UTC+01:00
// in winter) and in America/New_York, west of UTC: the request's stamp,
// the ISO line, the reply's stamp, then the reply as the server wrote it;
// the stamps within the test's clock window, the ISO line in the daemon's
// zone with the right sign.
func TestCurlManualBlockStamps(t *testing.T) {
	testkit.Need(t, "curl")
	for _, zone := range []string{"Europe/Berlin", "America/New_York"} {
		t.Run(zone, func(t *testing.T) { curlBlockStamps(t, zone) })
	}
}

func curlBlockStamps(t *testing.T, zone string) {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Skipf("no zone %s: %v", zone, err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const body = "<HTML><BODY>ipprotd</BODY></HTML>\n"
	sent := &testkit.SyncBuffer{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(body))
	})}
	go srv.Serve(teeListener{Listener: ln, w: sent})
	defer srv.Shutdown(context.Background())
	upPort := ln.Addr().(*net.TCPAddr).Port

	dir := t.TempDir()
	d := startDaemonEnv(t, []string{"TZ=" + zone}, "-P", fmt.Sprintf("%d@127.0.0.1", upPort), "-f", dir+"/prot", "-M", "-t", "1")
	before := time.Now()
	got := run(t, "curl", "--silent", "--show-error", "--http1.1", fmt.Sprintf("http://127.0.0.1:%d/", d.port))
	after := time.Now()
	if string(got) != body {
		t.Fatalf("curl got %q; want %q", got, body)
	}
	d.stop()

	files := dataFiles(t, dir+"/prot")
	if len(files) != 1 {
		t.Fatalf("data files %v; want one", files)
	}
	rec, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	head := regexp.MustCompile(`^#848367#\d{16}\n#748369#\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d\n#948366#\d{16}\nHTTP/1\.1 200 OK\r\n`)
	if !head.Match(rec) {
		t.Fatalf("the recording does not start as the manual's example:\n%s", rec)
	}
	blocks, err := parseBlocks(rec)
	if err != nil {
		t.Fatal(err)
	}
	var reply []byte
	for i, b := range blocks {
		switch {
		case i == 0:
			if b.marker != "848367" || b.iso == "" || len(b.data) != 0 {
				t.Errorf("first block %+v; want the request's stamp and ISO line, no data (not recorded)", b)
			}
		case b.marker != "948366" || b.iso != "":
			t.Errorf("block %d %+v; want only reply blocks after the request", i, b)
		}
		us, _ := strconv.ParseInt(b.stamp, 10, 64)
		if us < before.UnixMicro() || us > after.UnixMicro() {
			t.Errorf("stamp %s of block %d outside the test's window [%d, %d]", b.stamp, i, before.UnixMicro(), after.UnixMicro())
		}
		reply = append(reply, b.data...)
	}
	if want := sent.String(); string(reply) != want {
		t.Errorf("recorded reply\n%q\nwant what the server wrote\n%q", reply, want)
	}
	iso, err := time.Parse(isoLayout, blocks[0].iso)
	if err != nil {
		t.Fatalf("ISO line %q: %v", blocks[0].iso, err)
	}
	if want := iso.In(loc).Format(isoLayout); blocks[0].iso != want {
		t.Errorf("ISO line %q; want %q (%s's offset)", blocks[0].iso, want, zone)
	}
	if iso.Before(before.Truncate(time.Second)) || iso.After(after) {
		t.Errorf("ISO line %s outside the test's window", blocks[0].iso)
	}
	if us, _ := strconv.ParseInt(blocks[0].stamp, 10, 64); iso.Unix() != us/1e6 {
		t.Errorf("ISO line %s is not the second of the request's stamp %s", blocks[0].iso, blocks[0].stamp)
	}
}
