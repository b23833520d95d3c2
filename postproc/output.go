package postproc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
)

// A chatty command must not flood the daemon's log: a line is cut after
// maxLine bytes, and after maxOutput bytes of stdout and stderr together
// the rest of a run's output is read and dropped.
const (
	maxLine   = 4 << 10
	maxOutput = 64 << 10
)

// output turns one run's stdout and stderr into log lines with the
// connection's number. Its streams are written by exec's copying
// goroutines, one per stream, so it is guarded by mu; flush is called after
// exec.Cmd.Wait.
type output struct {
	log  *slog.Logger
	conn uint64

	mu        sync.Mutex
	left      int  // bytes still logged
	truncated bool // left ran out; the rest is dropped
	streams   []*lineWriter
}

func newOutput(log *slog.Logger, conn uint64) *output {
	return &output{log: log, conn: conn, left: maxOutput}
}

// stream returns the writer for the stream called name, whose lines are
// logged at level.
func (o *output) stream(name string, level slog.Level) io.Writer {
	w := &lineWriter{out: o, name: name, level: level}
	o.streams = append(o.streams, w)
	return w
}

// flush logs the last lines that had no newline.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.streams {
		w.emitPartial()
	}
}

// lineWriter splits one stream into lines.
type lineWriter struct {
	out   *output
	name  string
	level slog.Level
	line  []byte // the line so far, at most maxLine bytes
	cut   bool   // the line was longer than maxLine, or truncated
}

// Write logs every complete line of p and keeps the rest for the next
// Write. It never fails, so the command is never stopped by a broken pipe.
func (w *lineWriter) Write(p []byte) (int, error) {
	o := w.out
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(p)
	if o.truncated {
		return n, nil
	}
	over := len(p) > o.left
	if over {
		p = p[:o.left]
	}
	o.left -= len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.add(p)
			break
		}
		w.add(p[:i])
		w.emit()
		p = p[i+1:]
	}
	if over {
		for _, s := range o.streams {
			s.cut = s.cut || len(s.line) > 0
			s.emitPartial()
		}
		o.truncated = true
		o.log.Warn("post-cmd output truncated", "conn", o.conn, "limit", maxOutput)
	}
	return n, nil
}

func (w *lineWriter) add(p []byte) {
	if room := maxLine - len(w.line); len(p) > room {
		p = p[:room]
		w.cut = true
	}
	w.line = append(w.line, p...)
}

func (w *lineWriter) emitPartial() {
	if len(w.line) > 0 || w.cut {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	line := bytes.TrimSuffix(w.line, []byte("\r"))
	attrs := []slog.Attr{
		slog.Uint64("conn", w.out.conn),
		slog.String("stream", w.name),
		slog.String("line", string(line)),
	}
	if w.cut {
		attrs = append(attrs, slog.Bool("cut", true))
	}
	w.out.log.LogAttrs(context.Background(), w.level, "post-cmd output", attrs...)
	w.line = w.line[:0]
	w.cut = false
}
