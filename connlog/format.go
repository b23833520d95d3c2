// Package connlog is the connection-log format of -C, both ways: a format is
// compiled once, at start, and then renders the facts of each ended
// connection into one line (Append) and reads such a line back (Parse,
// Find), for `ipprotd cat`. A bad format is an error before the daemon
// listens. The file the lines go to is a logfile.File.
//
//	format, err := connlog.Compile(connlog.DefaultFormat) // a usage error: name -C
//	buf = format.Append(buf[:0], facts)                   // one line, no allocation
//	entry, ok := format.Parse(line)                       // the facts the line holds
package connlog

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
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

	// For Parse: the line's pattern with one group per expression, and the
	// expression of each group. re is nil where lines cannot be read back
	// (readErr says why).
	re      *regexp.Regexp
	groups  []*expression
	readErr error
}

// expression is one %-expression that stands for a fact: how it is
// rendered, what the rendering looks like, and how it is read back.
type expression struct {
	letter byte
	render func(dst []byte, f *proxy.Facts) []byte
	// pattern matches what render writes, escaped ("-" included where
	// render writes it for a missing value).
	pattern string
	// read sets the fact in e from v, the unescaped value; a "-" of a
	// missing value never reaches it.
	read func(e *Entry, v string)
}

const (
	timePattern = `-|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d`
	portPattern = `-|\d+`
)

// expressions are the facts SPEC §4 and §7 name, by the letter after %.
var expressions = map[byte]*expression{}

func init() {
	for _, x := range []*expression{
		{'s', func(dst []byte, f *proxy.Facts) []byte { return appendTime(dst, f.Start) }, timePattern,
			func(e *Entry, v string) { e.Start, _ = time.Parse(datafile.ISOLayout, v) }},
		{'e', func(dst []byte, f *proxy.Facts) []byte { return appendTime(dst, f.End) }, timePattern,
			func(e *Entry, v string) { e.End, _ = time.Parse(datafile.ISOLayout, v) }},
		{'S', appendDuration, `\d+`, func(*Entry, string) {}},
		{'i', func(dst []byte, f *proxy.Facts) []byte { return appendIP(dst, f.Client) }, `\S+`,
			func(e *Entry, v string) { e.Client = withAddr(e.Client, v) }},
		{'p', func(dst []byte, f *proxy.Facts) []byte { return appendPort(dst, f.Client) }, portPattern,
			func(e *Entry, v string) { e.Client = withPort(e.Client, v) }},
		{'o', appendDestIP, `\S+`,
			func(e *Entry, v string) { e.Dest = withAddr(e.Dest, v) }},
		{'O', appendDestPort, portPattern,
			func(e *Entry, v string) { e.Dest = withPort(e.Dest, v) }},
		{'r', func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendInt(dst, f.BytesIn, 10) }, `\d+`,
			func(e *Entry, v string) { e.BytesIn, _ = strconv.ParseInt(v, 10, 64) }},
		{'w', func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendInt(dst, f.BytesOut, 10) }, `\d+`,
			func(e *Entry, v string) { e.BytesOut, _ = strconv.ParseInt(v, 10, 64) }},
		{'f', appendFile, `.*?`, func(e *Entry, v string) { e.File = v }},
		{'N', func(dst []byte, f *proxy.Facts) []byte { return strconv.AppendUint(dst, f.N, 10) }, `\d+`,
			func(e *Entry, v string) { e.N, _ = strconv.ParseUint(v, 10, 64) }},
		{'x', func(dst []byte, f *proxy.Facts) []byte { return append(dst, f.Outcome.String()...) }, `\S+`,
			func(e *Entry, v string) { e.Outcome = v }},
		{'T', func(dst []byte, f *proxy.Facts) []byte { return appendOr(dst, f.ClientTLS) }, `\S+`,
			func(e *Entry, v string) { e.ClientTLS = v }},
		{'U', func(dst []byte, f *proxy.Facts) []byte { return appendOr(dst, f.ServerTLS) }, `\S+`,
			func(e *Entry, v string) { e.ServerTLS = v }},
		{'C', func(dst []byte, f *proxy.Facts) []byte { return appendOr(dst, f.ClientCert) }, `.*?`,
			func(e *Entry, v string) { e.ClientCert = v }},
		{'h', appendSHA256, `-|[0-9a-f]{64}`, func(e *Entry, v string) { e.SHA256 = v }},
	} {
		expressions[x.letter] = x
	}
}

// literals maps the letter after % to the text it stands for.
var literals = map[byte]string{
	'%': "%",
	'n': "\n",
	't': "\t",
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

// appendTo renders the fact, escaped so that no value can break the
// one-entry-per-line layout.
func (x *expression) appendTo(dst []byte, facts *proxy.Facts) []byte {
	start := len(dst)
	return escapeFrom(x.render(dst, facts), start)
}

// Compile parses format once into a Format. Any character other than an
// expression is copied unchanged. The expressions are those of SPEC §4 and
// §7: %%, %s, %e, %S, %i, %p, %o, %O, %r, %w, %f, %N, %x, %h, %n, %t,
// and %T, %U, %C (the client's and the destination's TLS, the client
// certificate's subject). Any other
// expression is an error naming it and the byte offset of its %, such as
// `unknown expression "%q" at byte 7`; so is a lone % at the end and an empty
// format.
func Compile(format string) (*Format, error) {
	if format == "" {
		return nil, errors.New("empty format")
	}
	var (
		f    Format
		text []byte // literal text not yet flushed into a verbatim
		re   strings.Builder
	)
	re.WriteString(`^`)
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			text = append(text, c)
			re.WriteString(regexp.QuoteMeta(string(c)))
			continue
		}
		if i+1 == len(format) {
			return nil, fmt.Errorf("incomplete expression %q at byte %d", "%", i)
		}
		letter := format[i+1]
		if lit, ok := literals[letter]; ok {
			text = append(text, lit...)
			i++
			switch {
			case letter == 'n' && i == len(format)-1: // the line's own end
			case letter == 'n':
				f.readErr = fmt.Errorf("connection log format %q: entries of more than one line (%%n before its end) cannot be read", format)
			default:
				re.WriteString(regexp.QuoteMeta(lit))
			}
			continue
		}
		x, ok := expressions[letter]
		if !ok {
			_, size := utf8.DecodeRuneInString(format[i+1:])
			return nil, fmt.Errorf("unknown expression %q at byte %d", format[i:i+1+size], i)
		}
		if len(text) > 0 {
			f.appenders = append(f.appenders, verbatim(text))
			text = text[:0]
		}
		f.appenders = append(f.appenders, x)
		f.groups = append(f.groups, x)
		re.WriteString(`(` + x.pattern + `)`)
		i++
	}
	if len(text) > 0 {
		f.appenders = append(f.appenders, verbatim(text))
	}
	re.WriteString(`$`)
	if f.readErr == nil {
		f.re = regexp.MustCompile(re.String())
	}
	return &f, nil
}

// Append renders the entry of one connection and appends it to dst, which it
// returns. It allocates nothing beyond growing dst. facts must not be nil.
//
// Times are in datafile.ISOLayout, each in its own location. %S is the whole
// seconds from Start to End, rounded down, and 0 where End is before Start.
// IPv4-mapped IPv6 addresses are written as IPv4; an IPv6 zone is kept
// (fe80::1%eth0). A value a connection does not have is written as "-": %o
// and %O where no destination was dialed, %f and %h without a data file,
// %i and %p for a zero Client, %s and %e for a zero time (then %S is 0).
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

// appendDestIP renders the destination's address; for a connection whose
// dial found no address to try (a name that did not resolve), the host as
// configured, so that the line still names what was tried.
func appendDestIP(dst []byte, f *proxy.Facts) []byte {
	if !f.Dest.IsValid() && f.Outcome == proxy.ConnectFailed && f.OutHost != "" {
		return append(dst, f.OutHost...)
	}
	return appendIP(dst, f.Dest)
}

// appendDestPort renders the destination's port, as appendDestIP does.
func appendDestPort(dst []byte, f *proxy.Facts) []byte {
	if !f.Dest.IsValid() && f.Outcome == proxy.ConnectFailed && f.OutPort != 0 {
		return strconv.AppendUint(dst, uint64(f.OutPort), 10)
	}
	return appendPort(dst, f.Dest)
}

// appendPort renders the port of ap, or "-" where ap is not valid.
func appendPort(dst []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(dst, '-')
	}
	return strconv.AppendUint(dst, uint64(ap.Port()), 10)
}

// appendOr renders v, or "-" where it is empty.
func appendOr(dst []byte, v string) []byte {
	if v == "" {
		return append(dst, '-')
	}
	return append(dst, v...)
}

// appendFile renders the data file's path, or "-" where there is none.
func appendFile(dst []byte, f *proxy.Facts) []byte {
	if f.File == "" {
		return append(dst, '-')
	}
	return append(dst, f.File...)
}

// appendSHA256 renders the data file's SHA-256 in lowercase hex, or "-"
// where there is no file. The value is proxy.Facts.SHA256, which only the
// proxy sets, so it is written as it is.
func appendSHA256(dst []byte, f *proxy.Facts) []byte {
	if f.SHA256 == "" {
		return append(dst, '-')
	}
	return append(dst, f.SHA256...)
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

// CompileGiven compiles the format -C gave, or DefaultFormat where -C was
// not given (nil).
func CompileGiven(format *string) (*Format, error) {
	if format == nil {
		return Compile(DefaultFormat)
	}
	return Compile(*format)
}
