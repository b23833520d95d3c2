package playback

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// printed are blocks of every kind a Printer shows.
var printed = []Block{
	{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(1386170322361458), ISO: "2013-12-04 16:18:42+01:00",
		Data: []byte("GET /ä?q=a\\b HTTP/1.1\r\nHost: x\t\r\n\r\n")},
	{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1386170322404186),
		Data: []byte("\x00\x01\x02R\x00\x00\x00\x08\xff\xfe\u202eevil\x7f\n\nend")},
	{Dir: datafile.Out, Stamped: true, Time: time.UnixMicro(1386170322404190), Data: []byte("more"), Offset: 120, Part: 1},
	{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(1386170322500000)},
	{Dir: datafile.Out, Data: []byte("x")},
	{Dir: datafile.Out, Time: time.UnixMicro(1386170400000000), ISO: "2013-12-04 16:20:00+01:00", Data: []byte("0123456789abcdefghij")},
}

// TestPrinter: text, hex dump and colours, byte for byte.
func TestPrinter(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  PrintOptions
	}{
		{"text", PrintOptions{}},
		{"hex", PrintOptions{Hex: true}},
		{"color", PrintOptions{Color: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := NewPrinter(&out, tt.opt)
			for _, b := range printed {
				if err := p.Print(b); err != nil {
					t.Fatal(err)
				}
			}
			if !tt.opt.Color && strings.Contains(out.String(), "\x1b") {
				t.Error("escape sequences without colour")
			}
			golden(t, "print-"+tt.name+".txt", out.Bytes())
		})
	}
}

// TestPrinterUnambiguous: different data never print alike, so the text
// form can be trusted: every byte is either itself or escaped.
func TestPrinterUnambiguous(t *testing.T) {
	datas := []string{"a\nb", "a\\nb", "a\n", "a", "\\x00", "\x00", "a\r\n", `a\r` + "\n", "\u202e", `\xe2\x80\xae`, "\xe2\x80", "ä", `\xc3\xa4`}
	seen := map[string]string{}
	for _, d := range datas {
		var out bytes.Buffer
		NewPrinter(&out, PrintOptions{}).Print(Block{Dir: datafile.In, Stamped: true, Time: time.UnixMicro(1), Data: []byte(d)})
		if other, ok := seen[out.String()]; ok && other != d {
			t.Errorf("%q and %q both print as %q", d, other, out.String())
		}
		seen[out.String()] = d
	}
}
