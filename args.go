package main

import (
	"strings"

	"github.com/alecthomas/kong"
)

// twoLetter are the original's options that are one word of two letters,
// which kong would read as two one-letter options (-Dp as -D -p), and -?,
// which it cannot declare. Each becomes its long form.
var twoLetter = map[string][]string{
	"-Dp": {"--daemon", "--pid-file"},
	"-uT": {"--post-cmd-times"},
	"-?":  {"--help"},
}

// normaliseArgs rewrites the original daemon's two-letter options into long
// options kong can parse, leaving every option value untouched:
// takesValue tells which option words consume the next word, so that
// `-C -uT` keeps "-uT" as the format. Nothing after "--" is rewritten.
func normaliseArgs(args []string, takesValue func(word string) bool) []string {
	out := make([]string, 0, len(args)+1)
	for i := 0; i < len(args); i++ {
		w := args[i]
		if w == "--" {
			return append(out, args[i:]...)
		}
		if long, ok := twoLetter[w]; ok {
			out = append(out, long...)
			w = long[len(long)-1]
		} else {
			out = append(out, w)
		}
		if takesValue(w) && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

// flagTakesValue returns, for the parser's flags, whether an option word
// such as "-p", "--listen" or "-lp" (a cluster ending in an option with a
// value) takes the next word as its value.
func flagTakesValue(k *kong.Kong) func(string) bool {
	short := map[rune]bool{} // short name → takes a value
	long := map[string]bool{}
	for _, group := range k.Model.AllFlags(false) {
		for _, f := range group {
			v := !f.IsBool() && !f.IsCounter()
			long[f.Name] = v
			if f.Short != 0 {
				short[f.Short] = v
			}
		}
	}
	return func(w string) bool {
		switch {
		case strings.HasPrefix(w, "--"):
			return !strings.Contains(w, "=") && long[w[2:]]
		case strings.HasPrefix(w, "-") && len(w) > 1:
			// A cluster of one-letter options: the first that takes a value
			// takes the rest of the word, or the next word if it is last.
			rs := []rune(w[1:])
			for i, r := range rs {
				if short[r] {
					return i == len(rs)-1
				}
			}
		}
		return false
	}
}
