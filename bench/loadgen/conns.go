package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// conns makes n short connections, c at a time: each sends a line to the
// echo server, half-closes and reads the echo to its end. It prints "ok
// failed".
func conns(args []string) error {
	fs := flag.NewFlagSet("conns", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:17003", "a loadgen server, directly or through a proxy")
	n := fs.Int("n", 1000, "connections to make")
	conc := fs.Int("c", 16, "connections at once")
	ca, tlsName := addClientTLS(fs)
	fs.Parse(args)
	if err := useClientTLS(*ca, *tlsName); err != nil {
		return err
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := shortConn(*addr); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for range *n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if err, isErr := firstErr.Load().(error); isErr {
		fmt.Fprintf(os.Stderr, "loadgen conns: %d failed, the first: %v\n", failed.Load(), err)
	}
	fmt.Printf("%d %d\n", ok.Load(), failed.Load())
	return nil
}

func shortConn(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ECHO\nx\n")); err != nil {
		return err
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != "x\n" {
		return fmt.Errorf("echo %q", got)
	}
	return nil
}
