package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"time"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:17003", "accept on this address")
	cert := fs.String("tls-cert", "", "speak TLS with this PEM certificate (and -tls-key)")
	key := fs.String("tls-key", "", "the PEM key of -tls-cert")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return err
		}
		serverTLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	acceptLoop(ln)
	return nil
}

// acceptLoop serves every connection ln accepts until ln is closed.
func acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Print(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		var st stream = c.(*net.TCPConn)
		if serverTLS != nil {
			st = tls.Server(c, serverTLS)
		}
		go serveConn(st)
	}
}

// serveConn answers one connection after its first line.
// serverTLS is the TLS serve speaks (-tls-cert), nil for TCP.
var serverTLS *tls.Config

func serveConn(c stream) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 256)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "ECHO":
		echo(c, r)
	case len(f) == 1 && f[0] == "UP":
		n, _ := drain(r)
		fmt.Fprintf(c, "%d\n", n)
	case len(f) == 3 && f[0] == "DOWN":
		p, err := payload(f[1])
		ms, err2 := strconv.Atoi(f[2])
		if err != nil || err2 != nil {
			return
		}
		send(c, p, time.Now().Add(time.Duration(ms)*time.Millisecond), 0)
	}
}

// echo writes back what it reads, with a small buffer: the backend holds
// thousands of these.
func echo(w io.Writer, r io.Reader) {
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drain reads r to EOF and returns the byte count.
func drain(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// send writes p over and over, a piece at a time, until the deadline, or
// until limit bytes are written if limit is not zero.
func send(w io.Writer, p []byte, deadline time.Time, limit int64) (int64, error) {
	var total int64
	for off := 0; limit == 0 && time.Now().Before(deadline) || limit > 0 && total < limit; off = (off + pieceSize) % len(p) {
		piece := p[off : off+pieceSize]
		if limit > 0 {
			piece = piece[:min(int64(len(piece)), limit-total)]
		}
		n, err := w.Write(piece)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
