package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:17003", "a loadgen server, directly or through a proxy")
	n := fs.Int("n", 1000, "connections to open")
	trickle := fs.Duration("trickle", 0, "if not zero, each connection sends a line and reads its echo this often")
	conc := fs.Int("dial-conc", 64, "connections being opened at once")
	openFor := fs.Duration("open-timeout", 60*time.Second, "stop opening connections after this long; the rest count as failed")
	maxHold := fs.Duration("max", 10*time.Minute, "give up holding after this long")
	down := fs.Duration("down", 0, "if not zero, each connection asks the server to send for this long and never reads: a client that stopped reading")
	one := fs.Bool("one-byte", false, "each connection sends one byte and reads nothing (the server answers nothing): with -dial-conc as large as -n, a burst of pool connections")
	ca, tlsName := addClientTLS(fs)
	fs.Parse(args)
	if err := useClientTLS(*ca, *tlsName); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxHold)
	defer cancel()
	openCtx, cancelOpen := context.WithTimeout(ctx, *openFor)
	defer cancelOpen()

	conns := make([]net.Conn, *n)
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	for i := range conns {
		select {
		case sem <- struct{}{}:
		case <-openCtx.Done():
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Errorf("not opened: %w", context.Cause(openCtx)))
			continue
		}
		wg.Add(1)
		go openOne(openCtx, *addr, *down, *one, &conns[i], &failed, &firstErr, sem, &wg)
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		fmt.Fprintf(os.Stderr, "loadgen hold: %d connections failed, the first: %v\n", failed.Load(), err)
	}
	fmt.Printf("ready %d %d\n", int64(*n)-failed.Load(), failed.Load())

	var tricklers sync.WaitGroup
	if *trickle > 0 {
		line := sqlPayload()[:120]
		for i, c := range conns {
			if c != nil {
				tricklers.Add(1)
				go trickleOne(ctx, c, line, *trickle, time.Duration(i)*(*trickle)/time.Duration(len(conns)), &tricklers)
			}
		}
	}
	<-ctx.Done()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	tricklers.Wait()
	return nil
}

// openOne opens a connection through to the echo server and proves it with
// one round trip, so that the proxy has seen data both ways.
func openOne(ctx context.Context, addr string, down time.Duration, one bool, slot *net.Conn, failed *atomic.Int64, firstErr *atomic.Value, sem chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	defer func() { <-sem }()
	var c net.Conn
	var err error
	switch {
	case one:
		if c, err = dial(ctx, addr); err == nil {
			if _, err = c.Write([]byte("x")); err != nil {
				c.Close()
			}
		}
	case down > 0:
		c, err = askDown(ctx, addr, down)
	default:
		c, err = roundTrip(ctx, addr)
	}
	if err != nil {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
		return
	}
	*slot = c
}

// roundTrip dials addr and proves the connection with one echo; each step
// has 10 s.
func roundTrip(ctx context.Context, addr string) (net.Conn, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ECHO\nhello\n")); err != nil {
		c.Close()
		return nil, err
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		c.Close()
		return nil, fmt.Errorf("read the echo: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// askDown dials addr and asks the server to send random data for d; the
// caller never reads it.
func askDown(ctx context.Context, addr string, d time.Duration) (net.Conn, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "DOWN random %d\n", d.Milliseconds()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// trickleOne sends line and reads its echo every interval, starting after
// offset, until ctx ends or the connection fails.
func trickleOne(ctx context.Context, c net.Conn, line []byte, interval, offset time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, len(line))
	for {
		if _, err := c.Write(line); err != nil {
			return
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintf(os.Stderr, "loadgen hold: trickle: %v\n", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
