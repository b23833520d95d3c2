package main

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
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"

	"github.com/ipprot/ipprot/connlog"
	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/playback"
)

// catCmd is `ipprotd cat`: it reads recordings (package playback) and
// writes them as text, raw bytes, a pcapng capture or SQL statements.
// docs/reading.md shows each mode.
type catCmd struct {
	Files []string `arg:"" name:"FILE" help:"Recordings: plain, .gz or .bz2, complete, growing or cut short."`

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

	SQL    bool   `name:"sql" help:"List the statements of a PostgreSQL session with their results; needs a recording made with -M -L."`
	Format string `enum:"text,json" default:"text" placeholder:"text|json" help:"Format of --sql: a line of text or a JSON object per statement (default: ${default})."`

	dir       datafile.Direction // --dir, or out
	dirSet    bool
	color     bool    // colour the text output
	connLog   string  // the root's -c: the connection log to look files up in
	logFormat *string // the root's -C
	connFacts playback.ConnFacts
}

// Help is the text of ipprotd cat --help below its usage line.
func (c *catCmd) Help() string {
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

func (t *timeValue) UnmarshalText(b []byte) error {
	for _, layout := range timeLayouts {
		if v, err := time.ParseInLocation(layout, string(b), time.Local); err == nil {
			t.Time = v
			return nil
		}
	}
	return fmt.Errorf("%q is not a time: use RFC 3339 (2006-01-02T15:04:05+01:00) or yyyy-mm-dd HH:MM:SS", b)
}

// catFlagsOfRoot are the root's flags cat uses too: help, and the
// connection log to look a recording's facts up in (-c, and -C for its
// format).
var catFlagsOfRoot = map[string]string{
	"help":            "",
	"conn-log":        "With --pcapng: the connection log (-c) to take the client's and destination's addresses and ports from.",
	"conn-log-format": "The format of that log (-C); only one-line formats with %f can be read (default: \"${connlog_format}\").",
}

// BeforeReset runs when cat is on the command line. kong would list the
// proxy's options under cat --help and accept them after cat: hide them,
// refuse them, and reword the two cat uses.
func (c *catCmd) BeforeReset(ctx *kong.Context) error {
	for _, p := range ctx.Path {
		if p.Flag == nil || p.Flag.Group == nil || p.Flag.Name == "version" {
			continue // cat's own flags have no group
		}
		if _, ok := catFlagsOfRoot[p.Flag.Name]; !ok {
			return fmt.Errorf("cat: --%s is an option of the proxy, not of cat (see ipprotd cat --help)", p.Flag.Name)
		}
	}
	for _, f := range ctx.Model.Flags {
		help, ok := catFlagsOfRoot[f.Name]
		switch {
		case !ok:
			f.Hidden = true
		case help != "":
			f.Help = strings.ReplaceAll(help, "${connlog_format}", connlog.DefaultFormat)
		}
	}
	return nil
}

// run runs cat with the root's -c and -C and returns the exit status: 0,
// also for a recording cut short (a note on stderr says where it ends), 1
// when a recording cannot be read (everything before the damage is
// written) or --sql cannot decode it, 2 on bad usage or when --pcapng
// cannot be used on a recording. With --follow, SIGINT and SIGTERM end it
// with status 0; otherwise they keep their default effect.
func (c *catCmd) run(connLog string, logFormat *string, stdout, stderr io.Writer) int {
	c.connLog, c.logFormat = connLog, logFormat
	ctx := context.Background()
	if c.Follow {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return c.runContext(ctx, stdout, stderr)
}

// catError is a failure of cat with its exit status.
type catError struct {
	code int
	err  error
}

func (e *catError) Error() string { return e.err.Error() }
func (e *catError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &catError{code: 2, err: fmt.Errorf(format, args...)}
}

func (c *catCmd) runContext(ctx context.Context, stdout, stderr io.Writer) int {
	if err := c.check(stdout); err != nil {
		fmt.Fprintf(stderr, "ipprotd: cat: %v\n", err)
		return 2
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
		status := 1
		var ce *catError
		if errors.As(err, &ce) {
			status = ce.code
		}
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == file {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // the line names the file already
		}
		fmt.Fprintf(stderr, "ipprotd: %s: %v\n", file, err)
		code = max(code, status)
	}
	return code
}

// check checks the flags against each other.
func (c *catCmd) check(stdout io.Writer) error {
	modes := 0
	for _, on := range []bool{c.Raw, c.Pcapng, c.SQL} {
		if on {
			modes++
		}
	}
	switch {
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
	for _, a := range []struct{ opt, v string }{{"--client", c.Client}, {"--server", c.Server}} {
		if a.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.v); err != nil {
			return fmt.Errorf("%s: %q is not IP:PORT (an IPv6 address in brackets: [::1]:5432)", a.opt, a.v)
		}
	}
	c.color = c.Color == "always" || (c.Color == "auto" && os.Getenv("NO_COLOR") == "" && isTerminal(stdout))
	if c.Pcapng && isTerminal(stdout) {
		return errors.New("--pcapng writes a binary capture: redirect stdout to a file (> session.pcapng)")
	}
	return nil
}

// selected says whether a block's time is within --since and --until. A
// block without a time is selected only without them.
func (c *catCmd) selected(t time.Time) bool {
	if c.Since.IsZero() && c.Until.IsZero() {
		return true
	}
	if t.IsZero() {
		return false
	}
	return (c.Since.IsZero() || !t.Before(c.Since.Time)) && (c.Until.IsZero() || t.Before(c.Until.Time))
}

// file writes one recording in the chosen mode.
func (c *catCmd) file(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer) error {
	switch {
	case c.Pcapng:
		return c.pcapng(file, out, stderr)
	case c.SQL:
		return c.sql(ctx, file, out, stderr)
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
		p := playback.NewPrinter(out, playback.PrintOptions{Hex: c.Hex, Color: c.color})
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
	err := c.blocks(ctx, file, out, stderr, each)
	if err == nil && !timed && (!c.Since.IsZero() || !c.Until.IsZero()) {
		fmt.Fprintf(stderr, "ipprotd: %s: no block has a time (recorded without -M and -t): --since and --until select none\n", file)
	}
	return err
}

// blocks calls fn for every block of file, following it with --follow,
// and flushes out after each block when following. A recording cut short
// is not an error: a note on stderr says where it ends.
func (c *catCmd) blocks(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer, fn func(playback.Block) error) error {
	if c.Follow {
		err := playback.Follow(ctx, file, c.dir, 0, func(b playback.Block) error {
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
	r := playback.NewReader(f, c.dir)
	for {
		b, err := r.Next()
		var cut *playback.TruncatedError
		switch {
		case err == io.EOF:
			return nil
		case errors.As(err, &cut):
			if ferr := out.Flush(); ferr != nil {
				return ferr
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

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// sql lists the statements of a PostgreSQL session.
func (c *catCmd) sql(ctx context.Context, file string, out *bufio.Writer, stderr io.Writer) error {
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
func (c *catCmd) pcapng(file string, out *bufio.Writer, stderr io.Writer) error {
	var st recordingStats
	if err := c.blocks(context.Background(), file, out, io.Discard, st.add); err != nil {
		return err
	}
	if err := st.pcapable(); err != nil && !c.Force {
		return usageErr("--pcapng: %v; use --force to write a capture anyway", err)
	}
	conn, notes, err := c.endpoints(file)
	if err != nil {
		return err
	}
	st.connEnd = c.connFacts.End
	conn.Comment = c.pcapComment(file, conn, &st, notes)
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
	return w.Close(st.end())
}

// recordingStats is what a first reading of a recording found.
type recordingStats struct {
	blocks, bytes [2]int64 // stamped blocks and their data, by direction
	unstamped     int64    // data without a stamp
	first, last   time.Time
	connEnd       time.Time
}

func (s *recordingStats) add(b playback.Block) error {
	if !b.Stamped {
		s.unstamped += int64(len(b.Data))
		return nil
	}
	if b.Part == 0 {
		s.blocks[b.Dir]++
	}
	s.bytes[b.Dir] += int64(len(b.Data))
	if s.first.IsZero() {
		s.first = b.Time
	}
	s.last = b.Time
	return nil
}

// pcapable says why the recording cannot be shown exactly as a TCP
// connection, if it cannot.
func (s *recordingStats) pcapable() error {
	switch {
	case s.blocks[datafile.In]+s.blocks[datafile.Out]+s.unstamped == 0:
		return errors.New("the recording is empty")
	case s.blocks[datafile.In]+s.blocks[datafile.Out] == 0:
		return errors.New("the recording has no block stamps (made without -M): the boundaries, times and directions of its data are unknown; it needs -M -L")
	case s.unstamped > 0:
		return fmt.Errorf("%d bytes of data come before the first block stamp", s.unstamped)
	}
	names := [...]string{datafile.In: "client-to-server", datafile.Out: "server-to-client"}
	for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
		if s.blocks[d] > 0 && s.bytes[d] == 0 {
			return fmt.Errorf("the recording has no %s data (made without -L): it needs -M -L", names[d])
		}
	}
	return nil
}

// end is when the capture shows the connection's end.
func (s *recordingStats) end() time.Time {
	if !s.connEnd.IsZero() {
		return s.connEnd
	}
	return s.last
}

// endpoints gathers the connection's addresses: --client and --server,
// else the connection log's line of the file, else the file name's client
// IP with made-up ports and a placeholder server. notes say which are
// made up.
func (c *catCmd) endpoints(file string) (conn playback.PcapngConfig, notes []string, err error) {
	name, nameErr := datafile.ParseName(file, time.Local)
	var facts playback.ConnFacts
	if c.connLog != "" {
		format := connlog.DefaultFormat
		if c.logFormat != nil {
			format = *c.logFormat
		}
		lf, err := playback.CompileLogFormat(format)
		if err != nil {
			return conn, nil, usageErr("-C/--conn-log-format: %v", err)
		}
		if facts, err = playback.FindConn(c.connLog, lf, file); err != nil {
			return conn, nil, err
		}
		conn.Start = facts.Start
	}
	if conn.Start.IsZero() && nameErr == nil {
		conn.Start = name.Start
	}
	if c.Client != "" {
		conn.Client = netip.MustParseAddrPort(c.Client)
	} else if facts.Client.Port() != 0 {
		conn.Client = facts.Client
	} else {
		ip := facts.Client.Addr()
		switch {
		case ip.IsValid():
		case nameErr == nil && name.Client.IsValid():
			ip = name.Client
		default:
			ip = netip.MustParseAddr("127.0.0.1")
			notes = append(notes, "the client's address is a placeholder (127.0.0.1): give --client or -c")
		}
		port := uint16(49152 + name.N%16384)
		conn.Client = netip.AddrPortFrom(ip, port)
		notes = append(notes, fmt.Sprintf("the client's port %d is made up: give --client or -c", port))
	}
	if c.Server != "" {
		conn.Server = netip.MustParseAddrPort(c.Server)
	} else if facts.Dest.Port() != 0 {
		conn.Server = facts.Dest
	} else {
		ip := netip.MustParseAddr("127.0.0.1")
		if conn.Client.Addr().Unmap().Is6() {
			ip = netip.IPv6Loopback()
		}
		conn.Server = netip.AddrPortFrom(ip, 1)
		notes = append(notes, fmt.Sprintf("the server's address %s is a placeholder: give --server or -c", conn.Server))
	}
	c.connFacts = facts
	return conn, notes, nil
}

// pcapComment is the section comment: the connection's facts and which
// of them are made up.
func (c *catCmd) pcapComment(file string, conn playback.PcapngConfig, st *recordingStats, notes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipprotd recording %s\n", file)
	fmt.Fprintf(&b, "client %s, server %s\n", conn.Client, conn.Server)
	if name, err := datafile.ParseName(file, time.Local); err == nil {
		fmt.Fprintf(&b, "connection %d, started %s (from the file name)\n", name.N, name.Start.Format(datafile.ISOLayout))
	}
	if c.connFacts.Line != "" {
		fmt.Fprintf(&b, "connection log: %s\n", c.connFacts.Line)
	}
	fmt.Fprintf(&b, "blocks: %d client to server (%d bytes), %d server to client (%d bytes)",
		st.blocks[datafile.In], st.bytes[datafile.In], st.blocks[datafile.Out], st.bytes[datafile.Out])
	if !st.first.IsZero() {
		fmt.Fprintf(&b, ", from %s to %s", st.first.Format(playback.TimeLayout), st.last.Format(playback.TimeLayout))
	}
	b.WriteString("\n")
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	b.WriteString("Synthesized by ipprotd: Ethernet, IP and TCP headers, the handshake, the FINs and the ACKs; segments of at most 65000 bytes. Payload, direction and block times are the recording's.")
	return b.String()
}
