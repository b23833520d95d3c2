// Package connlog writes the connection log: one line per connection, in the
// format given with -C, appended to the file given with -c.
//
// A format goes in once, at start, and is compiled into a list of appenders
// (literal text and fields); a bad format is an error before the daemon
// listens. Each ended connection's *proxy.Facts then goes in and one entry
// comes out, rendered into a caller's buffer without allocating, and is
// appended to the log with a single write(2):
//
//	format, err := connlog.Compile(connlog.DefaultFormat)
//	if err != nil { ... }          // a usage error: name -C
//	log, err := connlog.Open("/var/log/conn_rec/connections")
//	if err != nil { ... }
//	defer log.Close()
//
//	buf = format.Append(buf[:0], facts)
//	if err := log.Write(buf); err != nil { ... }
//
//	// On SIGHUP, after logrotate moved the file:
//	if err := log.Reopen(); err != nil { ... } // the old file stays in use
package connlog

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/proxy"
)

// DefaultFormat is the format used when -C is not given: start, end,
// duration, client address and port, destination address and port, bytes
// received and written, outcome and data file.
const DefaultFormat = "%s %e %S %i %p %o %O %r %w %x %f%n"

// Format is a compiled connection-log format. It is immutable and safe for
// concurrent use by any number of goroutines; it holds no resources and needs
// no Close.
type Format struct {
	appenders []appender
}

// appender renders one piece of an entry: literal text or one field.
type appender interface {
	appendTo(dst []byte, facts *proxy.Facts) []byte
}

// verbatim is literal text of the format, including what %%, %n and %t stand
// for. It is copied unchanged.
type verbatim string

func (v verbatim) appendTo(dst []byte, _ *proxy.Facts) []byte {
	return append(dst, v...)
}

// field renders one fact of the connection. Its output is escaped so that no
// value can break the one-entry-per-line layout.
type field func(dst []byte, facts *proxy.Facts) []byte

func (fn field) appendTo(dst []byte, facts *proxy.Facts) []byte {
	start := len(dst)
	return escapeFrom(fn(dst, facts), start)
}

// fields maps the letter after % to the fact it renders.
var fields = map[byte]field{
	's': func(dst []byte, f *proxy.Facts) []byte { return appendTime(dst, f.Start) },
	'e': func(dst []byte, f *proxy.Facts) []byte { return appendTime(dst, f.End) },
	'S': appendDuration,
	'i': func(dst []byte, f *proxy.Facts) []byte { return appendIP(dst, f.Client) },
	'p': func(dst []byte, f *proxy.Facts) []byte { return appendPort(dst, f.Client) },
	'o': func(dst []byte, f *proxy.Facts) []byte { return appendIP(dst, f.Dest) },
	'O': func(dst []byte, f *proxy.Facts) []byte { return appendPort(dst, f.Dest) },
	'r': func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendInt(dst, f.BytesIn, 10) },
	'w': func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendInt(dst, f.BytesOut, 10) },
	'f': appendFile,
	'N': func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendUint(dst, f.N, 10) },
	'x': func(dst []byte, f *proxy.Facts) []byte { return append(dst, f.Outcome.String()...) },
}

// literals maps the letter after % to the text it stands for.
var literals = map[byte]string{
	'%': "%",
	'n': "\n",
	't': "\t",
}

// Compile parses format once into a Format. Any character other than an
// expression is copied unchanged. The expressions are those of SPEC §4: %%,
// %s, %e, %S, %i, %p, %o, %O, %r, %w, %f, %N, %x, %n and %t. Any other
// expression is an error naming it and the byte offset of its %, such as
// `unknown expression "%q" at byte 7`; so is a lone % at the end and an empty
// format.
func Compile(format string) (*Format, error) {
	if format == "" {
		return nil, errors.New("empty format")
	}
	var (
		appenders []appender
		text      []byte // literal text not yet flushed into a verbatim
	)
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			text = append(text, c)
			continue
		}
		if i+1 == len(format) {
			return nil, fmt.Errorf("incomplete expression %q at byte %d", "%", i)
		}
		letter := format[i+1]
		if lit, ok := literals[letter]; ok {
			text = append(text, lit...)
			i++
			continue
		}
		fn, ok := fields[letter]
		if !ok {
			_, size := utf8.DecodeRuneInString(format[i+1:])
			return nil, fmt.Errorf("unknown expression %q at byte %d", format[i:i+1+size], i)
		}
		if len(text) > 0 {
			appenders = append(appenders, verbatim(text))
			text = text[:0]
		}
		appenders = append(appenders, fn)
		i++
	}
	if len(text) > 0 {
		appenders = append(appenders, verbatim(text))
	}
	return &Format{appenders: appenders}, nil
}

// Append renders the entry of one connection and appends it to dst, which it
// returns. It allocates nothing beyond growing dst. facts must not be nil.
//
// Times are in datafile.ISOLayout, each in its own location. %S is the whole
// seconds from Start to End, rounded down, and 0 where End is before Start.
// IPv4-mapped IPv6 addresses are written as IPv4; an IPv6 zone is kept
// (fe80::1%eth0). A value a connection does not have is written as "-": %o
// and %O where no destination was dialed, %f without a data file, %i and %p
// for a zero Client, %s and %e for a zero time (then %S is 0).
//
// Control bytes (below 0x20, and 0x7F) inside a field's value are written as
// \xNN and a backslash as \\, so no field can inject a newline or forge an
// entry; literal text of the format and %n and %t are written as they are.
// An entry that does not end with a newline gets one, so the log stays one
// entry per line also for formats without %n, like the manual's example
// "Connected: %s, disconnected after %S secs at: %e".
func (f *Format) Append(dst []byte, facts *proxy.Facts) []byte {
	start := len(dst)
	for _, a := range f.appenders {
		dst = a.appendTo(dst, facts)
	}
	if len(dst) == start || dst[len(dst)-1] != '\n' {
		dst = append(dst, '\n')
	}
	return dst
}

// appendTime renders t in datafile.ISOLayout in t's own location, or "-" for
// the zero time.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, '-')
	}
	return t.AppendFormat(dst, datafile.ISOLayout)
}

// appendDuration renders the whole seconds from Start to End, rounded down;
// 0 where either is missing or End is before Start.
func appendDuration(dst []byte, f *proxy.Facts) []byte {
	var secs int64
	if !f.Start.IsZero() && !f.End.IsZero() {
		secs = max(int64(f.End.Sub(f.Start)/time.Second), 0)
	}
	return strconv.AppendInt(dst, secs, 10)
}

// appendIP renders the address of ap, an IPv4-mapped IPv6 address as IPv4,
// or "-" where ap is not valid.
func appendIP(dst []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(dst, '-')
	}
	return ap.Addr().Unmap().AppendTo(dst)
}

// appendPort renders the port of ap, or "-" where ap is not valid.
func appendPort(dst []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(dst, '-')
	}
	return strconv.AppendUint(dst, uint64(ap.Port()), 10)
}

// appendFile renders the data file's path, or "-" where there is none.
func appendFile(dst []byte, f *proxy.Facts) []byte {
	if f.File == "" {
		return append(dst, '-')
	}
	return append(dst, f.File...)
}

// escapeFrom escapes dst[start:] in place, growing dst as needed: each
// control byte becomes \xNN and each backslash \\.
func escapeFrom(dst []byte, start int) []byte {
	extra := 0
	for _, c := range dst[start:] {
		switch {
		case c == '\\':
			extra++
		case c < 0x20 || c == 0x7f:
			extra += 3
		}
	}
	if extra == 0 {
		return dst
	}
	end := len(dst)
	dst = slices.Grow(dst, extra)[:end+extra]
	// Walk backwards so each byte is read before the growing output reaches it.
	w := len(dst)
	for r := end - 1; r >= start; r-- {
		c := dst[r]
		switch {
		case c == '\\':
			w -= 2
			dst[w], dst[w+1] = '\\', '\\'
		case c < 0x20 || c == 0x7f:
			const hex = "0123456789abcdef"
			w -= 4
			dst[w], dst[w+1], dst[w+2], dst[w+3] = '\\', 'x', hex[c>>4], hex[c&0x0f]
		default:
			w--
			dst[w] = c
		}
	}
	return dst
}
