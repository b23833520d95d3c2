package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

func blast(args []string) error {
	fs := flag.NewFlagSet("blast", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:17003", "a loadgen server, directly or through a proxy")
	dir := fs.String("dir", "up", "up: the client sends; down: the server sends")
	name := fs.String("payload", "sql", "sql or random")
	d := fs.Duration("t", 3*time.Second, "how long to send")
	streams := fs.Int("streams", 1, "connections in parallel")
	bytes := fs.Int64("bytes", 0, "up: send exactly this many bytes per stream instead of for -t")
	ca, tlsName := addClientTLS(fs)
	fs.Parse(args)
	if err := useClientTLS(*ca, *tlsName); err != nil {
		return err
	}
	p, err := payload(*name)
	if err != nil {
		return err
	}
	if *dir != "up" && *dir != "down" {
		return fmt.Errorf("-dir %q: want up or down", *dir)
	}
	results := make(chan streamResult, *streams)
	for range *streams {
		go blastStream(*addr, *dir, *name, p, *d, *bytes, results)
	}
	var total int64
	var longest time.Duration
	var errs []error
	for range *streams {
		r := <-results
		total += r.n
		longest = max(longest, r.elapsed)
		errs = append(errs, r.err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("%.0f\n", float64(total)/longest.Seconds())
	return nil
}

// streamResult is what one stream of a blast counted.
type streamResult struct {
	n       int64
	elapsed time.Duration
	err     error
}

// blastStream runs one stream and sends its result.
func blastStream(addr, dir, name string, p []byte, d time.Duration, limit int64, out chan<- streamResult) {
	n, elapsed, err := blastOne(addr, dir, name, p, d, limit)
	out <- streamResult{n, elapsed, err}
}

// blastOne runs one stream and returns the bytes that arrived and the time
// from the first byte sent to the last one counted.
func blastOne(addr, dir, name string, p []byte, d time.Duration, limit int64) (int64, time.Duration, error) {
	c, err := dial(context.Background(), addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	start := time.Now()
	if dir == "down" {
		if _, err := fmt.Fprintf(c, "DOWN %s %d\n", name, d.Milliseconds()); err != nil {
			return 0, 0, err
		}
		n, err := drain(c)
		return n, time.Since(start), err
	}
	if _, err := c.Write([]byte("UP\n")); err != nil {
		return 0, 0, err
	}
	if _, err := send(c, p, start.Add(d), limit); err != nil {
		return 0, 0, fmt.Errorf("send: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return 0, 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("read the count: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	return n, time.Since(start), err
}
