package replay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/playback"
)

// dialTimeout bounds connecting to the target, TLS handshake included.
const dialTimeout = 10 * time.Second

// raw replays one recording's client-to-server bytes to --to and reports
// what the target answered.
func (c *Cmd) raw(ctx context.Context, clk clock, r recording, rep *report) {
	res := rawResult{file: r.path}
	err := c.rawReplay(ctx, clk, r, &res, rep)
	if ctx.Err() != nil {
		err = nil // interrupted: the summary says so, once
	}
	rep.raw(res, err)
}

// rawReplay waits until the recording is due, connects, sends each
// client-to-server block when it is due, half-closes after the last and
// counts what the target answers until it closes its side, or until
// --wait after the last answer's recorded time is due. A target that
// cannot be reached or stops taking data has the rest of the recording
// counted, not sent.
func (c *Cmd) rawReplay(ctx context.Context, clk clock, r recording, res *rawResult, rep *report) error {
	if err := clk.wait(ctx, r.first); err != nil {
		return err
	}
	began := time.Now()
	defer func() { res.took = time.Since(began) }()
	conn, sendErr := c.dial(ctx) // sendErr: why the target takes no more data
	var a answers
	if sendErr == nil {
		a.done = make(chan struct{})
		go a.count(conn)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer func() {
			stop()
			conn.Close()
			<-a.done
			res.received = a.n.Load()
		}()
	}

	var lastOut, last time.Time
	outStamps := false
	err := blocks(r.path, func(b playback.Block) error {
		last = b.Time
		if b.Dir == datafile.Out {
			res.recRecv += int64(len(b.Data))
			lastOut, outStamps = b.Time, true
			return nil
		}
		res.recSent += int64(len(b.Data))
		if len(b.Data) == 0 || sendErr != nil {
			return nil
		}
		if err := clk.wait(ctx, b.Time); err != nil {
			return err
		}
		n, err := conn.Write(b.Data)
		res.sent += int64(n)
		if err != nil {
			sendErr = fmt.Errorf("after %d bytes sent: %w", res.sent, err)
		}
		return nil
	})
	if !r.first.IsZero() {
		res.recorded = last.Sub(r.first)
	}
	rep.read(last)
	// A recording with stamps of the server's blocks but none of their
	// bytes was made without -L (-l, or the default).
	res.recvRecorded = res.recRecv > 0 || !outStamps
	if err == nil {
		err = sendErr
	}
	if err != nil {
		return err
	}
	if err := closeWrite(conn); err != nil {
		return fmt.Errorf("half-closing: %w", err)
	}
	deadline := clk.at(lastOut)
	if now := time.Now(); deadline.Before(now) {
		deadline = now
	}
	timer := time.NewTimer(time.Until(deadline.Add(c.Wait)))
	defer timer.Stop()
	select {
	case <-a.done:
		if a.err != nil {
			return fmt.Errorf("reading the answers: %w", a.err)
		}
	case <-timer.C:
		// The target keeps its side open: what came is counted.
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// answers counts what a target sends.
type answers struct {
	n    atomic.Int64
	err  error         // what ended the reading, if not EOF or a close here; set before done
	done chan struct{} // closed when the reading ended
}

// count reads conn until it ends.
func (a *answers) count(conn net.Conn) {
	defer close(a.done)
	buf := make([]byte, 64<<10)
	for {
		k, err := conn.Read(buf)
		a.n.Add(int64(k))
		if err != nil {
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				a.err = err
			}
			return
		}
	}
}

// dial connects to --to, with TLS if --to-tls.
func (c *Cmd) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", string(c.To))
	if err != nil {
		return nil, err
	}
	if c.tls == nil {
		return conn, nil
	}
	tc := tls.Client(conn, c.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", c.To, err)
	}
	return tc, nil
}

// closeWrite ends the sending side: TLS's close_notify, then TCP's FIN.
func closeWrite(conn net.Conn) error {
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		conn = tc.NetConn()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}
	return nil
}
