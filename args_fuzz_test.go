package main

import (
	"slices"
	"strings"
	"testing"
)

// FuzzNormaliseArgs feeds normaliseArgs argument lists (words separated by
// newlines) with the real parser's idea of which options take a value, and
// checks it against the rule it implements: walking the input, "--" ends
// the rewriting, -Dp and -uT become their long forms, every other word
// is kept, and the word after an option that takes a value is that value,
// unchanged, whatever it looks like. So the output never has fewer words
// than the input, the input is left alone, and nothing panics.
func FuzzNormaliseArgs(f *testing.F) {
	for _, seed := range []string{
		"-p 5432 -h 127.0.0.1 -P 3333 -l -f /var/log/conn_rec/prot -z -Dp /var/log/conn_rec/ipprot_pid_5432",
		"-p 7777@10.1.2.33 -P 5678@10.1.2.34 -L -s -f /u01/prot -j -u /u01/send_ipprot -Dp /u01/pid_7777",
		"-uT /bin/send -f p",
		"-?",
		"-C -uT -c log",
		"-u -Dp -f p",
		"-Dp -uT",
		"--conn-log-format -Dp",
		"--conn-log-format=x -Dp f",
		"-Lsp 80 -Dp f",
		"-p80 -Dp f",
		"-Lsz -Dp f",
		"-- -Dp",
		"-Dp",
		"-r -- -Dp",
		"-C",
		"",
	} {
		f.Add(strings.ReplaceAll(seed, " ", "\n"))
	}
	originals, takes := testParser(f)
	f.Fuzz(func(t *testing.T, joined string) {
		in := strings.Split(joined, "\n")
		args := slices.Clone(in)
		out := normaliseArgs(args, originals, takes)
		if !slices.Equal(args, in) {
			t.Fatalf("normaliseArgs changed its input: %q; was %q", args, in)
		}
		if len(out) < len(in) {
			t.Fatalf("%d words out of %d: %q from %q", len(out), len(in), out, in)
		}
		j := 0 // the next word of out
		word := func(i int, want string) {
			t.Helper()
			if j >= len(out) || out[j] != want {
				t.Fatalf("word %d of %q: output %q; want %q at %d", i, in, out, want, j)
			}
			j++
		}
		for i := 0; i < len(in); i++ {
			w := in[i]
			if w == "--" {
				if !slices.Equal(out[j:], in[i:]) {
					t.Fatalf("after --: output %q; want %q unchanged", out[j:], in[i:])
				}
				return
			}
			opt := w
			if long, ok := originals[w]; ok {
				for _, l := range long {
					word(i, l)
				}
				opt = long[len(long)-1]
			} else {
				word(i, w)
			}
			if takes(opt) && i+1 < len(in) {
				i++
				word(i, in[i]) // the value, as it was
			}
		}
		if j != len(out) {
			t.Fatalf("output %q has words beyond those of %q", out[j:], in)
		}
	})
}
