// Package cat is `ipprotd cat`: it reads recordings (package playback) and
// writes them as text, as one direction's raw bytes, as a pcapng capture or
// as the statements of a PostgreSQL session. Cmd is its kong grammar; main
// runs it through kong. docs/reading.md shows each mode.
package cat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/playback"
)

// Cmd is `ipprotd cat`: its arguments and flags, and Run.
type Cmd struct {
	Files []string `arg:"" optional:"" name:"FILE" help:"Recordings: plain, .gz or .bz2, complete, growing or cut short."`

	Hex    bool      `help:"Show data as a hex dump instead of escaped text."`
	Raw    bool      `help:"Write only the data of one direction (--dir, default out), unchanged: a recording piped back into a client."`
	Dir    string    `placeholder:"in|out" help:"Only this direction: in (client to server) or out (server to client). Also the direction of data without block stamps (recorded without -M; default out)."`
	Follow bool      `help:"Follow a recording as it grows, like tail -f; a .gz file ends with its trailer, others with Ctrl-C."`
	Since  timeValue `placeholder:"TIME" help:"Only blocks at or after TIME (RFC 3339, or yyyy-mm-dd HH:MM:SS in local time)."`
	Until  timeValue `placeholder:"TIME" help:"Only blocks before TIME."`
	Color  string    `enum:"auto,always,never" default:"auto" placeholder:"auto|always|never" help:"Colour the text: auto on a terminal unless NO_COLOR is set (default: ${default})."`

	Pcapng bool   `help:"Write the session as a pcapng capture (for Wireshark) to stdout; needs a recording made with -M -L."`
	Force  bool   `help:"With --pcapng: write a capture also from a recording without block stamps or without both directions."`
	Client string `placeholder:"IP:PORT" help:"With --pcapng: the client's address (default: the IP in the file name, a made-up port)."`
	Server string `placeholder:"IP:PORT" help:"With --pcapng: the destination's address (default: 127.0.0.1:1 or [::1]:1, placeholders)."`

	ConnLog       string  `short:"c" placeholder:"FILE" help:"The connection log (-c of the daemon) to take the connection's addresses and ports from, for --pcapng."`
	ConnLogFormat *string `short:"C" placeholder:"FORMAT" help:"The format of that log (-C); only one-line formats with %f can be read (default: \"${connlog_format}\")."`

	SQL    bool   `name:"sql" help:"List the statements of a PostgreSQL session with their results; needs a recording made with -M -L."`
	Format string `enum:"text,json" default:"text" placeholder:"text|json" help:"Format of --sql: a line of text or a JSON object per statement (default: ${default})."`

	dir    datafile.Direction // --dir, or out
	dirSet bool
	color  bool            // colour the text output
	logFmt *connlog.Format // -C compiled, where -c is given
}

// Help is the text of ipprotd cat --help below its usage line.
func (c *Cmd) Help() string {
	return `Shows ipprotd's data files (-f): each block with its time, direction and size, its data as escaped text or a hex dump; or one direction's bytes (--raw), a capture for Wireshark (--pcapng), the statements of a PostgreSQL session (--sql). See docs/reading.md.

Exit status: 0, also for a recording cut short (still being written, or the daemon was killed: a note on stderr says where it ends); 1 when a recording cannot be read (damaged: what came before is shown) or --sql cannot decode it; 2 on bad usage, or when --pcapng cannot be used on a recording.`
}

// timeValue is a --since/--until value.
type timeValue struct{ time.Time }

// timeLayouts are what --since and --until accept, tried in order; those
// without an offset are local time.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	datafile.ISOLayout,
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

// Decode reads the option's value as a time.
func (t *timeValue) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		for _, layout := range timeLayouts {
			if v, err := time.ParseInLocation(layout, s, time.Local); err == nil {
				t.Time = v
				return nil
			}
		}
		return fmt.Errorf("%q is not a time: use RFC 3339 (2006-01-02T15:04:05+01:00) or yyyy-mm-dd HH:MM:SS", s)
	})
}

// Run runs cat. Its error carries the exit status: 0, also for a recording
// cut short (a note on stderr says where it ends), 1 when a recording
// cannot be read (everything before the damage is written) or --sql cannot
// decode it, 2 on bad usage or when --pcapng cannot be used on a recording.
// Each file's problem is reported on stderr as it is met; the error itself
// then says nothing more. With --follow, SIGINT and SIGTERM end it with
// status 0; otherwise they keep their default effect.
func (c *Cmd) Run(kctx *kong.Context) error {
	ctx := context.Background()
	if c.Follow {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return c.run(ctx, kctx.Stdout, kctx.Stderr)
}

func (c *Cmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	if err := c.check(stdout); err != nil {
		return cmdline.Usagef("cat: %v (see ipprotd cat --help)", err)
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	code := 0
	for _, file := range c.Files {
		if len(c.Files) > 1 && !c.Raw && (!c.SQL || c.Format == "text") {
			fmt.Fprintf(out, "==> %s <==\n", file)
		}
		err := c.file(ctx, file, out, stderr)
		if ferr := out.Flush(); err == nil && ferr != nil {
			err = ferr
		}
		if err == nil {
			continue
		}
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == file {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // the line names the file already
		}
		fmt.Fprintf(stderr, "ipprotd: %s: %v\n", file, err)
		code = max(code, cmdline.Status(err))
	}
	if code != 0 {
		return cmdline.Reported(code)
	}
	return nil
}

// check checks the flags against each other.
func (c *Cmd) check(stdout io.Writer) error {
	modes := 0
	for _, on := range []bool{c.Raw, c.Pcapng, c.SQL} {
		if on {
			modes++
		}
	}
	switch {
	case len(c.Files) == 0:
		return errors.New("no FILE given")
	case modes > 1:
		return errors.New("--raw, --pcapng and --sql cannot be used together")
	case c.Hex && modes > 0:
		return errors.New("--hex shows text output; it cannot be used with --raw, --pcapng or --sql")
	case (c.Pcapng || c.Follow) && len(c.Files) != 1:
		return errors.New("--pcapng and --follow read exactly one FILE")
	case c.Pcapng && c.Follow:
		return errors.New("--pcapng cannot --follow: a capture is written once the recording is complete")
	case c.Force && !c.Pcapng, (c.Client != "" || c.Server != "") && !c.Pcapng:
		return errors.New("--force, --client and --server go with --pcapng")
	case c.Format != "text" && !c.SQL:
		return errors.New("--format goes with --sql")
	case !c.Since.IsZero() && !c.Until.IsZero() && !c.Until.After(c.Since.Time):
		return fmt.Errorf("--until %s is not after --since %s", c.Until.Format(time.RFC3339), c.Since.Format(time.RFC3339))
	}
	c.dir = datafile.Out
	switch c.Dir {
	case "":
	case "in":
		c.dir, c.dirSet = datafile.In, true
	case "out":
		c.dirSet = true
	default:
		return fmt.Errorf("--dir: %q is neither in nor out", c.Dir)
	}
	if c.ConnLogFormat != nil && c.ConnLog == "" {
		return errors.New("-C needs -c")
	}
	if c.ConnLog != "" {
		f, err := connlog.CompileGiven(c.ConnLogFormat)
		if err == nil {
			err = f.Readable()
		}
		if err != nil {
			return fmt.Errorf("-C/--conn-log-format: %v", err)
		}
		c.logFmt = f
	}
	for _, a := range []struct{ opt, v string }{{"--client", c.Client}, {"--server", c.Server}} {
		if a.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.v); err != nil {
			return fmt.Errorf("%s: %q is not IP:PORT (an IPv6 address in brackets: [::1]:5432)", a.opt, a.v)
		}
	}
	c.color = c.Color == "always" || (c.Color == "auto" && os.Getenv("NO_COLOR") == "" && cmdline.IsTerminal(stdout))
	if c.Pcapng && cmdline.IsTerminal(stdout) {
		return errors.New("--pcapng writes a binary capture: redirect stdout to a file (> session.pcapng)")
	}
	return nil
}

// selected says whether a block's time is within --since and --until. A
// block without a time is selected only without them.
func (c *Cmd) selected(t time.Time) bool {
	if c.Since.IsZero() && c.Until.IsZero() {
		return true
	}
	if t.IsZero() {
		return false
	}
	return (c.Since.IsZero() || !t.Before(c.Since.Time)) && (c.Until.IsZero() || t.Before(c.Until.Time))
}

// file writes one recording in the chosen mode.
func (c *Cmd) file(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer) error {
	switch {
	case c.Pcapng:
		return c.pcapng(file, out, stderr)
	case c.SQL:
		return c.sql(ctx, file, out, stderr)
	}
	dir, known := c.dir, c.dirSet
	if !c.Follow {
		pr, err := c.probe(ctx, file)
		if err != nil {
			return err
		}
		if _, nameErr := datafile.ParseName(file, time.Local); nameErr != nil && !pr.stamped && !pr.iso {
			return fmt.Errorf("not an ipprotd recording: its name is not a data file's (PREFIX_yyyy-mm-dd_HHMMSS_N_IP[.gz|.bz2]) and it holds no block stamp or ISO line")
		}
		if !known && !pr.stamped && pr.unstamped > 0 {
			dir, known = c.loggedDir(file, pr.unstamped)
		}
	}
	var show func(playback.Block) error
	if c.Raw {
		show = func(b playback.Block) error {
			if b.Dir != c.dir || !c.selected(b.Time) {
				return nil
			}
			_, err := out.Write(b.Data)
			return err
		}
	} else {
		p := playback.NewPrinter(out, playback.PrintOptions{Hex: c.Hex, Color: c.color, UnknownDir: !known})
		show = func(b playback.Block) error {
			if (c.dirSet && b.Dir != c.dir) || !c.selected(b.Time) {
				return nil
			}
			return p.Print(b)
		}
	}
	timed := false
	each := func(b playback.Block) error {
		timed = timed || !b.Time.IsZero()
		return show(b)
	}
	err := c.blocksOf(ctx, file, dir, out, stderr, each)
	if err == nil && !timed && (!c.Since.IsZero() || !c.Until.IsZero()) {
		fmt.Fprintf(stderr, "ipprotd: %s: no block has a time (recorded without -M and -t): --since and --until select none\n", file)
	}
	return err
}

// probed is what the first blocks of a recording say: whether it has block
// stamps (it is read up to the first) or ISO lines, and how much data
// without a stamp it holds.
type probed struct {
	stamped, iso bool
	unstamped    int64
}

var errProbed = errors.New("probed")

// probe reads file up to its first block stamp.
func (c *Cmd) probe(ctx context.Context, file string) (probed, error) {
	var pr probed
	err := c.blocksOf(ctx, file, c.dir, nil, io.Discard, func(b playback.Block) error {
		if b.Stamped {
			pr.stamped = true
			return errProbed
		}
		pr.iso = pr.iso || b.ISO != ""
		pr.unstamped += int64(len(b.Data))
		return nil
	})
	if errors.Is(err, errProbed) {
		err = nil
	}
	return pr, err
}

// loggedDir tells the direction of a recording made without -M from the
// connection log (-c), where one is given: data as long as the bytes
// written to the client and not as long as those received from it was
// recorded out, and the other way round in. Otherwise the direction is
// not known.
func (c *Cmd) loggedDir(file string, size int64) (datafile.Direction, bool) {
	if c.logFmt == nil {
		return c.dir, false
	}
	e, err := connlog.Find(c.ConnLog, c.logFmt, file)
	switch {
	case err != nil:
		return c.dir, false
	case size == e.BytesOut && size != e.BytesIn:
		return datafile.Out, true
	case size == e.BytesIn && size != e.BytesOut:
		return datafile.In, true
	}
	return c.dir, false
}

// blocks calls fn for every block of file, following it with --follow,
// and flushes out after each block when following. A recording cut short
// is not an error: a note on stderr says where it ends. Data without a
// block stamp has the direction of --dir, or out.
func (c *Cmd) blocks(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer, fn func(playback.Block) error) error {
	return c.blocksOf(ctx, file, c.dir, out, stderr, fn)
}

// blocksOf is blocks with dir the direction of data without a stamp; out
// may be nil when not following.
func (c *Cmd) blocksOf(ctx context.Context, file string, dir datafile.Direction, out *bufio.Writer, stderr io.Writer, fn func(playback.Block) error) error {
	if c.Follow {
		err := playback.Follow(ctx, file, dir, 0, func(b playback.Block) error {
			if err := fn(b); err != nil {
				return err
			}
			return out.Flush()
		})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	f, err := playback.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := playback.NewReader(f, dir)
	for {
		b, err := r.Next()
		var cut *playback.TruncatedError
		switch {
		case err == io.EOF:
			return nil
		case errors.As(err, &cut):
			if out != nil {
				if ferr := out.Flush(); ferr != nil {
					return ferr
				}
			}
			fmt.Fprintf(stderr, "ipprotd: %s: recording ends here: %v\n", file, cut)
			return nil
		case err != nil:
			return err
		}
		if err := fn(b); err != nil {
			return err
		}
	}
}

// sql lists the statements of a PostgreSQL session.
func (c *Cmd) sql(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer) error {
	var line []byte
	emit := func(st playback.Statement) error {
		if !c.selected(st.Time) {
			return nil
		}
		if c.Format == "json" {
			line = st.AppendJSON(line[:0], file)
		} else {
			line = st.AppendText(line[:0])
		}
		_, err := out.Write(line)
		return err
	}
	d := playback.NewSQL(emit)
	var outBlocks, outBytes int
	err := c.blocks(ctx, file, out, stderr, func(b playback.Block) error {
		if b.Dir == datafile.Out && b.Stamped {
			outBlocks++
			outBytes += len(b.Data)
		}
		return d.Block(b)
	})
	if err == nil {
		err = d.End()
	}
	if err != nil {
		return fmt.Errorf("--sql: %w", err)
	}
	if outBlocks > 0 && outBytes == 0 {
		fmt.Fprintf(stderr, "ipprotd: %s: the server's data is not in the recording (made without -L): no results\n", file)
	}
	return nil
}

// pcapng writes file as a pcapng capture. It reads the recording twice:
// first to check that it can be shown as a TCP connection and to gather
// the facts for the section comment, then to write the packets.
func (c *Cmd) pcapng(file string, out *bufio.Writer, stderr io.Writer) error {
	var st playback.Stats
	if err := c.blocks(context.Background(), file, out, io.Discard, st.Add); err != nil {
		return err
	}
	if err := st.Pcapable(); err != nil && !c.Force {
		return cmdline.Usagef("--pcapng: %v; use --force to write a capture anyway", err)
	}
	known, logged, err := c.known(file)
	if err != nil {
		return err
	}
	conn, notes := playback.CaptureConfig(file, known, &st)
	w, err := playback.NewPcapng(out, conn)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "ipprotd: %s: %s\n", file, n)
	}
	if err := c.blocks(context.Background(), file, out, stderr, w.Block); err != nil {
		return err
	}
	end := logged.End
	if end.IsZero() {
		end = st.Last
	}
	if resetEnd(logged.Outcome) {
		return w.Reset(end)
	}
	return w.Close(end)
}

// known gathers what --client, --server and the connection log (-c) say
// of the connection recorded in file, and the log's entry for it.
func (c *Cmd) known(file string) (k playback.Known, logged connlog.Entry, err error) {
	if c.logFmt != nil {
		if logged, err = connlog.Find(c.ConnLog, c.logFmt, file); err != nil {
			return k, logged, err
		}
		k = playback.Known{Client: logged.Client, Server: logged.Dest, Start: logged.Start, LogLine: logged.Line}
	}
	if c.Client != "" {
		k.Client = netip.MustParseAddrPort(c.Client)
	}
	if c.Server != "" {
		k.Server = netip.MustParseAddrPort(c.Server)
	}
	return k, logged, nil
}

// resetEnd says whether a connection of the logged outcome ended in a
// reset: ipprotd resets both sides of a session it aborts or whose
// recording failed.
func resetEnd(outcome string) bool {
	return outcome == "aborted" || outcome == "record-error"
}
