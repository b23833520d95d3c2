package playback

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// ConnFacts is what a connection-log line (-c) says about a connection.
// A fact the log's format does not hold, or holds as "-", is zero.
type ConnFacts struct {
	Start, End        time.Time
	Client, Dest      netip.AddrPort // an address without its port where the format has %i but not %p
	BytesIn, BytesOut int64
	Outcome           string
	File              string
	Line              string // the line itself, without its newline
}

// LogFormat reads the lines of a connection log written with a -C format,
// the inverse of connlog.Format. It is immutable and safe for concurrent
// use.
type LogFormat struct {
	re     *regexp.Regexp
	fields []byte // the letter of each capture group
}

// fieldPatterns are the patterns of connlog's expressions.
var fieldPatterns = map[byte]string{
	's': `-|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d`,
	'e': `-|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d`,
	'S': `\d+`,
	'i': `\S+`,
	'p': `-|\d+`,
	'o': `\S+`,
	'O': `-|\d+`,
	'r': `\d+`,
	'w': `\d+`,
	'f': `.*?`,
	'N': `\d+`,
	'x': `\S+`,
}

// CompileLogFormat compiles a -C format (connlog.DefaultFormat without -C)
// for reading. Only one-line entries can be read: %n may only end the
// format.
func CompileLogFormat(format string) (*LogFormat, error) {
	format = strings.TrimSuffix(format, "%n")
	var re strings.Builder
	var fields []byte
	re.WriteString(`^`)
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			re.WriteString(regexp.QuoteMeta(string(c)))
			continue
		}
		if i+1 == len(format) {
			return nil, fmt.Errorf("connection log format %q: incomplete expression at its end", format)
		}
		i++
		switch l := format[i]; l {
		case '%':
			re.WriteString(`%`)
		case 't':
			re.WriteString(`\t`)
		case 'n':
			return nil, fmt.Errorf("connection log format %q: entries of more than one line (%%n before its end) cannot be read", format)
		default:
			p, ok := fieldPatterns[l]
			if !ok {
				return nil, fmt.Errorf("connection log format %q: unknown expression %%%c", format, l)
			}
			re.WriteString(`(` + p + `)`)
			fields = append(fields, l)
		}
	}
	re.WriteString(`$`)
	return &LogFormat{re: regexp.MustCompile(re.String()), fields: fields}, nil
}

// Has reports whether the format holds expression letter ('f' for %f).
func (f *LogFormat) Has(letter byte) bool {
	return strings.IndexByte(string(f.fields), letter) >= 0
}

// Parse reads one line (without its newline); ok is false if the line
// does not have the format.
func (f *LogFormat) Parse(line string) (c ConnFacts, ok bool) {
	m := f.re.FindStringSubmatch(line)
	if m == nil {
		return ConnFacts{}, false
	}
	c.Line = line
	var ci, cp, di, dp string
	for i, l := range f.fields {
		v := unescape(m[i+1])
		if v == "-" && l != 'f' && l != 'x' {
			continue
		}
		switch l {
		case 's':
			c.Start, _ = time.Parse(datafile.ISOLayout, v)
		case 'e':
			c.End, _ = time.Parse(datafile.ISOLayout, v)
		case 'i':
			ci = v
		case 'p':
			cp = v
		case 'o':
			di = v
		case 'O':
			dp = v
		case 'r':
			c.BytesIn, _ = strconv.ParseInt(v, 10, 64)
		case 'w':
			c.BytesOut, _ = strconv.ParseInt(v, 10, 64)
		case 'x':
			c.Outcome = v
		case 'f':
			if v != "-" {
				c.File = v
			}
		}
	}
	c.Client, c.Dest = addrPort(ci, cp), addrPort(di, dp)
	return c, true
}

// addrPort joins a logged address and port; the zero AddrPort if the
// address is missing or unreadable.
func addrPort(ip, port string) netip.AddrPort {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.AddrPort{}
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	return netip.AddrPortFrom(a.WithZone(""), uint16(p))
}

// unescape undoes connlog's escapes: \xNN and \\.
func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if s[i+1] == '\\' {
				b.WriteByte('\\')
				i++
				continue
			}
			if s[i+1] == 'x' && i+3 < len(s) {
				if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
					b.WriteByte(byte(v))
					i += 3
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ErrNotLogged is returned by FindConn when no line of the log names the
// data file.
var ErrNotLogged = errors.New("no line of the connection log names the data file")

// FindConn looks up the line of the connection log at logPath whose %f is
// the data file dataFile: the same absolute path, or else the same base
// name (the files were moved). The last such line wins. The format must
// hold %f.
func FindConn(logPath string, format *LogFormat, dataFile string) (ConnFacts, error) {
	if !format.Has('f') {
		return ConnFacts{}, fmt.Errorf("connection log %s: its format has no %%f to find the data file by", logPath)
	}
	f, err := os.Open(logPath)
	if err != nil {
		return ConnFacts{}, err
	}
	defer f.Close()
	abs, err := filepath.Abs(dataFile)
	if err != nil {
		return ConnFacts{}, err
	}
	var exact, byBase ConnFacts
	var foundExact, foundBase bool
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		c, ok := format.Parse(sc.Text())
		if !ok || c.File == "" {
			continue
		}
		switch {
		case c.File == abs:
			exact, foundExact = c, true
		case filepath.Base(c.File) == filepath.Base(abs):
			byBase, foundBase = c, true
		}
	}
	if err := sc.Err(); err != nil {
		return ConnFacts{}, fmt.Errorf("connection log %s: %w", logPath, err)
	}
	switch {
	case foundExact:
		return exact, nil
	case foundBase:
		return byBase, nil
	}
	return ConnFacts{}, fmt.Errorf("connection log %s: %w", logPath, ErrNotLogged)
}
