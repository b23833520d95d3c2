// Package replay is `ipprotd replay`: it plays recordings (package
// playback) again against a server. Recordings made with -L -M go in;
// what comes out is, per recording, what the server answered against what
// was recorded: bytes for a raw replay (--to), the outcome of each
// statement for a PostgreSQL one (--postgres). Cmd is its kong grammar;
// main runs it through kong. docs/replay.md shows it at work.
//
//	ipprotd replay --to staging:8080 --speed 1 recordings/prot_*
//	ipprotd replay --postgres 'host=staging dbname=shop user=replay' recordings/prot_*.gz
//
// Each recording is played on a connection of its own, started when it
// started relative to the first (divided by --speed), so that a folder of
// recordings is replayed as the concurrent load it was.
package replay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/cmdline"
	"github.com/ipprot/ipprot/playback"
)

// Cmd is `ipprotd replay`: its arguments and flags, and Run.
type Cmd struct {
	Files []string `arg:"" optional:"" name:"FILE" help:"Recordings made with -L -M: plain, .gz or .bz2."`

	To         hostPort `placeholder:"HOST:PORT" help:"Send each recording's client-to-server bytes to HOST:PORT, as they were recorded (raw replay)."`
	ToTLS      bool     `name:"to-tls" help:"With --to: speak TLS to the target (for recordings of TLS sessions that ipprotd terminated)."`
	ToCA       string   `name:"to-ca" placeholder:"FILE" help:"With --to-tls: trust the certificates in FILE (PEM) instead of the system's roots."`
	ToInsecure bool     `name:"to-insecure" help:"With --to-tls: do not verify the target's certificate."`
	Postgres   string   `placeholder:"CONNINFO" help:"Replay PostgreSQL sessions statement by statement to the server CONNINFO names (libpq key=value or URL; PGPASSWORD and ~/.pgpass work) and compare each statement's outcome with the recorded one."`

	Speed  speed         `default:"1" placeholder:"X" help:"Replay X times as fast as recorded: the gaps between blocks and between the recordings' starts are divided by X; 0 sends without waiting (default: ${default})."`
	Wait   time.Duration `default:"3s" placeholder:"DURATION" help:"After the last block, read the target's answers until it closes the connection or this long after the last recorded answer's time (default: ${default})."`
	Format string        `enum:"text,json" default:"text" placeholder:"text|json" help:"A line of text or a JSON object per result (default: ${default})."`

	pg  *pgconn.Config // --postgres, parsed
	tls *tls.Config    // --to-tls
}

// Help is the text of ipprotd replay --help below its usage line.
func (c *Cmd) Help() string {
	return `Plays recordings made with -L -M again: the client's bytes to HOST:PORT (--to), with the recorded gaps and the recordings' relative start times, reporting per recording the bytes sent and received against the recorded ones; or, for PostgreSQL sessions (--postgres), each statement after a new authentication, reporting every statement whose outcome (the CommandComplete tag with its row count, or the error's SQLSTATE) differs from the recorded one. See docs/replay.md.

Exit status: 0 when every recording was replayed and nothing differs; 1 when something differs or a recording could not be replayed; 2 on bad usage.`
}

// hostPort is a --to value.
type hostPort string

// Decode reads HOST:PORT, IPv6 in brackets.
func (h *hostPort) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return fmt.Errorf("%q is not HOST:PORT (an IPv6 address in brackets: [::1]:5432)", s)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is outside 1-65535", port)
		}
		*h = hostPort(s)
		return nil
	})
}

// speed is a --speed value: a factor, 0 for no waiting.
type speed float64

// Decode reads a number ≥ 0.
func (v *speed) Decode(ctx *kong.DecodeContext) error {
	return cmdline.Value(ctx, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		switch {
		case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
			return fmt.Errorf("%q is not a number", s)
		case f < 0:
			return fmt.Errorf("%s is negative: give a factor (2 is twice as fast as recorded) or 0 for no waiting", s)
		}
		*v = speed(f)
		return nil
	})
}

// Run replays the recordings. Its error carries the exit status: 0 when
// nothing differs, 1 when something does or a recording could not be
// replayed (each reported as it is met), 2 on bad usage. SIGINT and
// SIGTERM end the replay: the connections are closed and what was
// replayed so far is summed up (exit status 1).
func (c *Cmd) Run(kctx *kong.Context) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.run(ctx, kctx.Stdout, kctx.Stderr)
}

func (c *Cmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	if err := c.check(); err != nil {
		return cmdline.Usagef("replay: %v (see ipprotd replay --help)", err)
	}
	recs, problems := survey(c.Files)
	for _, err := range problems {
		fmt.Fprintf(stderr, "ipprotd: %v\n", err)
	}
	if len(problems) > 0 {
		// A replay changes the target: none is started half.
		fmt.Fprintf(stderr, "ipprotd: replay: nothing was replayed\n")
		return cmdline.Reported(cmdline.StatusFailure)
	}
	rep := newReport(stdout, stderr, c.Format == "json", c.Postgres != "", len(recs))
	first := time.Time{}
	for _, r := range recs {
		if !r.first.IsZero() && (first.IsZero() || r.first.Before(first)) {
			first = r.first
		}
	}
	clk := clock{start: time.Now(), first: first, speed: float64(c.Speed)}
	stopProgress := rep.showProgress()
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Add(1)
		go c.session(ctx, &wg, clk, r, rep)
	}
	wg.Wait()
	stopProgress()
	interrupted := ctx.Err() != nil
	rep.summary(time.Since(clk.start), first, interrupted)
	if rep.failed > 0 || rep.differ > 0 || interrupted {
		return cmdline.Reported(cmdline.StatusFailure)
	}
	return nil
}

// session replays one recording, raw or PostgreSQL, and reports it.
func (c *Cmd) session(ctx context.Context, wg *sync.WaitGroup, clk clock, r recording, rep *report) {
	defer wg.Done()
	if c.Postgres != "" {
		c.postgres(ctx, clk, r, rep)
		return
	}
	c.raw(ctx, clk, r, rep)
}

// check checks the flags against each other and reads --postgres and
// --to-ca.
func (c *Cmd) check() error {
	switch {
	case len(c.Files) == 0:
		return errors.New("no FILE given")
	case c.To != "" && c.Postgres != "":
		return errors.New("--to and --postgres cannot be used together: --to replays the bytes, --postgres the statements of PostgreSQL sessions")
	case c.To == "" && c.Postgres == "":
		return errors.New("give the target: --to HOST:PORT, or --postgres CONNINFO for PostgreSQL sessions")
	case (c.ToCA != "" || c.ToInsecure) && !c.ToTLS:
		return errors.New("--to-ca and --to-insecure go with --to-tls")
	case c.ToTLS && c.To == "":
		return errors.New("--to-tls goes with --to (for --postgres, sslmode in CONNINFO says how to use TLS)")
	case c.ToCA != "" && c.ToInsecure:
		return errors.New("--to-ca and --to-insecure cannot be used together")
	case c.Wait <= 0:
		return fmt.Errorf("--wait: %v is not a positive duration", c.Wait)
	}
	if c.Postgres != "" {
		cfg, err := pgconn.ParseConfig(c.Postgres)
		if err != nil {
			return fmt.Errorf("--postgres: %v", err)
		}
		c.pg = cfg
	}
	if c.ToTLS {
		host, _, _ := net.SplitHostPort(string(c.To))
		c.tls = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.ToInsecure}
		if c.ToCA != "" {
			pem, err := os.ReadFile(c.ToCA)
			if err != nil {
				return fmt.Errorf("--to-ca: %v", err)
			}
			c.tls.RootCAs = x509.NewCertPool()
			if !c.tls.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--to-ca: %s holds no PEM certificate", c.ToCA)
			}
		}
	}
	return nil
}

// recording is one FILE to replay.
type recording struct {
	path  string
	first time.Time // its first block's stamp; zero for an empty recording
}

// survey reads the start of every file: each must be a recording with
// block stamps (-M). It returns them with their first stamps, or what is
// wrong with those that are not.
func survey(files []string) ([]recording, []error) {
	var recs []recording
	var problems []error
	for _, path := range files {
		first, err := firstStamp(path)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) && pe.Path == path {
				err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // the line names the file already
			}
			problems = append(problems, fmt.Errorf("%s: %w", path, err))
			continue
		}
		recs = append(recs, recording{path: path, first: first})
	}
	return recs, problems
}

// errNoStamps is the error of a recording made without -M.
var errNoStamps = errors.New("the recording has no block stamps (made without -M): its directions and times are unknown; replay needs a recording made with -L -M")

// firstStamp returns the stamp of the recording's first block, zero if it
// is empty.
func firstStamp(path string) (time.Time, error) {
	f, err := playback.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	r := playback.NewReader(f, datafile.Out)
	for {
		b, err := r.Next()
		var cut *playback.TruncatedError
		switch {
		case err == io.EOF || errors.As(err, &cut):
			return time.Time{}, nil
		case err != nil:
			return time.Time{}, err
		case b.Stamped:
			return b.Time, nil
		case len(b.Data) > 0:
			return time.Time{}, errNoStamps
		}
	}
}

// blocks reads the blocks of a recording for fn, to the end or to where a
// file cut short ends (the daemon was killed, or the connection still
// runs: what is there is replayed). Data without a stamp is an error.
func blocks(path string, fn func(playback.Block) error) error {
	f, err := playback.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := playback.NewReader(f, datafile.Out)
	for {
		b, err := r.Next()
		var cut *playback.TruncatedError
		switch {
		case err == io.EOF || errors.As(err, &cut):
			return nil
		case err != nil:
			return fmt.Errorf("reading the recording: %w", err)
		case !b.Stamped && len(b.Data) > 0:
			return errNoStamps
		}
		if err := fn(b); err != nil {
			return err
		}
	}
}

// clock maps the recordings' times to the replay's: the first recording
// starts when the replay does, and every gap is divided by speed. With
// speed 0 every time is now.
type clock struct {
	start time.Time
	first time.Time
	speed float64
}

// at returns when what was recorded at t is due.
func (c clock) at(t time.Time) time.Time {
	if c.speed == 0 || t.IsZero() || c.first.IsZero() {
		return c.start
	}
	return c.start.Add(time.Duration(float64(t.Sub(c.first)) / c.speed))
}

// wait waits until what was recorded at t is due, or ctx is done.
func (c clock) wait(ctx context.Context, t time.Time) error {
	d := time.Until(c.at(t))
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
