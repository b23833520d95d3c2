package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/playback"
)

// postgres replays one PostgreSQL recording to --postgres and reports
// each statement whose outcome differs from the recorded one.
func (c *Cmd) postgres(ctx context.Context, clk clock, r recording, rep *report) {
	s := &pgSession{c: c, file: r.path, clk: clk, rep: rep}
	err := s.run(ctx, r.first)
	if err != nil && ctx.Err() == nil {
		rep.problem(r.path, err)
	}
	rep.ended()
}

// pgSession is the replay of one PostgreSQL recording. The recording is
// decoded by one playback.SQL, which hands on the client's messages and
// the recorded statements; the messages are sent to the target in the
// batches the client sent them (up to a Sync, Flush, Query, CopyDone or
// CopyFail), each when it is due, and after each batch the target's
// answers are read until it has answered everything (or wants COPY data).
// All of it runs on the session's goroutine, except the writing of a
// large batch (see flush).
// A second playback.SQL decodes the replayed session, messages and
// answers, into the replayed statements. Both number the client's
// messages alike (Statement.Seq) and give their statements in that
// order: the two streams are merged, and a recorded and a replayed
// statement of the same Seq compared.
type pgSession struct {
	c    *Cmd
	file string
	clk  clock
	rep  *report

	rec        *playback.SQL // the recording
	queued     []queued      // its client's messages not yet sent
	queuedData []byte
	outBlocks  int // the server's blocks in the recording, and their bytes
	outBytes   int
	last       time.Time // the last stamp read

	n        int                  // recorded statements so far: cat --sql's numbers
	recorded []numbered           // recorded statements awaiting the replayed one, by Seq
	replayed []playback.Statement // replayed statements awaiting the recorded one, by Seq

	conn      net.Conn            // the target, after authentication; nil until the first message
	stop      func() bool         // ends closing conn when the replay is interrupted
	batch     []byte              // messages to send
	buf       []byte              // what the target answers is read into
	rp        *playback.SQL       // the replayed session
	sentSeq   int                 // the query messages sent (Statement.Seq)
	synthetic []int               // Seqs of messages the replay sent of its own
	inBatch   bool                // messages were sent since the last wait
	ended     bool                // the Terminate was sent, or the session ended before anything was sent
	fatal     *playback.Statement // the target's error about the connection, before it ended it
	lostErr   error               // why the session with the target ended
	lastN     int                 // the number of the last recorded statement compared
}

// errStop ends the reading of a recording early.
var errStop = errors.New("stop")

// queued is a client message read from the recording: its type, its time
// and where its bytes end in queuedData.
type queued struct {
	typ byte
	t   time.Time
	end int
}

// numbered is a recorded statement with its number.
type numbered struct {
	n  int
	st playback.Statement
}

// run replays the recording, starting when first is due.
func (s *pgSession) run(ctx context.Context, first time.Time) (err error) {
	if err := s.clk.wait(ctx, first); err != nil {
		return err
	}
	s.rec = playback.NewSQL(s.recordedStatement)
	s.rec.OnMessage(s.queue)
	defer func() {
		s.close()
		switch {
		case s.lostErr != nil:
			what := s.lostErr.Error()
			switch {
			case s.fatal != nil:
				what = s.fatal.Result()
			case errors.Is(s.lostErr, io.EOF):
				what = "the target closed the connection"
			}
			err = fmt.Errorf("the session ended after statement %d: %s", s.lastN, what)
		case err == nil:
			s.settle()
		}
	}()
	err = blocks(s.file, func(b playback.Block) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.last = b.Time
		if b.Dir == datafile.Out {
			s.outBlocks++
			s.outBytes += len(b.Data)
		}
		if err := s.rec.Block(b); err != nil {
			if s.lostErr != nil {
				return errStop
			}
			return s.recordingError(err)
		}
		if s.lostErr != nil {
			// The recorded outcomes of the statements replayed last.
			s.queued, s.queuedData = s.queued[:0], s.queuedData[:0]
			return nil
		}
		err := s.send(ctx)
		if s.lostErr != nil {
			return nil
		}
		return err
	})
	s.rep.read(s.last)
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return err
	}
	if err := s.rec.End(); err != nil && s.lostErr == nil {
		return s.recordingError(err)
	}
	if s.lostErr != nil {
		return nil // reported by close, once the statements replayed are compared
	}
	if s.outBlocks > 0 && s.outBytes == 0 {
		s.rep.note(s.file, "the server's data is not in the recording (made without -L): the statements were replayed, not compared")
	}
	return s.finish(ctx)
}

// recordingError is what the recording's decoder found wrong.
func (s *pgSession) recordingError(err error) error {
	if s.conn != nil {
		return fmt.Errorf("after statement %d of the recording: %w", s.n, err)
	}
	return err
}

// queue keeps a client message of the recording until send.
func (s *pgSession) queue(m playback.Message) error {
	s.queuedData = append(s.queuedData, m.Data...)
	s.queued = append(s.queued, queued{typ: m.Type, t: m.Time, end: len(s.queuedData)})
	return nil
}

// send sends the queued messages.
func (s *pgSession) send(ctx context.Context) error {
	start := 0
	for _, q := range s.queued {
		if err := s.message(ctx, q.typ, s.queuedData[start:q.end], q.t); err != nil {
			return err
		}
		start = q.end
	}
	s.queued, s.queuedData = s.queued[:0], s.queuedData[:0]
	return nil
}

// message sends one message of the recording; after the last of a batch
// it waits for the target's answers.
func (s *pgSession) message(ctx context.Context, typ byte, data []byte, t time.Time) error {
	if s.ended {
		return nil
	}
	if s.conn == nil {
		if typ == 'X' {
			s.ended = true // a session without statements: nothing to replay
			return nil
		}
		if err := s.clk.wait(ctx, t); err != nil {
			return err
		}
		if err := s.connect(ctx); err != nil {
			return err
		}
	}
	if !s.inBatch {
		if err := s.clk.wait(ctx, t); err != nil {
			return err
		}
		s.inBatch = true
	}
	if s.rp.CopyIn() && strings.IndexByte("dcfHS", typ) < 0 {
		if err := s.failCopy(ctx); err != nil {
			return err
		}
	}
	if err := s.write(data, t); err != nil {
		return err
	}
	if strings.IndexByte("QSHcfFX", typ) < 0 {
		if len(s.batch) >= maxDirect {
			return s.flush() // a long COPY's data, a long pipeline
		}
		return nil
	}
	if err := s.flush(); err != nil {
		return err
	}
	s.inBatch = false
	if typ == 'X' {
		s.ended = true
		return nil
	}
	return s.wait(ctx)
}

// write adds a message to the batch and hands it to the replay's
// decoder.
func (s *pgSession) write(data []byte, t time.Time) error {
	if strings.IndexByte("QPBEDCSF", data[0]) >= 0 {
		s.sentSeq++
	}
	s.batch = append(s.batch, data...)
	return s.rp.Block(playback.Block{Dir: datafile.In, Stamped: true, Time: t, Data: data})
}

// maxDirect is the largest batch flush writes at once. Loopback and LAN
// sockets buffer more than that between the two sides, so the write
// completes even if the target does not read while it answers.
const maxDirect = 64 << 10

// flush sends the batch. A small one is written at once. A large one is
// written by a goroutine of its own while the target's answers are read,
// so that neither side can wait for the other to read: a pipeline whose
// answers fill the sockets before its last message is written. When
// the write ends, the writer wakes the reading with a read deadline.
func (s *pgSession) flush() error {
	if len(s.batch) <= maxDirect {
		_, err := s.conn.Write(s.batch)
		s.batch = s.batch[:0]
		if err != nil {
			return s.lost(err)
		}
		return nil
	}
	written := make(chan error, 1)
	go writeBatch(s.conn, s.batch, written)
	for {
		n, err := s.conn.Read(s.buf)
		derr := s.answer(s.buf[:n])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = <-written
			s.conn.SetReadDeadline(time.Time{})
			s.batch = s.batch[:0]
			if err == nil {
				err = derr
			}
			if err != nil {
				return s.lost(err)
			}
			return nil
		}
		if err == nil {
			err = derr
		}
		if err != nil {
			s.conn.Close() // the writer's end
			<-written
			return s.lost(err)
		}
	}
}

// writeBatch writes b to conn, then makes conn's reading return, and
// sends the write's error.
func writeBatch(conn net.Conn, b []byte, written chan<- error) {
	_, err := conn.Write(b)
	conn.SetReadDeadline(time.Now())
	written <- err
}

// answer hands what the target sent to the replay's decoder.
func (s *pgSession) answer(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if err := s.rp.Block(playback.Block{Dir: datafile.Out, Stamped: true, Data: b}); err != nil {
		return fmt.Errorf("the target's answer: %w", err)
	}
	return nil
}

// Messages the replay sends of its own.
var (
	copyFail  = encode(&pgproto3.CopyFail{Message: "ipprotd replay: the recording has no data for this COPY"})
	syncMsg   = encode(&pgproto3.Sync{})
	terminate = encode(&pgproto3.Terminate{})
)

func encode(m pgproto3.FrontendMessage) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err) // fixed messages, far below any limit
	}
	return b
}

// failCopy ends a COPY FROM STDIN that the target started and the
// recording has no data for (the recorded server refused the COPY): a
// CopyFail, and a Sync that an extended COPY's error waits for (a simple
// one's is answered by a ReadyForQuery of its own). The Sync is the
// replay's, not the recording's: its Seq is noted, so that the replayed
// statements keep the recording's numbers.
func (s *pgSession) failCopy(ctx context.Context) error {
	if err := s.write(copyFail, time.Now()); err != nil {
		return err
	}
	if err := s.write(syncMsg, time.Now()); err != nil {
		return err
	}
	s.synthetic = append(s.synthetic, s.sentSeq)
	if err := s.flush(); err != nil {
		return err
	}
	return s.wait(ctx)
}

// wait reads the target's answers until it has answered everything it
// was sent, or wants COPY data.
func (s *pgSession) wait(ctx context.Context) error {
	for s.rp.Awaiting() > 0 && !s.rp.CopyIn() {
		n, err := s.conn.Read(s.buf)
		if derr := s.answer(s.buf[:n]); derr != nil {
			return s.lost(derr)
		}
		if ctx.Err() != nil {
			return ctx.Err() // the connection was closed for it
		}
		if err != nil {
			return s.lost(err)
		}
	}
	return nil
}

// lost notes that the session with the target ended, with err: it closed
// the connection, or its answer cannot be read. The rest of the
// recording is only read for the outcomes of the statements replayed;
// run reports it.
func (s *pgSession) lost(err error) error {
	if s.lostErr == nil {
		s.lostErr = err
	}
	return err
}

// finish ends the replay at the end of the recording. A recording that
// ends within a batch (the connection was cut, or is still running) has
// it sent, and the answers that come within --wait read; a session that
// the recording does not end with a Terminate is ended with one.
func (s *pgSession) finish(ctx context.Context) error {
	if s.conn == nil || s.ended {
		return nil
	}
	if s.inBatch {
		if err := s.flush(); err != nil {
			return err
		}
		s.conn.SetReadDeadline(time.Now().Add(s.c.Wait))
		err := s.wait(ctx)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.lostErr, err = nil, nil // no more answers: the recording's end is the session's
		}
		if err != nil {
			return err
		}
	}
	s.conn.Write(terminate)
	s.ended = true
	return nil
}

// connect authenticates to the target anew, with --postgres's
// credentials and the recorded startup message's parameters (its
// database where CONNINFO names none, its application_name, options,
// client_encoding…, those CONNINFO sets excepted), and takes over the
// connection.
func (s *pgSession) connect(ctx context.Context) error {
	cfg := s.c.pg.Copy()
	p := s.rec.Parameters()
	for i := 0; i+1 < len(p); i += 2 {
		k, v := p[i], p[i+1]
		switch {
		case k == "user" || k == "replication" || strings.HasPrefix(k, "_pq_."):
		case k == "database":
			if cfg.Database == "" {
				cfg.Database = v
			}
		default:
			if _, set := cfg.RuntimeParams[k]; !set {
				cfg.RuntimeParams[k] = v
			}
		}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = dialTimeout
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return fmt.Errorf("connecting: %w", err)
	}
	s.conn = hc.Conn
	s.stop = context.AfterFunc(ctx, func() { s.conn.Close() })
	s.buf = make([]byte, 64<<10)
	db := cfg.Database
	if db == "" {
		db = cfg.User
	}
	s.rp = playback.NewSQL(s.replayedStatement)
	s.rp.Resume(cfg.User, db, cfg.RuntimeParams["application_name"])
	// What pgconn read beyond the login's ReadyForQuery, a notice perhaps.
	for hc.Frontend.ReadBufferLen() > 0 {
		msg, err := hc.Frontend.Receive()
		if err != nil {
			return s.lost(err)
		}
		b, err := msg.Encode(nil)
		if err != nil {
			return s.lost(err)
		}
		if err := s.answer(b); err != nil {
			return s.lost(err)
		}
	}
	return nil
}

// close closes the connection; the replayed statements still waiting
// for an answer are taken as not answered.
func (s *pgSession) close() {
	if s.conn != nil {
		s.stop()
		s.conn.Close()
	}
	if s.rp != nil {
		s.rp.End()
	}
}

// recordedStatement takes a statement of the recording: it is compared
// with the replayed one of its Seq, or kept until that comes. Replayed
// statements before it that are still waiting have no recorded one.
func (s *pgSession) recordedStatement(st playback.Statement) error {
	s.n++
	if st.Connection {
		return nil // the recorded connection's own error, a failed login
	}
	for len(s.replayed) > 0 && s.replayed[0].Seq < st.Seq {
		s.compare(s.n-1, true, nil, &s.replayed[0])
		s.replayed = s.replayed[1:]
	}
	switch {
	case len(s.replayed) == 0:
		s.recorded = append(s.recorded, numbered{n: s.n, st: st})
	case s.replayed[0].Seq == st.Seq:
		s.compare(s.n, false, &st, &s.replayed[0])
		s.replayed = s.replayed[1:]
	default: // the replay is past it
		s.compare(s.n, false, &st, nil)
	}
	return nil
}

// replayedStatement takes a statement of the replay: it is compared with
// the recorded one of its Seq, or kept until that comes. Recorded
// statements before it that are still waiting have no replayed one.
func (s *pgSession) replayedStatement(st playback.Statement) error {
	if st.Connection {
		s.fatal = &st // an error about the connection: the target ends it
		return nil
	}
	st.Seq -= sort.SearchInts(s.synthetic, st.Seq)
	for len(s.recorded) > 0 && s.recorded[0].st.Seq < st.Seq {
		s.compare(s.recorded[0].n, false, &s.recorded[0].st, nil)
		s.recorded = s.recorded[1:]
	}
	switch {
	case len(s.recorded) == 0:
		s.replayed = append(s.replayed, st)
	case s.recorded[0].st.Seq == st.Seq:
		s.compare(s.recorded[0].n, false, &s.recorded[0].st, &st)
		s.recorded = s.recorded[1:]
	default: // the recording is past it
		s.compare(s.n-len(s.recorded), true, nil, &st)
	}
	return nil
}

// settle compares, at the end of a session replayed to its end, the
// statements that only one side has: a Parse or Bind that failed on its
// own in the recording and not in the replay, or the other way round.
func (s *pgSession) settle() {
	for i := range s.recorded {
		s.compare(s.recorded[i].n, false, &s.recorded[i].st, nil)
	}
	for i := range s.replayed {
		s.compare(s.n, true, nil, &s.replayed[i])
	}
	s.recorded, s.replayed = nil, nil
}

// compare compares a recorded statement with its replay and reports it.
// A nil one means that side has no statement for that message: its Parse
// or Bind succeeded. A statement the target did not answer (the session
// was cut) is no statement replayed; one the recording holds no answer
// for is replayed, not compared.
func (s *pgSession) compare(n int, after bool, rec, rep *playback.Statement) {
	if rep != nil && !rep.Answered {
		return
	}
	s.lastN = max(s.lastN, n)
	a, b := outcome(rec), outcome(rep)
	if (rec != nil && !rec.Answered) || a == b {
		s.rep.statement(nil)
		return
	}
	d := &difference{file: s.file, n: n, after: after, st: rec, recorded: a, replayed: b}
	if rec == nil {
		d.st = rep
	} else {
		d.recErr = rec.Error
	}
	if rep != nil {
		d.repErr = rep.Error
	}
	s.rep.statement(d)
}

// outcome is what is compared of a statement: its error's severity and
// SQLSTATE, or its CommandComplete tags with their row counts; "ok" for
// none (a Parse or Bind that succeeded).
func outcome(st *playback.Statement) string {
	switch {
	case st == nil:
		return "ok"
	case st.Error != nil:
		return st.Error.Severity + " " + st.Error.Code
	case st.Skipped:
		return "not run"
	case len(st.Tags) == 0:
		return "no result"
	}
	return strings.Join(st.Tags, ", ")
}
