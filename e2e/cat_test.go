package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/testkit"
	"github.com/ipprot/ipprot/playback"
)

// catRun runs `ipprotd cat args…` and returns its stdout, stderr and exit
// status.
func catRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(binary, append([]string{"cat"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// psqlStatements are what the test session sends, with psql -c each.
var psqlStatements = []string{
	"CREATE TABLE audit_t (id int, name text)",
	"INSERT INTO audit_t VALUES (1, 'x'), (2, 'y'), (3, 'z')",
	"SELECT * FROM audit_t",
	"SELECT * FROM missing",
}

// TestCatPostgres records real PostgreSQL sessions through the daemon —
// psql (simple protocol, after an SSLRequest the server refuses) and
// pgbench -M extended (Parse/Bind/Execute with parameters) — with -L -M,
// plain, gzip, and -s with bzip2. cat --sql lists every statement with
// its result; the capture made with --pcapng and the connection log gives
// tshark the session byte for byte and the queries; the -s recording is
// refused as such.
func TestCatPostgres(t *testing.T) {
	testkit.Need(t, "tshark")
	pgPort := postgresPort(t)
	dir := t.TempDir()
	fwd := []string{"-h", "127.0.0.1", "-P", strconv.Itoa(pgPort), "-L", "-M"}
	plainD := startDaemon(t, append(fwd, "-t", "60", "-f", dir+"/plain/prot", "-c", dir+"/plain/conn.log")...)
	gzD := startDaemon(t, append(fwd, "-z", "-f", dir+"/gz/prot")...)
	sD := startDaemon(t, append(fwd, "-s", "-j", "-f", dir+"/s/prot")...)
	plainPort, gzPort, sPort := plainD.port, gzD.port, sD.port
	stop := func(d *daemon) {
		d.signal(syscall.SIGTERM)
		if code := d.exit(30 * time.Second); code != 0 {
			t.Fatalf("ipprotd exited %d:\n%s", code, d.stderr)
		}
	}

	// A database per recording, made directly, not through a proxy.
	for _, db := range []string{"cat_plain", "cat_gz", "cat_s"} {
		if out, err := exec.Command("psql", "-h", "127.0.0.1", "-p", strconv.Itoa(pgPort), "-U", "postgres", "-X", "-q",
			"-c", "CREATE DATABASE "+db).CombinedOutput(); err != nil {
			t.Fatalf("create database %s: %v\n%s", db, err, out)
		}
	}
	begin := time.Now()
	psql := func(port int, db string) {
		t.Helper()
		args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", db, "-X", "-q"}
		for _, s := range psqlStatements {
			args = append(args, "-c", s)
		}
		cmd := exec.Command("psql", args...)
		cmd.Env = append(os.Environ(), "PGSSLMODE=prefer", "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `relation "missing" does not exist`) {
			t.Fatalf("psql: %v (want the error of the last statement)\n%s", err, out)
		}
	}
	psql(plainPort, "cat_plain")
	psql(gzPort, "cat_gz")
	psql(sPort, "cat_s")
	script := filepath.Join(dir, "bench.sql")
	os.WriteFile(script, []byte("\\set id 2\nSELECT name FROM audit_t WHERE id = :id;\nUPDATE audit_t SET name = 'w' WHERE id = :id;\n"), 0o644)
	bench := exec.Command(testkit.PgTool(t, "pgbench"), "-h", "127.0.0.1", "-p", strconv.Itoa(plainPort), "-U", "postgres", "-n", "-t", "1", "-M", "extended", "-f", script, "cat_plain")
	if out, err := bench.CombinedOutput(); err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	end := time.Now()
	stop(plainD)
	stop(gzD)
	stop(sD)

	psqlWant := func(db string) string {
		return "postgres@" + db + " CREATE TABLE audit_t (id int, name text) => CREATE TABLE\n" +
			"postgres@" + db + " INSERT INTO audit_t VALUES (1, 'x'), (2, 'y'), (3, 'z') => INSERT 0 3\n" +
			"postgres@" + db + " SELECT * FROM audit_t => SELECT 3\n" +
			"postgres@" + db + ` SELECT * FROM missing => ERROR 42P01: relation "missing" does not exist` + "\n"
	}
	benchWant := "postgres@cat_plain SELECT name FROM audit_t WHERE id = $1; [$1='2'] => SELECT 1\n" +
		"postgres@cat_plain UPDATE audit_t SET name = 'w' WHERE id = $1; [$1='2'] => UPDATE 1\n"
	// sqlLines runs cat --sql and returns its lines without their times,
	// checking that each time lies within the test's sessions.
	sqlLines := func(t *testing.T, file string) string {
		t.Helper()
		out, errOut, code := catRun(t, "--sql", file)
		if code != 0 || errOut != "" {
			t.Fatalf("cat --sql %s: exit status %d: %s", file, code, errOut)
		}
		var lines []string
		for _, line := range strings.SplitAfter(out, "\n") {
			if line == "" {
				continue
			}
			at, err := time.ParseInLocation(playback.TimeLayout, line[:len(playback.TimeLayout)], time.Local)
			if err != nil || at.Before(begin.Truncate(time.Microsecond)) || at.After(end) {
				t.Errorf("line %q: its time is not within the session (%v to %v)", line, begin, end)
			}
			lines = append(lines, line[len(playback.TimeLayout)+1:])
		}
		return strings.Join(lines, "")
	}

	plainFiles, _ := filepath.Glob(dir + "/plain/prot_*")
	if len(plainFiles) < 2 {
		t.Fatalf("got %d recordings through the plain proxy; want psql's and pgbench's", len(plainFiles))
	}
	psqlFile := plainFiles[0] // connection 1
	t.Run("sql", func(t *testing.T) {
		if got := sqlLines(t, psqlFile); got != psqlWant("cat_plain") {
			t.Errorf("psql session:\n%s\nwant:\n%s", got, psqlWant("cat_plain"))
		}
		var benchGot string
		for _, f := range plainFiles[1:] {
			benchGot += sqlLines(t, f)
		}
		if benchGot != benchWant {
			t.Errorf("pgbench -M extended:\n%s\nwant:\n%s", benchGot, benchWant)
		}
	})
	t.Run("sql json", func(t *testing.T) {
		out, _, code := catRun(t, "--sql", "--format", "json", psqlFile)
		var results []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var st struct {
				File, User, Database, Application, Protocol, Statement, Result string
				Rows                                                           int
				Error                                                          *struct{ Code string }
			}
			if err := json.Unmarshal([]byte(line), &st); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if st.File != psqlFile || st.User != "postgres" || st.Database != "cat_plain" || st.Application != "psql" || st.Protocol != "simple" {
				t.Errorf("line %q: wrong session facts", line)
			}
			results = append(results, fmt.Sprintf("%s|%s|%d", st.Statement, st.Result, st.Rows))
		}
		want := "CREATE TABLE audit_t (id int, name text)|CREATE TABLE|0 INSERT INTO audit_t VALUES (1, 'x'), (2, 'y'), (3, 'z')|INSERT 0 3|0 " +
			`SELECT * FROM audit_t|SELECT 3|3 SELECT * FROM missing|ERROR 42P01: relation "missing" does not exist|0`
		if got := strings.Join(results, " "); code != 0 || got != want {
			t.Errorf("got %d, %s; want 0, %s", code, got, want)
		}
	})
	t.Run("sql gzip", func(t *testing.T) {
		files, _ := filepath.Glob(dir + "/gz/prot_*.gz")
		if len(files) != 1 {
			t.Fatalf("got %d .gz recordings; want 1", len(files))
		}
		if got := sqlLines(t, files[0]); got != psqlWant("cat_gz") {
			t.Errorf("got:\n%s\nwant:\n%s", got, psqlWant("cat_gz"))
		}
	})
	t.Run("sql printable", func(t *testing.T) {
		files, _ := filepath.Glob(dir + "/s/prot_*.bz2")
		if len(files) != 1 {
			t.Fatalf("got %d .bz2 recordings; want 1", len(files))
		}
		out, errOut, code := catRun(t, "--sql", files[0])
		want := "ipprotd: " + files[0] + ": --sql: the recording holds printable characters only (-s): the binary PostgreSQL protocol is destroyed and cannot be decoded\n"
		if code != 1 || out != "" || errOut != want {
			t.Errorf("got %d, %q, %q; want 1, nothing, %q", code, out, errOut, want)
		}
	})
	t.Run("pcapng", func(t *testing.T) {
		out, errOut, code := catRun(t, "--pcapng", "-c", dir+"/plain/conn.log", psqlFile)
		if code != 0 || errOut != "" {
			t.Fatalf("exit status %d: %s", code, errOut)
		}
		capture := filepath.Join(t.TempDir(), "psql.pcapng")
		os.WriteFile(capture, []byte(out), 0o644)
		list := testkit.Tshark(t, "-r", capture)
		if !strings.Contains(list, fmt.Sprintf("→ %d [SYN]", pgPort)) {
			t.Errorf("the capture does not show the destination's port %d:\n%s", pgPort, list)
		}
		queries := testkit.Tshark(t, "-r", capture, "-d", fmt.Sprintf("tcp.port==%d,pgsql", pgPort), "-Y", "pgsql.query", "-T", "fields", "-e", "pgsql.query")
		if want := strings.Join(psqlStatements, "\n") + "\n"; queries != want {
			t.Errorf("tshark's queries:\n%s\nwant:\n%s", queries, want)
		}
		var streams [2][]byte
		f, err := playback.Open(psqlFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := playback.NewReader(f, datafile.Out)
		for b, err := r.Next(); err == nil; b, err = r.Next() {
			streams[b.Dir] = append(streams[b.Dir], b.Data...)
		}
		client, server := testkit.FollowTCP(t, capture)
		if !bytes.Equal(client, streams[datafile.In]) || !bytes.Equal(server, streams[datafile.Out]) {
			t.Errorf("Follow TCP stream: %d and %d bytes; want the recording's %d and %d, equal",
				len(client), len(server), len(streams[datafile.In]), len(streams[datafile.Out]))
		}
	})
}
