package main

import (
	"strings"

	"github.com/alecthomas/kong"
)

// normaliseArgs rewrites the original daemon's two-letter options, -Dp and
// -uT, into the long options kong parses (kong would read -Dp as -D -p):
// a flag tagged orig:"-uT" is spelled -uT, and its also tag adds options
// it implies (-Dp detaches). Option values are left untouched: takesValue
// tells which words consume the next word, so that `-C -uT` keeps "-uT" as
// the format. Nothing after "--" is rewritten.
func normaliseArgs(args []string, originals map[string][]string, takesValue func(word string) bool) []string {
	out := make([]string, 0, len(args)+1)
	for i := 0; i < len(args); i++ {
		w := args[i]
		if w == "--" {
			return append(out, args[i:]...)
		}
		if long, ok := originals[w]; ok {
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

// originalSpellings returns the rewrites of the flags tagged orig: "-Dp" →
// "--daemon --pid-file".
func originalSpellings(k *kong.Kong) map[string][]string {
	m := map[string][]string{}
	for _, f := range allFlags(k) {
		if orig := f.Tag.Get("orig"); orig != "" {
			m[orig] = append(strings.Fields(f.Tag.Get("also")), "--"+f.Name)
		}
	}
	return m
}

// allFlags returns the flags of every command.
func allFlags(k *kong.Kong) []*kong.Flag {
	var flags []*kong.Flag
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		flags = append(flags, n.Flags...)
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(k.Model.Node)
	return flags
}

// flagTakesValue returns, for the parser's flags, whether an option word
// such as "-p", "--listen" or "-lp" (a cluster ending in an option with a
// value) takes the next word as its value.
func flagTakesValue(k *kong.Kong) func(string) bool {
	short := map[rune]bool{} // one-letter options with a value
	long := map[string]bool{}
	for _, f := range allFlags(k) {
		v := !f.IsBool() && !f.IsCounter()
		long[f.Name] = long[f.Name] || v
		if f.Short != 0 && v {
			short[f.Short] = true
		}
	}
	return func(w string) bool {
		switch {
		case strings.HasPrefix(w, "--"):
			name := w[2:]
			return !strings.Contains(name, "=") && long[name]
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
