package connlog

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Entry is what a line of the connection log says about a connection. A
// fact the format does not hold, or holds as "-", is zero.
type Entry struct {
	N                 uint64
	Start, End        time.Time
	Client, Dest      netip.AddrPort // an address without its port where the format has %i but not %p
	BytesIn, BytesOut int64
	Outcome           string // "ok", "aborted", …
	ClientTLS         string // %T: "TLSv1.3/TLS_AES_128_GCM_SHA256"
	ServerTLS         string // %U
	ClientCert        string // %C
	File              string
	SHA256            string // the data file's SHA-256 (%h), lowercase hex
	Line              string // the line itself, without its newline
}

// Readable says why lines of the format cannot be read back, if they
// cannot: only one-line entries can (%n may only end the format).
func (f *Format) Readable() error { return f.readErr }

// Has reports whether the format holds expression letter ('f' for %f).
func (f *Format) Has(letter byte) bool {
	for _, x := range f.groups {
		if x.letter == letter {
			return true
		}
	}
	return false
}

// Parse reads one line of the log (without its newline), the inverse of
// Append; ok is false if the line does not have the format or the format
// cannot be read (Readable).
func (f *Format) Parse(line string) (e Entry, ok bool) {
	if f.re == nil {
		return Entry{}, false
	}
	m := f.re.FindStringSubmatch(line)
	if m == nil {
		return Entry{}, false
	}
	e.Line = line
	for i, x := range f.groups {
		if v := unescape(m[i+1]); v != "-" {
			x.read(&e, v)
		}
	}
	for _, ap := range []*netip.AddrPort{&e.Client, &e.Dest} {
		if !ap.Addr().IsValid() {
			*ap = netip.AddrPort{} // a port without its address says nothing
		}
	}
	return e, true
}

func withAddr(ap netip.AddrPort, v string) netip.AddrPort {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return ap
	}
	return netip.AddrPortFrom(a.WithZone(""), ap.Port())
}

func withPort(ap netip.AddrPort, v string) netip.AddrPort {
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr(), uint16(p))
}

// unescape undoes escapeFrom: \xNN and \\.
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

// ErrNotLogged is returned by Find when no line of the log names the
// data file.
var ErrNotLogged = errors.New("no line of the connection log names the data file")

// Find looks up the line of the connection log at logPath whose %f is
// the data file dataFile: the same absolute path, or else the same base
// name (the files were moved). The last such line wins. The format must
// hold %f.
func Find(logPath string, format *Format, dataFile string) (Entry, error) {
	if err := format.Readable(); err != nil {
		return Entry{}, err
	}
	if !format.Has('f') {
		return Entry{}, fmt.Errorf("connection log %s: its format has no %%f to find the data file by", logPath)
	}
	f, err := os.Open(logPath)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	abs, err := filepath.Abs(dataFile)
	if err != nil {
		return Entry{}, err
	}
	var exact, byBase Entry
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
		return Entry{}, fmt.Errorf("connection log %s: %w", logPath, err)
	}
	switch {
	case foundExact:
		return exact, nil
	case foundBase:
		return byBase, nil
	}
	return Entry{}, fmt.Errorf("connection log %s: %w", logPath, ErrNotLogged)
}
