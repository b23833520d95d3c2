package cmdline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type port int

func (p *port) Decode(ctx *kong.DecodeContext) error {
	return Value(ctx, func(s string) error {
		if s != "80" {
			return fmt.Errorf("port %q is not 80", s)
		}
		*p = 80
		return nil
	})
}

type grammar struct {
	Listen  port          `short:"p"`
	Host    string        `short:"h"`
	Times   string        `orig:"-uT"`
	Wait    time.Duration `name:"wait"`
	N       int           `name:"n"`
	Choice  string        `enum:"a,b" default:"a"`
	Version kong.VersionFlag
}

func (g *grammar) Run() error {
	if g.N == 7 {
		return Failf("seven")
	}
	return nil
}

// TestRun: every way a command line can be wrong gives one line naming
// the option and exit status 2; Run's own error gives its status.
func TestRun(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 0, ""},
		{[]string{"-p", "80"}, 0, ""},
		{[]string{"-p", "81"}, 2, `ipprotd: -p/--listen: port "81" is not 80` + "\n"},
		{[]string{"-p"}, 2, "ipprotd: -p/--listen: missing value\n"},
		{[]string{"-h"}, 2, "ipprotd: -h/--host: missing value (-h is the destination host, as in the original; help is -? or --help)\n"},
		{[]string{"--times"}, 2, "ipprotd: -uT/--times: missing value\n"},
		{[]string{"--wait", "soon"}, 2, `ipprotd: --wait: "soon" is not a duration (such as 500ms, 10s, 5m or 1h)` + "\n"},
		{[]string{"--n", "x"}, 2, `ipprotd: --n: "x" is not a whole number` + "\n"},
		{[]string{"--choice", "c"}, 2, `ipprotd: --choice: "c" is not one of a, b` + "\n"},
		{[]string{"-x"}, 2, "ipprotd: unknown flag -x (see ipprotd --help)\n"},
		{[]string{"--n", "7"}, 1, "ipprotd: seven\n"},
		{[]string{"--version"}, 0, ""},
	} {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			var g grammar
			var exit Exit
			var stdout, stderr bytes.Buffer
			k, err := kong.New(&g, append(Mappers(), kong.Name("ipprotd"), kong.NoDefaultHelp(), kong.Writers(&stdout, &stderr),
				exit.Option(), kong.WithHyphenPrefixedParameters(true), kong.Vars{"version": "ipprotd 1"})...)
			if err != nil {
				t.Fatal(err)
			}
			if code := Run(k, &exit, tt.args, &stderr); code != tt.code || stderr.String() != tt.want {
				t.Errorf("got %d, %q; want %d, %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	for err, want := range map[error]int{
		nil:                              0,
		errors.New("x"):                  1,
		Usagef("x"):                      2,
		fmt.Errorf("w: %w", Usagef("x")): 2,
		Reported(1):                      1,
	} {
		if got := Status(err); got != want {
			t.Errorf("Status(%v) = %d; want %d", err, got, want)
		}
	}
	if Reported(2).Error() != "" {
		t.Errorf("Reported's message %q; want none", Reported(2).Error())
	}
}

// TestIsTerminal: a file and a buffer are no terminals.
func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []io.Writer{f, &bytes.Buffer{}} {
		if IsTerminal(w) {
			t.Errorf("IsTerminal(%T) = true; want false", w)
		}
	}
}
