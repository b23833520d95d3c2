package playback

import (
	"fmt"
	"io"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/ipprot/ipprot/datafile"
)

// PrintOptions says how a Printer shows blocks. The zero value shows data
// as escaped text, without colour.
type PrintOptions struct {
	Hex   bool // a hex dump (offset, 16 bytes in hex, the same as text) instead of escaped text
	Color bool // ANSI colours: directions, ISO lines, escapes
	// UnknownDir shows data without a block stamp with "?" for its
	// direction: a file recorded without -M does not say which way its
	// data went.
	UnknownDir bool
}

// Printer writes blocks for people: a header line per block with its time
// (local, µs; none for data without a block stamp), its direction (">"
// client to server, "<" server to client, "?" unknown) and its byte count ("N more
// bytes" for a piece that continues a block), an ISO line as a separator
// before the block it belongs to, then the data, each line indented by two
// blanks.
//
// As text, printable characters (UTF-8) are shown as they are, a backslash
// as \\, tab, CR and LF as \t, \r and \n, every other byte as \xNN; a line
// of output ends after each \n and at the end of the block. The byte count
// and the escapes make the output exact: no two data look alike.
//
// A Printer writes each block with one Write and keeps no reference to it.
// It is not safe for concurrent use.
type Printer struct {
	w   io.Writer
	opt PrintOptions
	buf []byte
	pos int64 // data bytes of the current block shown so far (hex offsets)
}

// NewPrinter returns a Printer writing to w.
func NewPrinter(w io.Writer, opt PrintOptions) *Printer {
	return &Printer{w: w, opt: opt}
}

// TimeLayout is how a Printer shows a block's time: local, to the µs.
const TimeLayout = "2006-01-02 15:04:05.000000"

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiFaint  = "\x1b[2m"
	ansiIn     = "\x1b[36m" // cyan: from the client
	ansiOut    = "\x1b[33m" // yellow: to the client
	dataIndent = "  "
)

// Print writes b.
func (p *Printer) Print(b Block) error {
	buf := p.buf[:0]
	if b.ISO != "" {
		buf = p.color(buf, ansiBold)
		buf = append(buf, "---- "...)
		buf = append(buf, b.ISO...)
		buf = append(buf, " ----"...)
		buf = p.color(buf, ansiReset)
		buf = append(buf, '\n')
	}
	if b.Part == 0 {
		p.pos = 0
	}
	buf = p.header(buf, b)
	if p.opt.Hex {
		buf = p.hexDump(buf, b.Data)
	} else {
		buf = p.text(buf, b.Data)
	}
	p.pos += int64(len(b.Data))
	p.buf = buf
	_, err := p.w.Write(buf)
	return err
}

func (p *Printer) color(buf []byte, code string) []byte {
	if p.opt.Color {
		buf = append(buf, code...)
	}
	return buf
}

func (p *Printer) header(buf []byte, b Block) []byte {
	if b.Stamped {
		buf = b.Time.Local().AppendFormat(buf, TimeLayout)
		buf = append(buf, ' ')
	}
	arrow, code := "<", ansiOut
	switch {
	case !b.Stamped && p.opt.UnknownDir:
		arrow, code = "?", ansiFaint
	case b.Dir == datafile.In:
		arrow, code = ">", ansiIn
	}
	buf = p.color(buf, code)
	buf = append(buf, arrow...)
	buf = p.color(buf, ansiReset)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(len(b.Data)), 10)
	if b.Part > 0 {
		buf = append(buf, " more"...)
	}
	if len(b.Data) == 1 {
		buf = append(buf, " byte"...)
	} else {
		buf = append(buf, " bytes"...)
	}
	switch {
	case b.Part > 0 || b.Stamped:
	case p.opt.UnknownDir:
		buf = append(buf, " (no block stamp: direction unknown; --dir or -c tells it)"...)
	default:
		buf = append(buf, " (no block stamp)"...)
	}
	return append(buf, '\n')
}

// text appends data as escaped text.
func (p *Printer) text(buf, data []byte) []byte {
	if len(data) == 0 {
		return buf
	}
	buf = append(buf, dataIndent...)
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf && c >= 0x20 && c != 0x7f && c != '\\' {
			buf = append(buf, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if c >= utf8.RuneSelf && r != utf8.RuneError && unicode.IsPrint(r) {
			buf = append(buf, data[i:i+size]...)
			i += size
			continue
		}
		buf = p.color(buf, ansiFaint)
		switch c {
		case '\\':
			buf = append(buf, `\\`...)
		case '\t':
			buf = append(buf, `\t`...)
		case '\r':
			buf = append(buf, `\r`...)
		case '\n':
			buf = append(buf, `\n`...)
		default:
			buf = fmt.Appendf(buf, `\x%02x`, c)
		}
		buf = p.color(buf, ansiReset)
		i++
		if c == '\n' && i < len(data) {
			buf = append(buf, '\n')
			buf = append(buf, dataIndent...)
		}
	}
	return append(buf, '\n')
}

// hexDump appends data as hexdump -C does, offsets counted from the
// block's first byte.
func (p *Printer) hexDump(buf, data []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for i := 0; i < len(data); i += 16 {
		line := data[i:min(i+16, len(data))]
		buf = append(buf, dataIndent...)
		buf = fmt.Appendf(buf, "%08x ", p.pos+int64(i))
		for j := range 16 {
			if j == 8 {
				buf = append(buf, ' ')
			}
			if j < len(line) {
				buf = append(buf, ' ', hexDigits[line[j]>>4], hexDigits[line[j]&0xf])
			} else {
				buf = append(buf, "   "...)
			}
		}
		buf = append(buf, "  |"...)
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			buf = append(buf, c)
		}
		buf = append(buf, "|\n"...)
	}
	return buf
}
