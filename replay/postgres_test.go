package replay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/playback"
)

// answer is what fakePG answers to a statement.
type answer struct {
	tag    string // CommandComplete's tag
	rows   int    // DataRows before it
	code   string // an ErrorResponse with this SQLSTATE instead
	fatal  bool   // the error is FATAL: the connection is closed after it
	copyIn bool   // a COPY FROM STDIN: CopyInResponse, then the data
	parse  string // Parse fails with this SQLSTATE
}

// fakePG is a PostgreSQL server enough for the replay: it accepts any
// login (trust), answers the simple and the extended protocol, COPY FROM
// STDIN and FunctionCall, each statement as answers says (an unknown one
// with "SELECT 0"), and keeps the bytes each connection sent after its
// startup message.
type fakePG struct {
	ln      net.Listener
	answers map[string]answer
	wg      sync.WaitGroup
	mu      sync.Mutex
	got     [][]byte
	startup []map[string]string
}

func startFakePG(t testing.TB, answers map[string]answer) *fakePG {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePG{ln: ln, answers: answers}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *fakePG) close() {
	f.ln.Close()
	f.wg.Wait()
}

// conninfo is the --postgres value for f.
func (f *fakePG) conninfo() string {
	host, port, _ := net.SplitHostPort(f.ln.Addr().String())
	return fmt.Sprintf("host=%s port=%s user=replayer sslmode=disable", host, port)
}

func (f *fakePG) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.session(c)
	}
}

// received returns the bytes each connection sent after its startup,
// once n connections ended (the replay does not wait for the server to
// see its end), or after a generous deadline.
func (f *fakePG) received(n int) [][]byte {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		got := f.got
		f.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeSession is one connection to fakePG.
type fakeSession struct {
	f       *fakePG
	be      *pgproto3.Backend
	stmts   map[string]string
	portals map[string]string
	failed  bool // an extended batch failed: skip to its Sync
}

func (f *fakePG) session(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	var got bytes.Buffer
	s := &fakeSession{f: f, be: pgproto3.NewBackend(io.TeeReader(c, &got), c), stmts: map[string]string{}, portals: map[string]string{}}
	defer func() {
		f.mu.Lock()
		f.got = append(f.got, got.Bytes())
		f.mu.Unlock()
	}()
	for {
		m, err := s.be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		if sm, ok := m.(*pgproto3.StartupMessage); ok {
			f.mu.Lock()
			f.startup = append(f.startup, sm.Parameters)
			f.mu.Unlock()
			break
		}
		c.Write([]byte{'N'}) // SSLRequest, GSSENCRequest: in clear
	}
	got.Reset()
	s.be.Send(&pgproto3.AuthenticationOk{})
	s.be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	s.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if s.be.Flush() != nil {
		return
	}
	for s.message() {
	}
}

// message answers the next message; false ends the session.
func (s *fakeSession) message() bool {
	m, err := s.be.Receive()
	if err != nil {
		return false
	}
	if _, ok := m.(*pgproto3.Sync); !ok && s.failed {
		return true
	}
	switch m := m.(type) {
	case *pgproto3.Query:
		if !s.run(m.String) {
			return false
		}
		s.failed = false // a Query's error fails no batch
		s.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	case *pgproto3.Parse:
		if code := s.f.answers[m.Query].parse; code != "" {
			s.be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: "fake " + code})
			s.failed = true
			break
		}
		s.stmts[m.Name] = m.Query
		s.be.Send(&pgproto3.ParseComplete{})
	case *pgproto3.Bind:
		s.portals[m.DestinationPortal] = s.stmts[m.PreparedStatement]
		s.be.Send(&pgproto3.BindComplete{})
	case *pgproto3.Describe:
		if m.ObjectType == 'S' {
			s.be.Send(&pgproto3.ParameterDescription{})
		}
		s.be.Send(&pgproto3.NoData{})
	case *pgproto3.Execute:
		if !s.run(s.portals[m.Portal]) {
			return false
		}
	case *pgproto3.Close:
		s.be.Send(&pgproto3.CloseComplete{})
	case *pgproto3.FunctionCall:
		s.be.Send(&pgproto3.FunctionCallResponse{Result: []byte("1")})
		s.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	case *pgproto3.Sync:
		s.failed = false
		s.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	case *pgproto3.Terminate:
		return false
	}
	// Flush and COPY messages outside COPY need no answer, as in PostgreSQL.
	return s.be.Flush() == nil
}

// run answers a statement; false ends the session.
func (s *fakeSession) run(sql string) bool {
	a, ok := s.f.answers[sql]
	if !ok {
		a = answer{tag: "SELECT 0"}
	}
	switch {
	case a.code != "" || a.fatal:
		sev := "ERROR"
		if a.fatal {
			sev = "FATAL"
		}
		s.be.Send(&pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: a.code, Message: "fake " + a.code})
		s.failed = true
		if a.fatal {
			s.be.Flush()
			return false
		}
		return true
	case a.copyIn:
		return s.copyIn()
	}
	for range a.rows {
		s.be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
	}
	s.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(a.tag)})
	return true
}

// copyIn runs a COPY FROM STDIN.
func (s *fakeSession) copyIn() bool {
	s.be.Send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}})
	if s.be.Flush() != nil {
		return false
	}
	rows := 0
	for {
		m, err := s.be.Receive()
		if err != nil {
			return false
		}
		switch m := m.(type) {
		case *pgproto3.CopyData:
			rows += bytes.Count(m.Data, []byte("\n"))
		case *pgproto3.CopyDone:
			s.be.Send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "COPY %d", rows)})
			return true
		case *pgproto3.CopyFail:
			s.be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014", Message: "COPY from stdin failed: " + m.Message})
			s.failed = true
			return true
		case *pgproto3.Sync, *pgproto3.Flush:
		default:
			s.be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "08P01", Message: "unexpected message during COPY from stdin"})
			s.failed = true
			return true
		}
	}
}

// enc encodes protocol messages, a client's or a server's.
func enc(msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			panic(err)
		}
	}
	return b
}

var (
	zI      = &pgproto3.ReadyForQuery{TxStatus: 'I'}
	row     = &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
	startup = enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": "shop"}})
	login = enc(&pgproto3.AuthenticationOk{}, &pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}, zI)
)

func cc(tag string) *pgproto3.CommandComplete {
	return &pgproto3.CommandComplete{CommandTag: []byte(tag)}
}

func pgErr(code string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: "recorded " + code}
}

// extended is a statement with the extended protocol as libpq sends it.
func extended(sql string, params ...string) []byte {
	var vals [][]byte
	for _, p := range params {
		vals = append(vals, []byte(p))
	}
	return enc(&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: vals},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
}

// pgBlocks is a session as blocks 1 ms apart: the client's bytes, then
// the server's, for each pair.
func pgBlocks(pairs ...[]byte) []recBlock {
	var blocks []recBlock
	us := t0
	for i, p := range pairs {
		dir := datafile.In
		if i%2 == 1 {
			dir = datafile.Out
		}
		us += 1000
		if len(p) > 0 {
			blocks = append(blocks, recBlock{dir, us, p})
		}
	}
	return blocks
}

// shopSession uses the simple and the extended protocol, a named
// statement, COPY both ways, a FunctionCall and an error.
var shopSession = pgBlocks(
	startup, login,
	enc(&pgproto3.Query{String: "CREATE TABLE t (id int)"}), enc(cc("CREATE TABLE"), zI),
	enc(&pgproto3.Query{String: "INSERT INTO t VALUES (1), (2)"}), enc(cc("INSERT 0 2"), zI),
	enc(&pgproto3.Query{String: "SELECT * FROM t"}), enc(row, row, cc("SELECT 2"), zI),
	extended("SELECT * FROM t WHERE id = $1", "1"), enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, row, cc("SELECT 1"), zI),
	enc(&pgproto3.Parse{Name: "ins", Query: "INSERT INTO t VALUES ($1)"}, &pgproto3.Sync{}), enc(&pgproto3.ParseComplete{}, zI),
	enc(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("3")}}, &pgproto3.Execute{}, &pgproto3.Sync{}),
	enc(&pgproto3.BindComplete{}, cc("INSERT 0 1"), zI),
	enc(&pgproto3.Query{String: "COPY t FROM STDIN"}), enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}),
	enc(&pgproto3.CopyData{Data: []byte("4\n5\n")}, &pgproto3.CopyDone{}), enc(cc("COPY 2"), zI),
	enc(&pgproto3.Query{String: "COPY t TO STDOUT"}), enc(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}},
		&pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{}, cc("COPY 1"), zI),
	enc(&pgproto3.FunctionCall{Function: 1598}), enc(&pgproto3.FunctionCallResponse{Result: []byte("x")}, zI),
	enc(&pgproto3.Query{String: "SELECT * FROM missing"}), enc(pgErr("42P01"), zI),
	enc(&pgproto3.Terminate{}), nil,
)

// shopAnswers are the recorded answers, as the fake gives them.
var shopAnswers = map[string]answer{
	"CREATE TABLE t (id int)":       {tag: "CREATE TABLE"},
	"INSERT INTO t VALUES (1), (2)": {tag: "INSERT 0 2"},
	"SELECT * FROM t":               {tag: "SELECT 2", rows: 2},
	"SELECT * FROM t WHERE id = $1": {tag: "SELECT 1", rows: 1},
	"INSERT INTO t VALUES ($1)":     {tag: "INSERT 0 1"},
	"COPY t FROM STDIN":             {copyIn: true},
	"COPY t TO STDOUT":              {tag: "COPY 1"},
	"SELECT * FROM missing":         {code: "42P01"},
}

// clientBytes is what the client sent after its startup message.
func clientBytes(blocks []recBlock) []byte {
	var b []byte
	for _, bl := range blocks[1:] {
		if bl.dir == datafile.In {
			b = append(b, bl.data...)
		}
	}
	return b
}

// catSQL lists a recording's statements as cat --sql does, without
// times.
func catSQL(t *testing.T, path string) []string {
	t.Helper()
	var lines []string
	d := playback.NewSQL(func(s playback.Statement) error {
		line := string(s.AppendText(nil))
		lines = append(lines, line[len(playback.TimeLayout)+1:])
		return nil
	})
	if err := blocks(path, d.Block); err != nil {
		t.Fatal(err)
	}
	if err := d.End(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestPostgres: a session replayed to a server that answers as the
// recorded one did has no difference, and the server gets every message
// after the startup as recorded, with the recording's database and a new
// login; one that answers otherwise has exactly those statements named,
// numbered as cat --sql lists them.
func TestPostgres(t *testing.T) {
	dir := t.TempDir()
	file := recordFile(t, dir, 1, datafile.Gzip, both, shopSession)
	same := startFakePG(t, shopAnswers)
	out, errOut, code := replayRun(t, "--postgres", same.conninfo(), "--speed", "0", file)
	if code != 0 || errOut != "" || splitSummary(t, out) != "1 sessions, 8 statements, 0 differ\n" {
		t.Errorf("got %d, %q, %q; want 0, no error, 8 statements, none differing", code, out, errOut)
	}
	if got := same.received(1); len(got) != 1 || !bytes.Equal(got[0], clientBytes(shopSession)) {
		t.Errorf("the server got\n%q\nwant the recorded messages\n%q", got, clientBytes(shopSession))
	}
	if p := same.startup; len(p) != 1 || p[0]["user"] != "replayer" || p[0]["database"] != "shop" {
		t.Errorf("startup parameters %v; want user replayer (CONNINFO's), database shop (the recording's)", p)
	}

	other := map[string]answer{}
	for k, v := range shopAnswers {
		other[k] = v
	}
	other["SELECT * FROM t"] = answer{tag: "SELECT 3", rows: 3}
	other["INSERT INTO t VALUES ($1)"] = answer{code: "23505"}
	other["SELECT * FROM missing"] = answer{tag: "SELECT 0"}
	differs := startFakePG(t, other)
	out, errOut, code = replayRun(t, "--postgres", differs.conninfo(), "--speed", "0", file)
	want := file + ": statement 3: recorded SELECT 2, replayed SELECT 3: SELECT * FROM t\n" +
		file + ": statement 5: recorded INSERT 0 1, replayed ERROR 23505: INSERT INTO t VALUES ($1) [$1='3']\n" +
		file + ": statement 8: recorded ERROR 42P01, replayed SELECT 0: SELECT * FROM missing\n" +
		"1 sessions, 8 statements, 3 differ\n"
	if code != 1 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 1, no error,\n%s", code, out, errOut, want)
	}
	listed := catSQL(t, file)
	for n, sql := range map[int]string{3: "SELECT * FROM t", 5: "INSERT INTO t VALUES ($1) [$1='3']", 8: "SELECT * FROM missing"} {
		if n > len(listed) || !strings.HasPrefix(listed[n-1], "alice@shop "+sql+" => ") {
			t.Errorf("cat --sql's statement %d is not %q:\n%s", n, sql, strings.Join(listed, ""))
		}
	}

	out, errOut, code = replayRun(t, "--postgres", differs.conninfo(), "--speed", "0", "--format", "json", file)
	wantJSON := regexp.MustCompile(`^\{"file":"` + regexp.QuoteMeta(file) + `","statement":3,"sql":"SELECT \* FROM t","recorded":"SELECT 2","replayed":"SELECT 3"\}
\{"file":"` + regexp.QuoteMeta(file) + `","statement":5,"sql":"INSERT INTO t VALUES \(\$1\) \[\$1='3'\]","recorded":"INSERT 0 1","replayed":"ERROR 23505","replayed_error":\{"severity":"ERROR","code":"23505","message":"fake 23505"\}\}
\{"file":"` + regexp.QuoteMeta(file) + `","statement":8,"sql":"SELECT \* FROM missing","recorded":"ERROR 42P01","replayed":"SELECT 0","recorded_error":\{"severity":"ERROR","code":"42P01","message":"recorded 42P01"\}\}
\{"sessions":1,"statements":8,"differ":3,"failed":0,"seconds":[0-9.e-]+,"recorded_seconds":0.024,"statements_per_second":[0-9.e+-]+\}
$`)
	if code != 1 || errOut != "" || !wantJSON.MatchString(out) {
		t.Errorf("json: got %d, %q, %q; want 1, no error, %s", code, out, errOut, wantJSON)
	}
}

// TestPostgresCopy: a COPY FROM STDIN that the recorded server refused
// and the target accepts gets a CopyFail (and a Sync), so that the
// session goes on, simple and extended; one the recorded server took and
// the target refuses has its data ignored by the target. Only the COPY
// differs; the statements after it keep their numbers.
func TestPostgresCopy(t *testing.T) {
	refused := pgBlocks(startup, login,
		enc(&pgproto3.Query{String: "COPY t FROM STDIN"}), enc(pgErr("42P01"), zI),
		extended("COPY t FROM STDIN"), enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, pgErr("42P01"), zI),
		enc(&pgproto3.Query{String: "SELECT 1"}), enc(row, cc("SELECT 1"), zI),
		extended("SELECT 2"), enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, row, cc("SELECT 1"), zI),
	)
	took := pgBlocks(startup, login,
		enc(&pgproto3.Query{String: "COPY t FROM STDIN"}), enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}),
		enc(&pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{}), enc(cc("COPY 1"), zI),
		extended("COPY t FROM STDIN"), enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, &pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}),
		enc(&pgproto3.CopyData{Data: []byte("2\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{}), enc(cc("COPY 1"), zI),
		enc(&pgproto3.Query{String: "SELECT 1"}), enc(row, cc("SELECT 1"), zI),
	)
	dir := t.TempDir()
	refusedFile := recordFile(t, dir, 1, datafile.None, both, refused)
	tookFile := recordFile(t, dir, 2, datafile.None, both, took)
	answers := map[string]answer{"SELECT 1": {tag: "SELECT 1", rows: 1}, "SELECT 2": {tag: "SELECT 1", rows: 1}}
	answers["COPY t FROM STDIN"] = answer{copyIn: true}
	accepts := startFakePG(t, answers)
	out, errOut, code := replayRun(t, "--postgres", accepts.conninfo(), "--speed", "0", refusedFile)
	want := refusedFile + ": statement 1: recorded ERROR 42P01, replayed ERROR 57014: COPY t FROM STDIN\n" +
		refusedFile + ": statement 2: recorded ERROR 42P01, replayed ERROR 57014: COPY t FROM STDIN\n" +
		"1 sessions, 4 statements, 2 differ\n"
	if code != 1 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("refused, replayed to a server that accepts: got %d, %q, %q; want 1, no error,\n%s", code, out, errOut, want)
	}

	answers = map[string]answer{"SELECT 1": {tag: "SELECT 1", rows: 1}, "COPY t FROM STDIN": {code: "42P01"}}
	refuses := startFakePG(t, answers)
	out, errOut, code = replayRun(t, "--postgres", refuses.conninfo(), "--speed", "0", tookFile)
	want = tookFile + ": statement 1: recorded COPY 1, replayed ERROR 42P01: COPY t FROM STDIN\n" +
		tookFile + ": statement 2: recorded COPY 1, replayed ERROR 42P01: COPY t FROM STDIN\n" +
		"1 sessions, 3 statements, 2 differ\n"
	if code != 1 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("taken, replayed to a server that refuses: got %d, %q, %q; want 1, no error,\n%s", code, out, errOut, want)
	}
}

// TestPostgresAborted: a session that the target ends is reported, with
// the statement it ended in; the other sessions are replayed to their
// end. A target that cannot be reached fails every session.
func TestPostgresAborted(t *testing.T) {
	dir := t.TempDir()
	good := recordFile(t, dir, 1, datafile.None, both, shopSession)
	killed := recordFile(t, dir, 2, datafile.None, both, pgBlocks(startup, login,
		enc(&pgproto3.Query{String: "SELECT 1"}), enc(row, cc("SELECT 1"), zI),
		enc(&pgproto3.Query{String: "SELECT pg_sleep(60)"}), enc(row, cc("SELECT 1"), zI),
		enc(&pgproto3.Query{String: "SELECT 2"}), enc(row, cc("SELECT 1"), zI),
	))
	answers := map[string]answer{"SELECT 1": {tag: "SELECT 1", rows: 1}, "SELECT pg_sleep(60)": {code: "57P01", fatal: true}}
	for k, v := range shopAnswers {
		answers[k] = v
	}
	f := startFakePG(t, answers)
	out, errOut, code := replayRun(t, "--postgres", f.conninfo(), "--speed", "0", good, killed)
	want := killed + ": statement 2: recorded SELECT 1, replayed FATAL 57P01: SELECT pg_sleep(60)\n" +
		"2 sessions, 10 statements, 1 differ, 1 failed\n"
	wantErr := "ipprotd: " + killed + ": the session ended after statement 2: the target closed the connection\n"
	if code != 1 || errOut != wantErr || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 1, %q,\n%s", code, out, errOut, wantErr, want)
	}

	f.close()
	out, errOut, code = replayRun(t, "--postgres", f.conninfo(), "--speed", "0", good)
	if code != 1 || !strings.HasPrefix(errOut, "ipprotd: "+good+": connecting: ") || splitSummary(t, out) != "1 sessions, 0 statements, 0 differ, 1 failed\n" {
		t.Errorf("target down: got %d, %q, %q; want 1 and the connection's error", code, out, errOut)
	}
}

// TestPostgresNotPostgres: recordings that are no PostgreSQL sessions, or
// hold no statement, are said so without connecting; a failed login and
// a CancelRequest replay nothing.
func TestPostgresNotPostgres(t *testing.T) {
	dir := t.TempDir()
	httpFile := recordFile(t, dir, 1, datafile.None, both, httpBlocks)
	cancel := recordFile(t, dir, 2, datafile.None, both, pgBlocks(enc(&pgproto3.CancelRequest{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}), nil))
	failedLogin := recordFile(t, dir, 3, datafile.None, both, pgBlocks(startup,
		enc(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28P01", Message: "password authentication failed"})))
	f := startFakePG(t, nil)
	out, errOut, code := replayRun(t, "--postgres", f.conninfo(), "--speed", "0", httpFile, cancel, failedLogin)
	wantErr := "ipprotd: " + httpFile + ": at byte 0: message '\\x00' with length 1195725856: not a PostgreSQL session\n"
	if code != 1 || splitSummary(t, out) != "3 sessions, 0 statements, 0 differ, 1 failed\n" || errOut != wantErr {
		t.Errorf("got %d, %q, %q; want 1, %q", code, out, errOut, wantErr)
	}
	if got := f.received(0); len(got) != 0 {
		t.Errorf("the server got %d connections; want none", len(got))
	}
}

// TestPostgresLongPipeline: a pipeline of more statements in one batch,
// and a COPY of more data, than flush writes at once are written while
// the answers are read. (On loopback the sockets buffer megabytes: no
// test of a size that runs in a second makes a plain write wait.)
func TestPostgresLongPipeline(t *testing.T) {
	const n = 2000
	var client, server []byte
	for range n {
		client = append(client, enc(&pgproto3.Parse{Query: "SELECT wide"}, &pgproto3.Bind{}, &pgproto3.Execute{})...)
		server = append(server, enc(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{})...)
		for range 10 {
			server = append(server, enc(row)...)
		}
		server = append(server, enc(cc("SELECT 10"))...)
	}
	client = append(client, enc(&pgproto3.Sync{})...)
	server = append(server, enc(zI)...)
	data := bytes.Repeat([]byte("0123456789abcdef\n"), 10000) // 170 kB
	var copyData []byte
	for len(data) > 0 {
		k := min(len(data), 8500)
		copyData = append(copyData, enc(&pgproto3.CopyData{Data: data[:k]})...)
		data = data[k:]
	}
	copyData = append(copyData, enc(&pgproto3.CopyDone{})...)
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, pgBlocks(startup, login,
		client, server,
		enc(&pgproto3.Query{String: "COPY t FROM STDIN"}), enc(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}),
		copyData, enc(cc("COPY 10000"), zI),
		enc(&pgproto3.Terminate{}), nil))
	f := startFakePG(t, map[string]answer{"SELECT wide": {tag: "SELECT 10", rows: 10}, "COPY t FROM STDIN": {copyIn: true}})
	out, errOut, code := replayRun(t, "--postgres", f.conninfo(), "--speed", "0", file)
	if want := fmt.Sprintf("1 sessions, %d statements, 0 differ\n", n+1); code != 0 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 0, no error, %q", code, out, errOut, want)
	}
}

// TestPostgresParseAlone: a Parse that fails on its own (no Execute after
// it in its batch) in the recording and not in the replay, or the other
// way round, is named: cat --sql lists the recorded one; the replayed
// one is placed after the recorded statement before it.
func TestPostgresParseAlone(t *testing.T) {
	prepare := func(name, sql string) []byte {
		return enc(&pgproto3.Parse{Name: name, Query: sql}, &pgproto3.Sync{})
	}
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, pgBlocks(startup, login,
		enc(&pgproto3.Query{String: "SELECT 1"}), enc(row, cc("SELECT 1"), zI),
		prepare("a", "SELEC 2"), enc(pgErr("42601"), zI),
		enc(&pgproto3.Query{String: "SELECT 3"}), enc(row, cc("SELECT 1"), zI),
		prepare("b", "SELECT * FROM gone"), enc(&pgproto3.ParseComplete{}, zI),
		enc(&pgproto3.Query{String: "SELECT 4"}), enc(row, cc("SELECT 1"), zI),
	))
	one := answer{tag: "SELECT 1", rows: 1}
	f := startFakePG(t, map[string]answer{"SELECT 1": one, "SELECT 3": one, "SELECT 4": one, "SELECT * FROM gone": {parse: "42P01"}})
	out, errOut, code := replayRun(t, "--postgres", f.conninfo(), "--speed", "0", file)
	want := file + ": statement 2: recorded ERROR 42601, replayed ok: SELEC 2\n" +
		file + ": after statement 3: recorded ok, replayed ERROR 42P01: SELECT * FROM gone\n" +
		"1 sessions, 5 statements, 2 differ\n"
	if code != 1 || errOut != "" || splitSummary(t, out) != want {
		t.Errorf("got %d, %q, %q; want 1, no error,\n%s", code, out, errOut, want)
	}
	if listed := catSQL(t, file); len(listed) != 4 || !strings.HasPrefix(listed[1], "alice@shop SELEC 2 => ERROR 42601") {
		t.Errorf("cat --sql lists:\n%s", strings.Join(listed, ""))
	}
}

// TestPostgresSpeed: statements are sent no earlier than their recorded
// gaps (divided by --speed) allow. Only a lower bound: nothing else about
// time can be asserted without flaking.
func TestPostgresSpeed(t *testing.T) {
	blocks := pgBlocks(startup, login,
		enc(&pgproto3.Query{String: "SELECT 1"}), enc(row, cc("SELECT 1"), zI))
	blocks = append(blocks, recBlock{datafile.In, t0 + 300000, enc(&pgproto3.Query{String: "SELECT 1"})},
		recBlock{datafile.Out, t0 + 301000, enc(row, cc("SELECT 1"), zI)})
	file := recordFile(t, t.TempDir(), 1, datafile.None, both, blocks)
	f := startFakePG(t, map[string]answer{"SELECT 1": {tag: "SELECT 1", rows: 1}})
	for _, tt := range []struct {
		speed string
		least time.Duration
	}{{"1", 296 * time.Millisecond}, {"4", 74 * time.Millisecond}} {
		began := time.Now()
		out, errOut, code := replayRun(t, "--postgres", f.conninfo(), "--speed", tt.speed, file)
		took := time.Since(began)
		if code != 0 || errOut != "" || splitSummary(t, out) != "1 sessions, 2 statements, 0 differ\n" {
			t.Errorf("--speed %s: got %d, %q, %q; want 0, no error, 2 statements", tt.speed, code, out, errOut)
		}
		if took < tt.least {
			t.Errorf("--speed %s: the replay took %v; want at least %v", tt.speed, took, tt.least)
		}
	}
}
