package playback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// wire builds PostgreSQL protocol messages for tests.
type wire []byte

// msg appends a typed message; parts are strings (written with their
// zero terminator), []byte (as they are), int16 and int32 values.
func (w wire) msg(typ byte, parts ...any) wire {
	body := encode(parts...)
	w = append(w, typ)
	w = binary.BigEndian.AppendUint32(w, uint32(4+len(body)))
	return append(w, body...)
}

// untyped appends a message without type byte (startup, SSLRequest).
func (w wire) untyped(parts ...any) wire {
	body := encode(parts...)
	w = binary.BigEndian.AppendUint32(w, uint32(4+len(body)))
	return append(w, body...)
}

func encode(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b = append(append(b, v...), 0)
		case []byte:
			b = append(b, v...)
		case int16:
			b = binary.BigEndian.AppendUint16(b, uint16(v))
		case int32:
			b = binary.BigEndian.AppendUint32(b, uint32(v))
		case int:
			b = binary.BigEndian.AppendUint32(b, uint32(v))
		default:
			panic("wire: cannot encode")
		}
	}
	return b
}

// exchange is one step of a session: what the client sends, then what
// the server answers, each as one block (or cut into several by a test).
type exchange struct{ client, server wire }

var t0sql = time.UnixMicro(1700000000000000)

// ready is ReadyForQuery (idle).
func ready() wire { return wire{}.msg('Z', []byte{'I'}) }

func pgError(sev, code, text string) wire {
	return wire{}.msg('E', []byte{'S'}, sev, []byte{'V'}, sev, []byte{'C'}, code, []byte{'M'}, text, []byte{0})
}

// pgSession is a session with the simple and the extended protocol, an
// SSLRequest refused, errors in both, a skipped Execute and a Parse that
// fails on its own.
var pgSession = []exchange{
	{wire{}.untyped(sslRequest), wire{'N'}},
	{wire{}.untyped(protocol3, "user", "alice", "database", "shop", "application_name", "psql", ""),
		wire{}.msg('R', 0).msg('S', "server_version", "15.0").msg('K', 42, 7).msg('Z', []byte{'I'})},
	{wire{}.msg('Q', "CREATE TABLE t (id int)"), wire{}.msg('C', "CREATE TABLE").msg('Z', []byte{'I'})},
	{wire{}.msg('Q', "INSERT INTO t VALUES (1), (2), (3)"), wire{}.msg('C', "INSERT 0 3").msg('Z', []byte{'I'})},
	{wire{}.msg('Q', "SELECT *\n\tFROM t"),
		wire{}.msg('T', int16(1), "id", 0, int16(0), 23, int16(4), -1, int16(0)).
			msg('D', int16(1), 1, []byte("1")).msg('D', int16(1), 1, []byte("2")).msg('D', int16(1), 1, []byte("3")).
			msg('C', "SELECT 3").msg('Z', []byte{'I'})},
	{wire{}.msg('Q', "SELECT * FROM missing"), pgError("ERROR", "42P01", `relation "missing" does not exist`).msg('Z', []byte{'I'})},
	{wire{}.msg('Q', "SELECT 1; SELECT 2"),
		wire{}.msg('T', int16(0)).msg('D', int16(0)).msg('C', "SELECT 1").msg('T', int16(0)).msg('D', int16(0)).msg('C', "SELECT 1").msg('Z', []byte{'I'})},
	{wire{}.msg('Q', ""), wire{}.msg('I').msg('Z', []byte{'I'})},
	// Extended: unnamed statement, a text and a NULL parameter.
	{wire{}.msg('P', "", "SELECT $1::int + $2", int16(0)).
		msg('B', "", "", int16(1), int16(0), int16(2), 2, []byte("41"), -1, int16(0)).
		msg('D', []byte{'P'}, "").msg('E', "", 0).msg('S'),
		wire{}.msg('1').msg('2').msg('T', int16(0)).msg('D', int16(0)).msg('C', "SELECT 1").msg('Z', []byte{'I'})},
	// A named statement, prepared, then run with a binary parameter.
	{wire{}.msg('P', "s1", "INSERT INTO t VALUES ($1)", int16(0)).msg('S'), wire{}.msg('1').msg('Z', []byte{'I'})},
	{wire{}.msg('B', "p1", "s1", int16(1), int16(1), int16(1), 4, []byte{0, 0, 0, 5}, int16(0)).msg('E', "p1", 0).msg('S'),
		wire{}.msg('2').msg('C', "INSERT 0 1").msg('Z', []byte{'I'})},
	// A syntax error: the batch's Execute carries it.
	{wire{}.msg('P', "", "SELEC 1", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).msg('E', "", 0).msg('S'),
		pgError("ERROR", "42601", `syntax error at or near "SELEC"`).msg('Z', []byte{'I'})},
	// A pipeline: the first Execute fails, the server skips the second.
	{wire{}.msg('P', "", "SELECT 1/0", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).msg('E', "", 0).
		msg('P', "", "DELETE FROM t", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).msg('E', "", 0).msg('S'),
		wire{}.msg('1').msg('2').append(pgError("ERROR", "22012", "division by zero")).msg('Z', []byte{'I'})},
	// A Parse alone that fails.
	{wire{}.msg('P', "s2", "bad sql", int16(0)).msg('S'), pgError("ERROR", "42601", `syntax error at or near "bad"`).msg('Z', []byte{'I'})},
	{wire{}.msg('X'), nil},
}

func (w wire) append(v wire) wire { return append(w, v...) }

// sessionBlocks turns exchanges into blocks; with rng, each side's bytes
// are cut into blocks of random sizes.
func sessionBlocks(ex []exchange, rng *rand.Rand) []Block {
	var blocks []Block
	at := t0sql
	add := func(dir datafile.Direction, p []byte) {
		for len(p) > 0 {
			n := len(p)
			if rng != nil {
				n = 1 + rng.IntN(len(p))
			}
			at = at.Add(time.Millisecond)
			blocks = append(blocks, Block{Dir: dir, Stamped: true, Time: at, Data: p[:n]})
			p = p[n:]
		}
	}
	for _, e := range ex {
		add(datafile.In, e.client)
		add(datafile.Out, e.server)
	}
	return blocks
}

// decode runs SQL over blocks and returns the statements and the error.
func decode(blocks []Block) ([]Statement, error) {
	var got []Statement
	d := NewSQL(func(s Statement) error { got = append(got, s); return nil })
	for _, b := range blocks {
		if err := d.Block(b); err != nil {
			return got, err
		}
	}
	return got, d.End()
}

// TestSQL: every statement of the session, with its result, as text and
// JSON, the same however the bytes are cut into blocks.
func TestSQL(t *testing.T) {
	stmts, err := decode(sessionBlocks(pgSession, nil))
	if err != nil {
		t.Fatal(err)
	}
	var text, js []byte
	for _, s := range stmts {
		text = s.AppendText(text)
		js = s.AppendJSON(js, "prot_2023-11-14_231320_1_10.1.2.33")
	}
	golden(t, "sql.txt", text)
	golden(t, "sql.json", js)
	for seed := range uint64(20) {
		again, err := decode(sessionBlocks(pgSession, rand.New(rand.NewPCG(seed, 5))))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := results(stmts), results(again); a != b {
			t.Fatalf("cut into random blocks (seed %d):\n%s\nwant:\n%s", seed, b, a)
		}
	}
}

// results is the statements' text lines without times.
func results(stmts []Statement) string {
	var b []byte
	for _, s := range stmts {
		s.Time = time.Time{}
		b = s.AppendText(b)
	}
	return string(b)
}

// TestSQLCannot: recordings SQL cannot decode say why.
func TestSQLCannot(t *testing.T) {
	startup := pgSession[1].client
	printable := func(p []byte) []byte { // -s
		var out []byte
		run := false
		for _, c := range p {
			if c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c <= 0x7e) {
				out, run = append(out, c), false
			} else if !run {
				out, run = append(out, ' '), true
			}
		}
		return out
	}
	var psqlS []exchange
	for _, e := range pgSession {
		psqlS = append(psqlS, exchange{printable(e.client), printable(e.server)})
	}
	for _, tt := range []struct {
		name string
		ex   []exchange
		want error
	}{
		{"printable only (-s)", psqlS, ErrPrintable},
		{"TLS", []exchange{{wire{}.untyped(sslRequest), wire{'S', 0x16, 3, 1}}}, ErrEncrypted},
		{"GSSAPI", []exchange{{wire{}.untyped(gssRequest), wire{'G'}}}, ErrEncrypted},
		{"HTTP", []exchange{{wire("GET / HTTP/1.1\r\n\r\n"), wire("HTTP/1.1 200 OK\r\n\r\n")}}, ErrNotPostgres},
		{"cut before the startup", []exchange{{startup[:6], nil}}, ErrNotPostgres},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode(sessionBlocks(tt.ex, nil))
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

// TestSQLUnanswered: with only the client's data (-l), every statement is
// listed, without an answer; a CancelRequest lists nothing; a failed login
// is listed as the connection's.
func TestSQLUnanswered(t *testing.T) {
	var ex []exchange
	for _, e := range pgSession[:5] {
		ex = append(ex, exchange{client: e.client})
	}
	stmts, err := decode(sessionBlocks(ex, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := "alice@shop CREATE TABLE t (id int) => no answer in the recording\n" +
		"alice@shop INSERT INTO t VALUES (1), (2), (3) => no answer in the recording\n" +
		`alice@shop SELECT *\n\tFROM t => no answer in the recording` + "\n"
	if got := withoutTimes(stmts); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	cancel := []exchange{{wire{}.untyped(cancelRequest, 42, 7), nil}}
	if stmts, err := decode(sessionBlocks(cancel, nil)); err != nil || len(stmts) != 0 {
		t.Errorf("a CancelRequest: got %d statements, %v; want none and no error", len(stmts), err)
	}

	login := []exchange{{pgSession[1].client, wire{}.msg('R', 3).append(pgError("FATAL", "28P01", `password authentication failed for user "alice"`))}}
	stmts, err = decode(sessionBlocks(login, nil))
	want = `alice@shop (connection) => FATAL 28P01: password authentication failed for user "alice"` + "\n"
	if got := withoutTimes(stmts); err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

// withoutTimes is the text lines without their time column.
func withoutTimes(stmts []Statement) string {
	var out []byte
	for _, s := range stmts {
		line := s.AppendText(nil)
		out = append(out, line[len(TimeLayout)+1:]...)
	}
	return string(out)
}

// FuzzSQL: any bytes as client and server streams decode without panic,
// and cutting them into other blocks changes no statement.
func FuzzSQL(f *testing.F) {
	var client, server []byte
	for _, e := range pgSession {
		client, server = append(client, e.client...), append(server, e.server...)
	}
	f.Add(client, server, uint64(1))
	f.Add([]byte(pgSession[1].client), []byte{}, uint64(2))
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64) {
		whole := sessionBlocks([]exchange{{client, server}}, nil)
		cut := sessionBlocks([]exchange{{client, server}}, rand.New(rand.NewPCG(seed, 6)))
		a, errA := decode(whole)
		b, errB := decode(cut)
		if results(a) != results(b) || (errA == nil) != (errB == nil) {
			t.Fatalf("whole: %q, %v; cut: %q, %v", results(a), errA, results(b), errB)
		}
	})
}

// TestBindParams reads Bind's parameter formats: none (all text), one
// for all, one each.
func TestBindParams(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		want []Param
	}{
		{"all text", encode(int16(0), int16(2), 1, []byte("a"), -1), []Param{{Value: "a"}, {Null: true}}},
		{"one for all", encode(int16(1), int16(1), int16(1), 2, []byte{0, 7}), []Param{{Binary: true, Value: "\x00\x07"}}},
		{"each", encode(int16(2), int16(0), int16(1), int16(2), 1, []byte("x"), 1, []byte{9}), []Param{{Value: "x"}, {Binary: true, Value: "\x09"}}},
		{"cut short", encode(int16(0), int16(2), 1, []byte("a")), []Param{{Value: "a"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := bindParams(tt.b)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v; want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("param %d: got %+v; want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// copySession copies into a table with the simple protocol, then with the
// extended one as libpq sends it (a Sync with the Execute and another
// after CopyDone, the first ignored by the server), copies out, calls a
// function, and runs a query after each.
var copySession = []exchange{
	{pgSession[1].client, pgSession[1].server},
	{wire{}.msg('Q', "COPY t FROM STDIN"), wire{}.msg('G', []byte{0}, int16(1), int16(0))},
	{wire{}.msg('d', []byte("1\n")).msg('d', []byte("2\n")).msg('c'), wire{}.msg('C', "COPY 2").append(ready())},
	{wire{}.msg('Q', "SELECT 1"), wire{}.msg('T', int16(0)).msg('D', int16(0)).msg('C', "SELECT 1").append(ready())},
	{wire{}.msg('P', "", "COPY t FROM STDIN", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).
		msg('D', []byte{'P'}, "").msg('E', "", 0).msg('S'),
		wire{}.msg('1').msg('2').msg('n').msg('G', []byte{0}, int16(1), int16(0))},
	{wire{}.msg('d', []byte("3\n")).msg('c').msg('S'), wire{}.msg('C', "COPY 1").append(ready())},
	{wire{}.msg('Q', "SELECT 2"), wire{}.msg('T', int16(0)).msg('D', int16(0)).msg('C', "SELECT 1").append(ready())},
	{wire{}.msg('Q', "COPY t TO STDOUT"), wire{}.msg('H', []byte{0}, int16(1), int16(0)).msg('d', []byte("1\n")).
		msg('d', []byte("2\n")).msg('c').msg('C', "COPY 2").append(ready())},
	{wire{}.msg('F', 1598, int16(0), int16(0), int16(0)), wire{}.msg('V', 1, []byte("x")).append(ready())},
	{wire{}.msg('Q', "SELECT 3"), wire{}.msg('C', "SELECT 0").append(ready())},
	{wire{}.msg('X'), nil},
}

// TestSQLCopy: COPY FROM STDIN in both protocols, COPY TO STDOUT and a
// FunctionCall leave no message waiting for an answer: each statement
// gets its own, whatever comes after.
func TestSQLCopy(t *testing.T) {
	stmts, err := decode(sessionBlocks(copySession, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := "alice@shop COPY t FROM STDIN => COPY 2\n" +
		"alice@shop SELECT 1 => SELECT 1\n" +
		"alice@shop COPY t FROM STDIN => COPY 1\n" +
		"alice@shop SELECT 2 => SELECT 1\n" +
		"alice@shop COPY t TO STDOUT => COPY 2\n" +
		"alice@shop SELECT 3 => SELECT 0\n"
	if got := withoutTimes(stmts); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	var seqs []int
	for _, s := range stmts {
		seqs = append(seqs, s.Seq)
	}
	// Q 1, Q 2, P 3 B 4 D 5 E 6 S 7, S 8, Q 9, Q 10, F 11, Q 12.
	if got, want := fmt.Sprint(seqs), "[1 2 6 9 10 12]"; got != want {
		t.Errorf("Seq: got %s; want %s", got, want)
	}
}

// TestSQLMessages: OnMessage gets every message after the startup
// message whole, passwords left out; Parameters holds the startup
// message's; Seq counts the query messages alike in the recording and
// in a decoder resumed after authentication that gets the same messages.
func TestSQLMessages(t *testing.T) {
	ex := append([]exchange{
		{pgSession[1].client, wire{}.msg('R', 5, []byte{1, 2, 3, 4})},
		{wire{}.msg('p', "md5secret"), wire{}.msg('R', 0).append(ready())},
	}, pgSession[2:]...)
	var sent []byte
	var types []byte
	var recorded []Statement
	d := NewSQL(func(s Statement) error { recorded = append(recorded, s); return nil })
	d.OnMessage(func(m Message) error {
		sent = append(sent, m.Data...)
		types = append(types, m.Type)
		return nil
	})
	for _, b := range sessionBlocks(ex, rand.New(rand.NewPCG(3, 3))) {
		if err := d.Block(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.End(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, e := range ex[2:] {
		want = append(want, e.client...)
	}
	if !bytes.Equal(sent, want) {
		t.Errorf("the messages passed on:\n%q\nwant:\n%q", sent, want)
	}
	if got, want := string(types), "QQQQQQPBDESPSBESPBESPBEPBESPSX"; got != want {
		t.Errorf("types %s; want %s", got, want)
	}
	if got, want := fmt.Sprint(d.Parameters()), "[user alice database shop application_name psql]"; got != want {
		t.Errorf("Parameters() = %s; want %s", got, want)
	}

	// The replayed side: the same messages, the same answers.
	var replayed []Statement
	r := NewSQL(func(s Statement) error { replayed = append(replayed, s); return nil })
	r.Resume("alice", "shop", "psql")
	for _, e := range ex[2:] {
		if err := r.Block(Block{Dir: datafile.In, Stamped: true, Time: t0sql, Data: e.client}); err != nil {
			t.Fatal(err)
		}
		if r.Awaiting() == 0 && len(e.server) > 0 {
			t.Errorf("after %q: Awaiting() = 0 with an answer to come", e.client)
		}
		if err := r.Block(Block{Dir: datafile.Out, Stamped: true, Time: t0sql, Data: e.server}); err != nil {
			t.Fatal(err)
		}
		if n := r.Awaiting(); n != 0 {
			t.Errorf("after the answer to %q: Awaiting() = %d; want 0", e.client, n)
		}
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if len(replayed) != len(recorded) {
		t.Fatalf("%d statements replayed; %d recorded", len(replayed), len(recorded))
	}
	for i := range recorded {
		if a, b := recorded[i], replayed[i]; a.Seq != b.Seq || a.Result() != b.Result() || a.Seq == 0 {
			t.Errorf("statement %d: recorded Seq %d %q, replayed Seq %d %q; want the same, not 0", i+1, a.Seq, a.Result(), b.Seq, b.Result())
		}
	}
}

// TestSQLCopyInState: CopyIn and Awaiting follow a COPY FROM STDIN as a
// replay sends it, also one the server fails.
func TestSQLCopyInState(t *testing.T) {
	r := NewSQL(func(Statement) error { return nil })
	r.Resume("alice", "shop", "")
	step := func(dir datafile.Direction, w wire, awaiting int, copyIn bool) {
		t.Helper()
		if err := r.Block(Block{Dir: dir, Stamped: true, Data: w}); err != nil {
			t.Fatal(err)
		}
		if r.Awaiting() != awaiting || r.CopyIn() != copyIn {
			t.Errorf("after %q: Awaiting() %d, CopyIn() %v; want %d, %v", w, r.Awaiting(), r.CopyIn(), awaiting, copyIn)
		}
	}
	step(datafile.In, copySession[4].client, 5, false)
	step(datafile.Out, copySession[4].server, 1, true) // the Execute; its Sync is ignored
	step(datafile.In, wire{}.msg('d', []byte("x\n")), 1, true)
	step(datafile.Out, pgError("ERROR", "22P02", "invalid input syntax"), 0, false)
	step(datafile.In, wire{}.msg('c').msg('S'), 1, false)
	step(datafile.Out, ready(), 0, false)
}

// TestSQLSkipToSync: what a client pipelines after an extended batch
// failed, before its Sync, the server skips, a Query too: listed as not
// run, with nothing left waiting for an answer.
func TestSQLSkipToSync(t *testing.T) {
	ex := []exchange{
		{pgSession[1].client, pgSession[1].server},
		{wire{}.msg('P', "", "SELECT 1/0", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).msg('E', "", 0),
			wire{}.msg('1').msg('2').append(pgError("ERROR", "22012", "division by zero"))},
		{wire{}.msg('P', "", "SELECT 2", int16(0)).msg('B', "", "", int16(0), int16(0), int16(0)).msg('E', "", 0).
			msg('Q', "SELECT 3").msg('S'), ready()},
		{wire{}.msg('Q', "SELECT 4"), wire{}.msg('C', "SELECT 1").append(ready())},
	}
	stmts, err := decode(sessionBlocks(ex, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := "alice@shop SELECT 1/0 => ERROR 22012: division by zero\n" +
		"alice@shop SELECT 2 => not run: an earlier message of its batch failed\n" +
		"alice@shop SELECT 3 => not run: an earlier message of its batch failed\n" +
		"alice@shop SELECT 4 => SELECT 1\n"
	if got := withoutTimes(stmts); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
