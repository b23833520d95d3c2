// Command naivego is the benchmark's reference point: the proxy anyone
// would write in an afternoon. It accepts on -listen, dials -to for every
// connection and copies both ways with io.Copy (which splices between two
// TCP sockets). With -tee-file DIR it also writes both directions of each
// connection into a file of its own in DIR; with -tee-gzip DIR the same
// through a pgzip writer of default settings (1 MiB blocks).
//
//	naivego -listen 127.0.0.1:9000 -to 127.0.0.1:5432 -tee-gzip /dev/shm/rec
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/klauspost/pgzip"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "accept on this address")
	to := flag.String("to", "127.0.0.1:80", "dial this address for every connection")
	teeFile := flag.String("tee-file", "", "also write each connection's traffic to a file in this folder")
	teeGzip := flag.String("tee-gzip", "", "also write each connection's traffic, gzipped by pgzip, to a file in this folder")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for n := 1; ; n++ {
		c, err := ln.Accept()
		if err != nil {
			log.Print(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(c.(*net.TCPConn), *to, n, *teeFile, *teeGzip)
	}
}

// serve relays one connection and tees it when a folder is given.
func serve(client *net.TCPConn, to string, n int, teeFile, teeGzip string) {
	defer client.Close()
	c, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	server := c.(*net.TCPConn)
	defer server.Close()
	var tee io.Writer
	if dir := teeFile + teeGzip; dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("conn_%d", n)))
		if err != nil {
			return
		}
		defer f.Close()
		tee = &lockedWriter{w: f}
		if teeGzip != "" {
			zw := pgzip.NewWriter(f)
			defer zw.Close()
			tee = &lockedWriter{w: zw}
		}
	}
	done := make(chan struct{})
	go pipe(server, client, tee, done)
	pipe(client, server, tee, nil)
	<-done
}

// pipe copies src to dst, through tee if not nil, then half-closes dst.
func pipe(dst, src *net.TCPConn, tee io.Writer, done chan struct{}) {
	var r io.Reader = src
	if tee != nil {
		r = io.TeeReader(src, tee)
	}
	io.Copy(dst, r)
	dst.CloseWrite()
	if done != nil {
		close(done)
	}
}

// lockedWriter lets both directions write to one file or pgzip writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
