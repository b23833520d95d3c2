package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/playback"
)

// report writes what the sessions find, as they find it, and sums it up:
// a line of text or a JSON object per difference (PostgreSQL) or per
// recording (raw) on stdout, problems on stderr (JSON: on stdout too, as
// objects with "error"), then the summary. On a terminal, stderr also
// shows a progress line, redrawn every progressTick and cleared before
// any other line is written. Sessions call it concurrently; every line is
// written whole.
type report struct {
	mu       sync.Mutex
	stdout   io.Writer
	stderr   io.Writer
	json     bool
	postgres bool
	total    int  // sessions
	tty      bool // stderr is a terminal: show progress
	shown    bool // the progress line is on the screen

	done, failed, differ int
	statements           int64
	sent, recSent        int64
	received, recRecv    int64
	recvUnknown          bool      // a recording without the server's data (made without -L)
	last                 time.Time // the latest stamp of the recordings read
	line                 []byte
}

func newReport(stdout, stderr io.Writer, json, postgres bool, sessions int) *report {
	return &report{stdout: stdout, stderr: stderr, json: json, postgres: postgres, total: sessions, tty: cmdline.IsTerminal(stderr)}
}

// progressTick is how often the progress line is redrawn.
const progressTick = 250 * time.Millisecond

// showProgress starts redrawing the progress line on a terminal and
// returns the function that stops it and clears the line.
func (r *report) showProgress() (stop func()) {
	if !r.tty {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go r.redraw(quit, done)
	return func() {
		close(quit)
		<-done
		r.mu.Lock()
		r.clear()
		r.mu.Unlock()
	}
}

// redraw draws the progress line every tick until quit is closed.
func (r *report) redraw(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(progressTick)
	defer tick.Stop()
	for {
		select {
		case <-quit:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		if r.postgres {
			fmt.Fprintf(r.stderr, "\r\x1b[Kreplay: %d/%d sessions done, %d statements, %d differ", r.done, r.total, r.statements, r.differ)
		} else {
			fmt.Fprintf(r.stderr, "\r\x1b[Kreplay: %d/%d sessions done, %d bytes sent, %d received", r.done, r.total, r.sent, r.received)
		}
		r.shown = true
		r.mu.Unlock()
	}
}

// clear removes the progress line; r.mu is held.
func (r *report) clear() {
	if r.shown {
		io.WriteString(r.stderr, "\r\x1b[K")
		r.shown = false
	}
}

// out writes r.line to w; r.mu is held.
func (r *report) out(w io.Writer) {
	r.clear()
	w.Write(r.line)
}

// object writes v as one JSON line on stdout; r.mu is held.
func (r *report) object(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings, numbers and the PGError struct only
	}
	r.line = append(append(r.line[:0], b...), '\n')
	r.out(r.stdout)
}

// problem reports that a recording could not be replayed, or not to its
// end; the replay goes on with the others.
func (r *report) problem(file string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	r.say(file, "error", err.Error())
}

// note says something of a recording that is no failure.
func (r *report) note(file, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.say(file, "note", msg)
}

// say writes "ipprotd: FILE: text" on stderr, or {"file":…, key: text};
// r.mu is held.
func (r *report) say(file, key, text string) {
	if r.json {
		r.object(map[string]string{"file": file, key: text})
		return
	}
	r.line = fmt.Appendf(r.line[:0], "ipprotd: %s: %s\n", file, text)
	r.out(r.stderr)
}

// read adds what a session found in its recording: its last stamp.
func (r *report) read(last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last.After(r.last) {
		r.last = last
	}
}

// difference is a statement whose replayed outcome differs from the
// recorded one.
type difference struct {
	file     string
	n        int  // its number in the recording, as cat --sql lists it
	after    bool // the recording does not list it: n is the statement before
	st       *playback.Statement
	recorded string
	replayed string
	recErr   *playback.PGError
	repErr   *playback.PGError
}

// differenceJSON is a difference as --format json writes it.
type differenceJSON struct {
	File          string            `json:"file"`
	Statement     int               `json:"statement"`
	After         bool              `json:"after,omitempty"`
	SQL           string            `json:"sql"`
	Recorded      string            `json:"recorded"`
	Replayed      string            `json:"replayed"`
	RecordedError *playback.PGError `json:"recorded_error,omitempty"`
	ReplayedError *playback.PGError `json:"replayed_error,omitempty"`
}

// statement counts a statement replayed and reports it if it differs.
func (r *report) statement(d *difference) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statements++
	if d == nil {
		return
	}
	r.differ++
	sql := string(d.st.AppendStatement(nil))
	if r.json {
		r.object(differenceJSON{File: d.file, Statement: d.n, After: d.after, SQL: sql,
			Recorded: d.recorded, Replayed: d.replayed, RecordedError: d.recErr, ReplayedError: d.repErr})
		return
	}
	which := "statement"
	if d.after {
		which = "after statement"
	}
	r.line = fmt.Appendf(r.line[:0], "%s: %s %d: recorded %s, replayed %s: %s\n", d.file, which, d.n, d.recorded, d.replayed, sql)
	r.out(r.stdout)
}

// ended counts a session that ended.
func (r *report) ended() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done++
}

// rawResult is what a raw replay of one recording did.
type rawResult struct {
	file              string
	sent, recSent     int64
	received, recRecv int64
	recvRecorded      bool // the recording holds the server's data (-L)
	took, recorded    time.Duration
}

// rawJSON is a rawResult as --format json writes it.
type rawJSON struct {
	File             string  `json:"file"`
	Sent             int64   `json:"sent"`
	RecordedSent     int64   `json:"recorded_sent"`
	Received         int64   `json:"received"`
	RecordedReceived *int64  `json:"recorded_received"` // null: not recorded
	Seconds          float64 `json:"seconds"`
	RecordedSeconds  float64 `json:"recorded_seconds"`
}

// raw reports a recording replayed raw: its line, then its problem, if
// any.
func (r *report) raw(res rawResult, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done++
	r.sent += res.sent
	r.recSent += res.recSent
	r.received += res.received
	r.recRecv += res.recRecv
	r.recvUnknown = r.recvUnknown || !res.recvRecorded
	if res.sent != res.recSent || (res.recvRecorded && res.received != res.recRecv) {
		r.differ++
	}
	if r.json {
		j := rawJSON{File: res.file, Sent: res.sent, RecordedSent: res.recSent, Received: res.received,
			Seconds: res.took.Seconds(), RecordedSeconds: res.recorded.Seconds()}
		if res.recvRecorded {
			j.RecordedReceived = &res.recRecv
		}
		r.object(j)
	} else {
		r.line = fmt.Appendf(r.line[:0], "%s: sent %d/%d bytes, %s\n", res.file, res.sent, res.recSent, received(res.received, res.recRecv, res.recvRecorded))
		r.out(r.stdout)
	}
	if err != nil {
		r.failed++
		r.say(res.file, "error", err.Error())
	}
}

// received is "received N/M bytes", or where the server's data was not
// recorded "received N bytes (not recorded)".
func received(n, recorded int64, known bool) string {
	if !known {
		return fmt.Sprintf("received %d bytes (not recorded)", n)
	}
	return fmt.Sprintf("received %d/%d bytes", n, recorded)
}

// summaryJSON is the last object of --format json.
type summaryJSON struct {
	Sessions            int      `json:"sessions"`
	Statements          *int64   `json:"statements,omitempty"`
	Sent                *int64   `json:"sent,omitempty"`
	RecordedSent        *int64   `json:"recorded_sent,omitempty"`
	Received            *int64   `json:"received,omitempty"`
	RecordedReceived    *int64   `json:"recorded_received,omitempty"`
	Differ              int      `json:"differ"`
	Failed              int      `json:"failed"`
	Interrupted         bool     `json:"interrupted,omitempty"`
	Seconds             float64  `json:"seconds"`
	RecordedSeconds     float64  `json:"recorded_seconds"`
	StatementsPerSecond *float64 `json:"statements_per_second,omitempty"`
}

// summary writes the summary: counts, then how long the replay took
// against how long the recordings span from first.
func (r *report) summary(took time.Duration, first time.Time, interrupted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var span time.Duration
	if !first.IsZero() && r.last.After(first) {
		span = r.last.Sub(first)
	}
	rate := 0.0
	if took > 0 {
		rate = float64(r.statements) / took.Seconds()
	}
	if r.json {
		s := summaryJSON{Sessions: r.total, Differ: r.differ, Failed: r.failed, Interrupted: interrupted,
			Seconds: took.Seconds(), RecordedSeconds: span.Seconds()}
		if r.postgres {
			s.Statements, s.StatementsPerSecond = &r.statements, &rate
		} else {
			s.Sent, s.RecordedSent, s.Received = &r.sent, &r.recSent, &r.received
			if !r.recvUnknown {
				s.RecordedReceived = &r.recRecv
			}
		}
		r.object(s)
		return
	}
	var b strings.Builder
	if r.postgres {
		fmt.Fprintf(&b, "%d sessions, %d statements, %d differ", r.total, r.statements, r.differ)
	} else {
		fmt.Fprintf(&b, "%d sessions, sent %d/%d bytes, %s, %d differ", r.total, r.sent, r.recSent,
			received(r.received, r.recRecv, !r.recvUnknown), r.differ)
	}
	if r.failed > 0 {
		fmt.Fprintf(&b, ", %d failed", r.failed)
	}
	if interrupted {
		b.WriteString(", interrupted")
	}
	fmt.Fprintf(&b, "\nreplayed in %.3f s", took.Seconds())
	if r.postgres {
		fmt.Fprintf(&b, ", %.0f statements/s", rate)
	}
	fmt.Fprintf(&b, "; the recordings span %.3f s\n", span.Seconds())
	r.line = append(r.line[:0], b.String()...)
	r.out(r.stdout)
}
