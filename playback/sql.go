package playback

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipprot/ipprot/datafile"
)

// Statement is one statement a PostgreSQL client sent — a Query message of
// the simple protocol, an Execute of the extended one — with what the
// server answered.
type Statement struct {
	// Time is the stamp of the block that held the Query or Execute.
	Time time.Time
	// User, Database and Application are the startup message's user,
	// database (the user where none was given) and application_name.
	User, Database, Application string
	// Text is the SQL: the Query's text, or the Parse's the Execute ran.
	Text string
	// Extended is true for an Execute (Parse/Bind/Execute).
	Extended bool
	// Params are the Bind's parameters, extended protocol only.
	Params []Param
	// Tags are the server's CommandComplete tags ("SELECT 3", "INSERT 0 1"),
	// one per statement of a Query; "EMPTY" for an empty query, "SUSPENDED"
	// for an Execute that stopped at its row limit.
	Tags []string
	// Rows counts the DataRow messages the server sent for it.
	Rows int64
	// Error is the server's ErrorResponse, if it failed.
	Error *PGError
	// Skipped says that the server did not run it: an earlier message of the
	// same extended-protocol batch failed.
	Skipped bool
	// Answered says that the server's answer is in the recording.
	Answered bool
	// Connection says that this is no statement but an error about the
	// connection, such as a failed login: Text is empty.
	Connection bool
	// Seq is the number of the client's message that the statement is of:
	// its Query or Execute, or the Parse or Bind that failed on its own.
	// The client's query messages (Query, Parse, Bind, Describe, Execute,
	// Close, Sync, FunctionCall) are counted from 1, so that two decodings
	// of the same client stream — a recording and its replay — give a
	// statement the same Seq. It is 0 for a connection's error.
	Seq int
}

// Param is one parameter of a Bind.
type Param struct {
	Null   bool
	Binary bool   // binary format: Value holds the bytes as sent
	Value  string // text format: the value
}

// PGError is an ErrorResponse's fields.
type PGError struct {
	Severity string `json:"severity"` // V, the non-localized severity, or else S
	Code     string `json:"code"`     // C, the SQLSTATE
	Message  string `json:"message"`  // M
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

// Result is the server's answer in one line: the CommandComplete tags, or
// "ERROR 42P01: relation "x" does not exist", or why there is none.
func (s *Statement) Result() string {
	switch {
	case s.Error != nil:
		return fmt.Sprintf("%s %s: %s", s.Error.Severity, s.Error.Code, s.Error.Message)
	case s.Skipped:
		return "not run: an earlier message of its batch failed"
	case !s.Answered:
		return "no answer in the recording"
	}
	return strings.Join(s.Tags, ", ")
}

// AppendText appends s as one line: time, user@database, the statement with
// its parameters, "=>", the result. Control characters in the statement
// are escaped as Printer does, so that it stays one line.
func (s *Statement) AppendText(b []byte) []byte {
	b = s.Time.Local().AppendFormat(b, TimeLayout)
	b = append(b, ' ')
	b = append(b, s.User...)
	b = append(b, '@')
	b = append(b, s.Database...)
	b = append(b, ' ')
	b = s.AppendStatement(b)
	b = append(b, " => "...)
	b = appendOneLine(b, s.Result())
	return append(b, '\n')
}

// AppendStatement appends the statement as AppendText shows it, on one
// line: its SQL with its parameters, "(empty)" for an empty query,
// "(connection)" for a connection's error.
func (s *Statement) AppendStatement(b []byte) []byte {
	switch {
	case s.Connection:
		b = append(b, "(connection)"...)
	case s.Text == "":
		b = append(b, "(empty)"...)
	default:
		b = appendOneLine(b, s.Text)
	}
	if len(s.Params) > 0 {
		b = append(b, " ["...)
		for i, p := range s.Params {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = fmt.Appendf(b, "$%d=", i+1)
			switch {
			case p.Null:
				b = append(b, "NULL"...)
			case p.Binary:
				b = fmt.Appendf(b, "(binary, %d bytes)", len(p.Value))
			default:
				b = append(b, '\'')
				b = appendOneLine(b, strings.ReplaceAll(p.Value, "'", "''"))
				b = append(b, '\'')
			}
		}
		b = append(b, ']')
	}
	return b
}

// appendOneLine appends text with control characters and backslashes
// escaped.
func appendOneLine(b []byte, text string) []byte {
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == '\\':
			b = append(b, `\\`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f:
			b = fmt.Appendf(b, `\x%02x`, text[i])
		default:
			b = append(b, text[i:i+size]...)
		}
		i += size
	}
	return b
}

// statementJSON is a Statement as --format json writes it.
type statementJSON struct {
	Time        string   `json:"time"`
	File        string   `json:"file,omitempty"`
	User        string   `json:"user"`
	Database    string   `json:"database"`
	Application string   `json:"application,omitempty"`
	Protocol    string   `json:"protocol"`
	Statement   string   `json:"statement"`
	Params      []any    `json:"params,omitempty"`
	Result      string   `json:"result"`
	Tags        []string `json:"tags,omitempty"`
	Rows        int64    `json:"rows"`
	Error       *PGError `json:"error,omitempty"`
	Skipped     bool     `json:"skipped,omitempty"`
	Answered    bool     `json:"answered"`
}

// AppendJSON appends s as one JSON object and a newline; file, if not
// empty, is added as "file". "protocol" is "simple", "extended" or
// "connection" (an error about the connection). Parameters are strings,
// null, or for binary ones {"binary": "<hex>"}.
func (s *Statement) AppendJSON(b []byte, file string) []byte {
	j := statementJSON{
		Time: s.Time.Local().Format("2006-01-02T15:04:05.000000Z07:00"), File: file,
		User: s.User, Database: s.Database, Application: s.Application,
		Protocol: "simple", Statement: s.Text, Result: s.Result(), Tags: s.Tags,
		Rows: s.Rows, Error: s.Error, Skipped: s.Skipped, Answered: s.Answered,
	}
	switch {
	case s.Connection:
		j.Protocol = "connection"
	case s.Extended:
		j.Protocol = "extended"
	}
	for _, p := range s.Params {
		switch {
		case p.Null:
			j.Params = append(j.Params, nil)
		case p.Binary:
			j.Params = append(j.Params, map[string]string{"binary": fmt.Sprintf("%x", p.Value)})
		default:
			j.Params = append(j.Params, p.Value)
		}
	}
	out, err := json.Marshal(j)
	if err != nil {
		// Every field is a string, number or bool: this cannot happen.
		panic(err)
	}
	return append(append(b, out...), '\n')
}

// Errors of SQL: the recording is not one it can decode. Each is wrapped
// with where it was found.
var (
	ErrPrintable   = errors.New("the recording holds printable characters only (-s): the binary PostgreSQL protocol is destroyed and cannot be decoded")
	ErrEncrypted   = errors.New("the session is encrypted (TLS or GSSAPI): its statements cannot be read from the recording")
	ErrNotPostgres = errors.New("not a PostgreSQL session")
)

// SQL decodes a PostgreSQL session, protocol 3.0, from the blocks of a
// recording made with -M -L (both directions, with stamps): blocks go in,
// in the file's order, with Block; each statement comes out, with the
// server's answer, through the function given to NewSQL, in the order the
// client sent them. End reports those still waiting for an answer.
//
// The client's messages give the statements: the startup message (user,
// database; after an SSLRequest or GSSENCRequest the server's one-byte
// answer, 'N' to go on in clear), Query, Parse, Bind, Execute, Describe,
// Close, Sync. The server's give the answers: ParseComplete, BindComplete,
// CommandComplete, DataRow, EmptyQueryResponse, PortalSuspended,
// CopyInResponse, FunctionCallResponse, ErrorResponse, ReadyForQuery.
// Passwords ('p' messages) are skipped, never shown. A message may span
// blocks; its time is that of the block holding its first byte.
//
// A replay uses SQL twice: on the recording, with OnMessage, to get the
// client's messages to send again and the statements' recorded outcomes;
// and on the replayed session (Resume, then the messages sent and the
// bytes received as blocks), to get the replayed outcomes, with Awaiting
// and CopyIn to know when the server has answered all it was sent.
//
// SQL holds partial messages and the statements awaiting an answer; it
// holds no resources. It is not safe for concurrent use.
type SQL struct {
	emit  func(Statement) error
	onMsg func(Message) error
	err   error // sticky

	client, server msgStream
	head           []byte   // the client's first bytes, to tell why it is not PostgreSQL
	started        bool     // the startup message was read
	params         []string // the startup message's parameters: name, value, name, value…
	user, db, app  string
	seq            int  // the client's query messages so far (Statement.Seq)
	copyIn         bool // the server is in COPY FROM STDIN: it waits for CopyData
	skipToSync     bool // an extended batch failed: the server skips all up to its Sync
	msg            []byte

	stmts   map[string]string // prepared statement name → query
	portals map[string]portal
	queue   []pending // client messages awaiting the server's answer, in order
}

// Message is one message the client sent after its startup message, as it
// was on the wire.
type Message struct {
	// Type is its type byte: 'Q', 'P', 'B', 'E', 'S', 'd', 'X'…
	Type byte
	// Data is the whole message: type byte, length, body. It belongs to
	// the receiver only during the call.
	Data []byte
	// Time is the stamp of the block that held its first byte.
	Time time.Time
}

type portal struct {
	query  string
	params []Param
}

// pending is a client message the server answers.
type pending struct {
	kind  byte       // its type
	st    *Statement // Query, Execute: the statement to complete
	query string     // Parse, Bind: the statement's text
	t     time.Time  // Parse, Bind: its time
	seq   int        // its Statement.Seq
}

// NewSQL returns an SQL decoder calling emit for each statement; an error
// from emit ends the decoding and is returned by Block or End.
func NewSQL(emit func(Statement) error) *SQL {
	return &SQL{
		emit:    emit,
		client:  msgStream{untyped: true},
		stmts:   map[string]string{},
		portals: map[string]portal{},
	}
}

// OnMessage makes d call fn with each message the client sent after its
// startup message, in order, before d decodes it, except the password
// messages ('p') of authentication: what a replay sends again. An error
// from fn ends the decoding and is returned by Block. Call it before the
// first Block.
func (d *SQL) OnMessage(fn func(Message) error) {
	d.onMsg = fn
	d.client.keepAll = true
}

// Resume tells d that the startup and authentication are done, as for a
// replayed session that authenticated by other means: the client's next
// bytes are typed messages; its statements are user's on database,
// application's.
func (d *SQL) Resume(user, database, application string) {
	d.started, d.client.untyped = true, false
	d.user, d.db, d.app = user, database, application
}

// Parameters returns the startup message's parameters as name, value
// pairs, in the order the client sent them (user, database, options,
// application_name…); nil before the startup message.
func (d *SQL) Parameters() []string { return d.params }

// Awaiting returns how many of the client's messages still await an
// answer from the server: 0 when the server has answered everything the
// client sent.
func (d *SQL) Awaiting() int { return len(d.queue) }

// CopyIn says that the server is in COPY FROM STDIN: it waits for the
// client's CopyData, CopyDone or CopyFail, not for more of its messages.
func (d *SQL) CopyIn() bool { return d.copyIn }

// Block decodes the next block of the recording. A block without a stamp
// cannot be told client from server; it is an error.
func (d *SQL) Block(b Block) error {
	if d.err != nil {
		return d.err
	}
	if !b.Stamped && len(b.Data) > 0 {
		d.err = errors.New("a block without stamp line: --sql needs a recording made with -M")
		return d.err
	}
	if b.Dir == datafile.In {
		if len(d.head) < maxStartup {
			d.head = append(d.head, b.Data[:min(len(b.Data), maxStartup-len(d.head))]...)
		}
		d.err = d.client.feed(b.Data, b.Time, b.Offset, d.clientMessage)
		if errors.Is(d.err, ErrNotPostgres) && !d.started && printableStartup(d.head) {
			d.err = ErrPrintable
		}
	} else {
		d.err = d.server.feed(b.Data, b.Time, b.Offset, d.serverMessage)
	}
	return d.err
}

// End emits the statements still waiting for an answer and reports a
// message cut off by the end of the recording.
func (d *SQL) End() error {
	if d.err != nil {
		return d.err
	}
	for _, p := range d.queue {
		if p.st != nil {
			if err := d.emit(*p.st); err != nil {
				return err
			}
		}
	}
	d.queue = nil
	if !d.started && len(d.head) > 0 {
		if printableStartup(d.head) {
			return ErrPrintable
		}
		return fmt.Errorf("the recording ends before the client's startup message: %w", ErrNotPostgres)
	}
	if d.client.partial() {
		return fmt.Errorf("the client's last message is cut off by the end of the recording")
	}
	return nil
}

// msgStream cuts one direction's bytes into messages: a type byte (none
// for the client's first messages), a 32-bit length that counts itself,
// the body.
type msgStream struct {
	untyped bool
	keepAll bool // gather every body, not only keptType's
	raw     int  // single bytes to pass as they are (server: answers to SSLRequest)

	hdr  [5]byte
	nhdr int
	need int  // body bytes still to come
	keep bool // the body is gathered; else skipped
	body []byte
	typ  byte
	t    time.Time
	off  int64 // content offset of the message's first byte
}

// maxKept is the largest message body SQL gathers (a Query's text), and
// maxStartup the largest untyped message (PostgreSQL's own limit): a length
// beyond them means the stream is not what SQL thinks.
const (
	maxKept    = 1 << 30
	maxStartup = 10000
)

func (m *msgStream) partial() bool { return m.nhdr > 0 || m.need > 0 }

// feed cuts p into messages and calls fn for each complete one. t and off
// are the time and offset of p's block.
func (m *msgStream) feed(p []byte, t time.Time, off int64, fn func(typ byte, body []byte, t time.Time, off int64) error) error {
	for len(p) > 0 {
		if m.raw > 0 {
			m.raw--
			if err := fn(0, p[:1], t, off); err != nil {
				return err
			}
			p, off = p[1:], off+1
			continue
		}
		if m.need == 0 && m.nhdr == 0 {
			m.t, m.off = t, off
		}
		hl := 5
		if m.untyped {
			hl = 4
		}
		if m.nhdr < hl {
			n := copy(m.hdr[m.nhdr:hl], p)
			m.nhdr += n
			p, off = p[n:], off+int64(n)
			if m.nhdr < hl {
				return nil
			}
			if !m.untyped {
				m.typ = m.hdr[0]
			} else {
				m.typ = 0
			}
			length := int64(binary.BigEndian.Uint32(m.hdr[hl-4 : hl]))
			if length < 4 || length-4 > maxKept || (m.untyped && length > maxStartup) {
				return fmt.Errorf("at byte %d: message %q with length %d: %w", m.off, m.typ, length, ErrNotPostgres)
			}
			m.need = int(length - 4)
			m.keep = m.untyped || m.keepAll || keptType(m.typ)
			m.body = m.body[:0]
			if m.need == 0 {
				m.nhdr = 0
				if err := fn(m.typ, nil, m.t, m.off); err != nil {
					return err
				}
				continue
			}
		}
		n := min(m.need, len(p))
		if m.keep {
			m.body = append(m.body, p[:n]...)
		}
		m.need -= n
		p, off = p[n:], off+int64(n)
		if m.need == 0 {
			m.nhdr = 0
			if err := fn(m.typ, m.body, m.t, m.off); err != nil {
				return err
			}
		}
	}
	return nil
}

// keptType says whose bodies SQL reads; the others (rows, passwords) are
// skipped unread.
func keptType(typ byte) bool {
	return strings.IndexByte("QPBECZ", typ) >= 0
}

// Protocol codes of the client's untyped messages.
const (
	protocol3     = 196608
	sslRequest    = 80877103
	gssRequest    = 80877104
	cancelRequest = 80877102
)

func (d *SQL) clientMessage(typ byte, body []byte, t time.Time, off int64) error {
	if d.client.untyped {
		return d.startup(body, off)
	}
	if strings.IndexByte("QPBEDCSFXHpdcf", typ) < 0 {
		return fmt.Errorf("client byte %d: unknown message type %q: %w", off, typ, ErrNotPostgres)
	}
	if d.onMsg != nil && typ != 'p' {
		d.msg = append(append(d.msg[:0], typ), 0, 0, 0, 0)
		binary.BigEndian.PutUint32(d.msg[1:], uint32(4+len(body)))
		d.msg = append(d.msg, body...)
		if err := d.onMsg(Message{Type: typ, Data: d.msg, Time: t}); err != nil {
			return err
		}
	}
	if strings.IndexByte("QPBEDCSF", typ) >= 0 {
		d.seq++
	}
	if d.skipToSync && strings.IndexByte("QPBEDCF", typ) >= 0 {
		return d.skipped(typ, body, t)
	}
	switch typ {
	case 'Q':
		st := d.statement(t)
		st.Text = cstring(body)
		d.queue = append(d.queue, pending{kind: 'Q', st: st, seq: d.seq})
	case 'P':
		name, rest := cut(body)
		query, _ := cut(rest)
		d.stmts[name] = query
		d.queue = append(d.queue, pending{kind: 'P', query: query, t: t, seq: d.seq})
	case 'B':
		name, rest := cut(body)
		stmt, rest := cut(rest)
		d.portals[name] = portal{query: d.stmts[stmt], params: bindParams(rest)}
		d.queue = append(d.queue, pending{kind: 'B', query: d.stmts[stmt], t: t, seq: d.seq})
	case 'E':
		name, _ := cut(body)
		pt := d.portals[name]
		st := d.statement(t)
		st.Text, st.Params, st.Extended = pt.query, pt.params, true
		d.queue = append(d.queue, pending{kind: 'E', st: st, seq: d.seq})
	case 'C':
		if len(body) > 0 {
			name, _ := cut(body[1:])
			if body[0] == 'S' {
				delete(d.stmts, name)
			} else {
				delete(d.portals, name)
			}
		}
		d.queue = append(d.queue, pending{kind: 'C', seq: d.seq})
	case 'S':
		// In COPY FROM STDIN the server ignores Sync (libpq sends one
		// with the COPY's Execute, not knowing what it runs).
		if !d.copyIn {
			d.queue = append(d.queue, pending{kind: 'S', seq: d.seq})
			d.skipToSync = false
		}
	case 'D', 'F':
		d.queue = append(d.queue, pending{kind: typ, seq: d.seq})
	case 'c', 'f':
		d.copyIn = false
	}
	return nil
}

// skipped takes a message the client sent after an error of its batch
// had come, before the batch's Sync: the server skips it. A Query or
// Execute is listed as not run, with the SQL the client meant.
func (d *SQL) skipped(typ byte, body []byte, t time.Time) error {
	st := d.statement(t)
	st.Skipped, st.Answered = true, true
	switch typ {
	case 'Q':
		st.Text = cstring(body)
	case 'P':
		name, rest := cut(body)
		d.stmts[name], _ = cut(rest)
		return nil
	case 'B':
		name, rest := cut(body)
		stmt, rest := cut(rest)
		d.portals[name] = portal{query: d.stmts[stmt], params: bindParams(rest)}
		return nil
	case 'E':
		name, _ := cut(body)
		pt := d.portals[name]
		st.Text, st.Params, st.Extended = pt.query, pt.params, true
	default:
		return nil
	}
	return d.emit(*st)
}

// startup reads the client's untyped messages: SSLRequest, GSSENCRequest,
// CancelRequest and the startup message.
func (d *SQL) startup(body []byte, off int64) error {
	if len(body) < 4 {
		return d.notPostgres(off)
	}
	code := binary.BigEndian.Uint32(body)
	switch {
	case code == sslRequest || code == gssRequest:
		d.server.raw++
	case code == cancelRequest:
		// A connection of its own that asks to cancel another's query: no
		// statements follow.
		d.client.untyped = false
		d.started = true
	case code>>16 == 3:
		d.client.untyped = false
		d.started = true
		for rest := body[4:]; len(rest) > 1; {
			var k, v string
			k, rest = cut(rest)
			v, rest = cut(rest)
			d.params = append(d.params, k, v)
			switch k {
			case "user":
				d.user = v
			case "database":
				d.db = v
			case "application_name":
				d.app = v
			}
		}
		if d.db == "" {
			d.db = d.user
		}
	default:
		return d.notPostgres(off)
	}
	return nil
}

// notPostgres is the error of a client stream that does not start like a
// PostgreSQL client's (Block tells a recording made with -s apart).
func (d *SQL) notPostgres(off int64) error {
	return fmt.Errorf("client byte %d: no startup message: %w", off, ErrNotPostgres)
}

// printableStartup says whether b looks like a startup message that went
// through -s: only bytes -s keeps (a real one always holds zero bytes),
// starting with the blank that replaced its length's high bytes.
func printableStartup(b []byte) bool {
	if len(b) == 0 || b[0] != ' ' {
		return false
	}
	for _, c := range b {
		if !(c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c <= 0x7e)) {
			return false
		}
	}
	return true
}

func (d *SQL) statement(t time.Time) *Statement {
	return &Statement{Time: t, User: d.user, Database: d.db, Application: d.app, Seq: d.seq}
}

func (d *SQL) serverMessage(typ byte, body []byte, t time.Time, off int64) error {
	if typ == 0 && len(body) == 1 { // the one-byte answer to SSLRequest/GSSENCRequest
		if body[0] != 'N' {
			return ErrEncrypted
		}
		return nil
	}
	head := func(kinds string) *pending {
		if len(d.queue) > 0 && strings.IndexByte(kinds, d.queue[0].kind) >= 0 {
			return &d.queue[0]
		}
		return nil
	}
	switch typ {
	case '1':
		d.pop(head("P"))
	case '2':
		d.pop(head("B"))
	case '3':
		d.pop(head("C"))
	case 'n', 'T':
		d.pop(head("D"))
	case 'G', 'W':
		// CopyInResponse, CopyBothResponse: the server wants CopyData
		// and ignores the Syncs sent after the COPY's Execute.
		d.copyIn = true
		if len(d.queue) > 0 {
			q := d.queue[:1]
			for _, p := range d.queue[1:] {
				if p.kind != 'S' {
					q = append(q, p)
				}
			}
			d.queue = q
		}
	case 'D':
		if h := head("QE"); h != nil {
			h.st.Rows++
		}
	case 'C', 'I', 's':
		h := head("QE")
		if h == nil {
			return nil
		}
		tag := "EMPTY"
		switch typ {
		case 'C':
			tag = cstring(body)
		case 's':
			tag = "SUSPENDED"
		}
		h.st.Tags = append(h.st.Tags, tag)
		h.st.Answered = true
		if h.kind == 'E' {
			return d.complete()
		}
	case 'E':
		// An error ends COPY FROM STDIN.
		d.copyIn = false
		return d.failed(errorFields(body), t)
	case 'Z':
		for len(d.queue) > 0 {
			k := d.queue[0].kind
			if err := d.complete(); err != nil {
				return err
			}
			if k == 'S' || k == 'Q' || k == 'F' {
				break
			}
		}
	}
	return nil
}

// pop removes p, the head of the queue, if it is not nil.
func (d *SQL) pop(p *pending) {
	if p != nil {
		d.queue = d.queue[1:]
	}
}

// complete removes the head of the queue and emits its statement.
func (d *SQL) complete() error {
	p := d.queue[0]
	d.queue = d.queue[1:]
	if p.st == nil {
		return nil
	}
	if p.kind == 'Q' {
		p.st.Answered = true
	}
	return d.emit(*p.st)
}

// failed handles an ErrorResponse at t. In a Query, it is the Query's
// error (the server then ends the Query). Otherwise it fails the head
// message of a batch, and the server skips the rest up to the Sync: the
// error is reported with the batch's next Execute (or, for a Parse or Bind
// without one, with its text), and the Executes after it as skipped. With
// no message waiting, it is about the connection (a failed login).
func (d *SQL) failed(e *PGError, t time.Time) error {
	if len(d.queue) == 0 {
		st := d.statement(t)
		st.Error, st.Answered, st.Connection, st.Seq = e, true, true, 0
		return d.emit(*st)
	}
	switch h := d.queue[0]; h.kind {
	case 'Q':
		h.st.Error, h.st.Answered = e, true
		return nil
	case 'F':
		return nil // a FunctionCall ends with ReadyForQuery, failed or not
	}
	reported, seq := false, d.queue[0].seq
	for len(d.queue) > 0 && d.queue[0].kind != 'S' {
		p := d.queue[0]
		d.queue = d.queue[1:]
		st := p.st
		switch {
		case st != nil && !reported:
			st.Error, st.Answered, reported = e, true, true
		case st != nil:
			st.Skipped, st.Answered = true, true
		case (p.kind == 'P' || p.kind == 'B') && !reported && !d.executedLater():
			st = d.statement(p.t)
			st.Text, st.Extended, st.Error, st.Answered, st.Seq = p.query, true, e, true, p.seq
			reported = true
		default:
			continue
		}
		if err := d.emit(*st); err != nil {
			return err
		}
	}
	// Without its Sync sent yet, the server skips all up to it.
	d.skipToSync = len(d.queue) == 0
	if !reported {
		st := d.statement(t)
		st.Extended, st.Error, st.Answered, st.Seq = true, e, true, seq
		return d.emit(*st)
	}
	return nil
}

// executedLater says whether an Execute waits in the queue before the next
// Sync: it will carry the batch's error.
func (d *SQL) executedLater() bool {
	for _, p := range d.queue {
		switch p.kind {
		case 'S':
			return false
		case 'E':
			return true
		}
	}
	return false
}

// errorFields reads an ErrorResponse's fields.
func errorFields(body []byte) *PGError {
	e := &PGError{}
	var sev string
	for len(body) > 1 {
		code := body[0]
		var v string
		v, body = cut(body[1:])
		switch code {
		case 'S':
			sev = v
		case 'V':
			e.Severity = v
		case 'C':
			e.Code = v
		case 'M':
			e.Message = v
		case 'D':
			e.Detail = v
		case 'H':
			e.Hint = v
		}
	}
	if e.Severity == "" {
		e.Severity = sev
	}
	return e
}

// bindParams reads a Bind's parameters from what follows its names.
func bindParams(b []byte) []Param {
	u16 := func() int {
		if len(b) < 2 {
			b = nil
			return 0
		}
		v := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		return v
	}
	formats := make([]int, u16())
	for i := range formats {
		formats[i] = u16()
	}
	params := make([]Param, u16())
	for i := range params {
		if len(b) < 4 {
			return params[:i]
		}
		n := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		switch {
		case len(formats) == 1:
			params[i].Binary = formats[0] == 1
		case i < len(formats):
			params[i].Binary = formats[i] == 1
		}
		if n < 0 {
			params[i].Null = true
			continue
		}
		n = min(n, int32(len(b)))
		params[i].Value = string(b[:n])
		b = b[n:]
	}
	return params
}

// cut returns the zero-terminated string at the start of b and what
// follows it.
func cut(b []byte) (string, []byte) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), nil
	}
	return string(b[:i]), b[i+1:]
}

func cstring(b []byte) string {
	s, _ := cut(b)
	return s
}
