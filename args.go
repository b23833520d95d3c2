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
	valueFlag := valueFlagOf(k)
	return func(w string) bool { return valueFlag(w) != "" }
}

// valueFlagOf returns, for the parser's flags, the long name of the
// option in a word that takes the next word as its value, or "".
func valueFlagOf(k *kong.Kong) func(string) string {
	short := map[rune]string{} // short name → long name, of options with a value
	long := map[string]bool{}  // long name → takes a value
	for _, group := range k.Model.AllFlags(false) {
		for _, f := range group {
			v := !f.IsBool() && !f.IsCounter()
			long[f.Name] = v
			if f.Short != 0 && v {
				short[f.Short] = f.Name
			}
		}
	}
	return func(w string) string {
		switch {
		case strings.HasPrefix(w, "--"):
			if name := w[2:]; !strings.Contains(name, "=") && long[name] {
				return name
			}
		case strings.HasPrefix(w, "-") && len(w) > 1:
			// A cluster of one-letter options: the first that takes a value
			// takes the rest of the word, or the next word if it is last.
			rs := []rune(w[1:])
			for i, r := range rs {
				if name, ok := short[r]; ok {
					if i == len(rs)-1 {
						return name
					}
					return ""
				}
			}
		}
		return ""
	}
}

// missingValue returns the long name of an option that takes a value but
// ends the (normalised) command line, or "". Values that begin with "-"
// are taken as getopt(3) takes them, so only the end of the line can leave
// an option without one.
func missingValue(args []string, valueFlag func(string) string) string {
	for i, w := range args {
		if w == "--" {
			return ""
		}
		if name := valueFlag(w); name != "" {
			if i == len(args)-1 {
				return name
			}
			// Skip the value, which may look like an option.
			return missingValue(args[i+2:], valueFlag)
		}
	}
	return ""
}
