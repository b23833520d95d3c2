// Package cmdline is what ipprotd's commands share on top of kong: the error
// that carries an exit status, and decoders that take an option's value the
// way getopt(3) does and name the option in every error they return. A
// command returns *Error from its Run; main exits with its Code.
//
//	parser, err := kong.New(&grammar, cmdline.Mappers()...)
//	...
//	return cmdline.Usagef("--since %s is after --until %s", a, b) // exit status 2
package cmdline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"
)

// The exit statuses of every ipprotd command.
const (
	StatusFailure = 1 // the command could not do its work
	StatusUsage   = 2 // bad input: nothing was started
)

// Error is an error with the exit status it ends the program with. Its
// message is the whole line main prints after "ipprotd: ". It is a
// kong.ExitCoder.
type Error struct {
	Code int
	Err  error
}

// Error returns the message; "" for an error of Reported.
func (e *Error) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}
func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns e.Code.
func (e *Error) ExitCode() int { return e.Code }

// Usagef returns a usage error (exit status 2) with the formatted message,
// which names the option at fault.
func Usagef(format string, args ...any) error {
	return &Error{Code: StatusUsage, Err: fmt.Errorf(format, args...)}
}

// Failf returns an error with exit status 1.
func Failf(format string, args ...any) error {
	return &Error{Code: StatusFailure, Err: fmt.Errorf(format, args...)}
}

// Reported returns an error with exit status code for problems the command
// has reported on stderr already: main prints nothing more for it.
func Reported(code int) error { return &Error{Code: code} }

// Status returns the exit status err ends the program with: 0 for nil, its
// ExitCode for a kong.ExitCoder, else 1.
func Status(err error) int {
	if err == nil {
		return 0
	}
	var ec kong.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return StatusFailure
}

// OptionName returns how errors name the option of v: "-p/--listen" for an
// option with a one-letter form, the original's two-letter spelling of an
// option tagged orig:"-uT" as "-uT/--post-cmd-times", else "--max-conns";
// "<FILE>" for a positional argument.
func OptionName(v *kong.Value) string {
	f := v.Flag
	if f == nil {
		return "<" + v.Name + ">"
	}
	switch {
	case f.Tag.Get("orig") != "":
		return f.Tag.Get("orig") + "/--" + f.Name
	case f.Short != 0:
		return "-" + string(f.Short) + "/--" + f.Name
	}
	return "--" + f.Name
}

// Value takes the next word of the command line as the value of the option
// being decoded, whatever it looks like ("-C -uT" gives -C the value -uT, as
// getopt does), and hands it to parse. A missing value and parse's error are
// usage errors naming the option.
func Value(ctx *kong.DecodeContext, parse func(string) error) error {
	t := ctx.Scan.Pop()
	if t.IsEOL() {
		msg := "missing value"
		if f := ctx.Value.Flag; f != nil && f.Short == 'h' {
			msg += " (-h is the destination host, as in the original; help is -? or --help)"
		}
		return Usagef("%s: %s", OptionName(ctx.Value), msg)
	}
	s, ok := t.Value.(string)
	if !ok {
		s = fmt.Sprint(t.Value)
	}
	if err := parse(s); err != nil {
		return Usagef("%s: %v", OptionName(ctx.Value), err)
	}
	return nil
}

// Mappers returns the kong options that decode ints, durations and strings
// through Value, so that their errors are usage errors naming the option in
// the same words as those of ipprotd's own value types. A string option
// with an enum tag is checked against it here.
func Mappers() []kong.Option {
	return []kong.Option{
		kong.TypeMapper(reflect.TypeFor[int](), kong.MapperFunc(decodeInt)),
		kong.TypeMapper(reflect.TypeFor[time.Duration](), kong.MapperFunc(decodeDuration)),
		kong.TypeMapper(reflect.TypeFor[string](), kong.MapperFunc(decodeString)),
	}
}

func decodeInt(ctx *kong.DecodeContext, target reflect.Value) error {
	return Value(ctx, func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		target.SetInt(int64(n))
		return nil
	})
}

func decodeDuration(ctx *kong.DecodeContext, target reflect.Value) error {
	return Value(ctx, func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (such as 500ms, 10s, 5m or 1h)", s)
		}
		target.SetInt(int64(d))
		return nil
	})
}

func decodeString(ctx *kong.DecodeContext, target reflect.Value) error {
	return Value(ctx, func(s string) error {
		if enum := ctx.Value.Enum; enum != "" {
			choices := strings.Split(enum, ",")
			if !slices.Contains(choices, s) {
				return fmt.Errorf("%q is not one of %s", s, strings.Join(choices, ", "))
			}
		}
		target.SetString(s)
		return nil
	})
}

// Exit records kong's exit requests (help, version), so that a command line
// is parsed alike in main and in tests, without os.Exit.
type Exit struct {
	code      int
	requested bool
}

// Option is the kong option that sends exit requests to e.
func (e *Exit) Option() kong.Option {
	return kong.Exit(func(code int) { e.code, e.requested = code, true })
}

// Run parses words with k, whose exit requests go to e, runs the command
// they select and returns the exit status. An error is printed on stderr
// as one line, "ipprotd: <message>"; kong's own (an unknown option, an
// argument too many) ends with a pointer to the help of the command at
// fault.
func Run(k *kong.Kong, e *Exit, words []string, stderr io.Writer) int {
	kctx, err := k.Parse(words)
	if e.requested {
		return e.code
	}
	if err == nil {
		err = kctx.Run()
	} else {
		err = parseError(err)
	}
	if err != nil && err.Error() != "" {
		fmt.Fprintf(stderr, "ipprotd: %s\n", err)
	}
	return Status(err)
}

// parseError says what kong found wrong with the command line.
func parseError(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce // a value that a decoder refused; it names the option
	}
	help := "ipprotd --help"
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		if sel := pe.Context.Selected(); sel != nil && !sel.Hidden {
			help = "ipprotd " + sel.Name + " --help"
		}
	}
	msg := err.Error()
	// kong suggests every option within two edits; for a one-letter
	// option that is all of them, which helps no one.
	if i := strings.Index(msg, ", did you mean one of"); i >= 0 {
		msg = msg[:i]
	}
	return Usagef("%s (see %s)", msg, help)
}

// IsTerminal says whether w is a terminal: colour and progress lines are
// for people, never for files and pipes.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
