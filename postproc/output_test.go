package postproc

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestOutputWriter(t *testing.T) {
	long := strings.Repeat("a", maxLine)
	line := func(level, stream, text string, cut bool) string {
		s := fmt.Sprintf(`level=%s msg="post-cmd output" conn=9 stream=%s line=%s`, level, stream, text)
		if cut {
			s += " cut=true"
		}
		return s
	}
	cases := []struct {
		name   string
		writes []string // "1:" to stdout, "2:" to stderr
		want   []string
	}{
		{"lines across writes", []string{"1:one\ntw", "1:o\n", "1:\nthree"},
			[]string{line("INFO", "stdout", "one", false), line("INFO", "stdout", "two", false),
				line("INFO", "stdout", `""`, false), line("INFO", "stdout", "three", false)}},
		{"crlf", []string{"2:dos\r\n", "2:cr\rinside\n"},
			[]string{line("WARN", "stderr", "dos", false), line("WARN", "stderr", `"cr\rinside"`, false)}},
		{"exactly maxLine", []string{"1:" + long + "\n"},
			[]string{line("INFO", "stdout", long, false)}},
		{"longer line cut", []string{"1:" + long, "1:bbbb", "1:cc\nnext\n"},
			[]string{line("INFO", "stdout", long, true), line("INFO", "stdout", "next", false)}},
		{"streams apart", []string{"1:out ", "2:err ", "1:end\n", "2:end\n"},
			[]string{line("INFO", "stdout", `"out end"`, false), line("WARN", "stderr", `"err end"`, false)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log, buf := newLogger()
			o := newOutput(log, 9)
			streams := map[string]interface{ Write([]byte) (int, error) }{
				"1": o.stream("stdout", slog.LevelInfo),
				"2": o.stream("stderr", slog.LevelWarn),
			}
			for _, w := range c.writes {
				p := w[2:]
				n, err := streams[w[:1]].Write([]byte(p))
				if n != len(p) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", p, n, err, len(p))
				}
			}
			o.flush()
			if got := buf.lines(); !slices.Equal(got, c.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// TestOutputBudget shows that stdout and stderr share one budget, that the
// lines still open when it runs out are logged as cut, and that nothing is
// logged after the truncation line.
func TestOutputBudget(t *testing.T) {
	row := strings.Repeat("x", 1023) + "\n"
	t.Run("exactly the budget", func(t *testing.T) {
		log, buf := newLogger()
		o := newOutput(log, 2)
		stdout := o.stream("stdout", slog.LevelInfo)
		stderr := o.stream("stderr", slog.LevelWarn)
		for i := 0; i < maxOutput/len(row)/2; i++ {
			stdout.Write([]byte(row))
			stderr.Write([]byte(row))
		}
		o.flush()
		if got, want := len(buf.lines()), 64; got != want {
			t.Errorf("got %d lines; want %d", got, want)
		}
		if got := buf.lines("truncated"); len(got) != 0 {
			t.Errorf("got %q; want no truncation", got)
		}
	})
	t.Run("beyond", func(t *testing.T) {
		log, buf := newLogger()
		o := newOutput(log, 2)
		stdout := o.stream("stdout", slog.LevelInfo)
		stderr := o.stream("stderr", slog.LevelWarn)
		for i := 0; i < 63; i++ {
			stdout.Write([]byte(row))
		}
		// 1024 bytes left: "open" and 1020 of the Zs.
		stdout.Write([]byte("open"))
		stderr.Write([]byte(strings.Repeat("Z", 1030) + "\n"))
		stdout.Write([]byte(" more\n"))
		stderr.Write([]byte("more\n"))
		o.flush()

		lines := buf.lines()
		if len(lines) != 66 {
			t.Fatalf("got %d lines; want 66:\n%s", len(lines), buf)
		}
		want := []string{
			`level=INFO msg="post-cmd output" conn=2 stream=stdout line=open cut=true`,
			`level=WARN msg="post-cmd output" conn=2 stream=stderr line=` + strings.Repeat("Z", 1020) + ` cut=true`,
			`level=WARN msg="post-cmd output truncated" conn=2 limit=65536`,
		}
		if got := lines[63:]; !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
