package proxy

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"github.com/ipprot/ipprot/datafile"
)

// discardRecorder wants every block and keeps none: the cost of passing
// blocks through user space, without a file.
type discardRecorder struct{}

func (discardRecorder) Record(datafile.Direction, []byte) error { return nil }
func (discardRecorder) Wants(datafile.Direction) bool           { return true }
func (discardRecorder) Close() error                            { return nil }
func (discardRecorder) Digest() (int64, []byte)                 { return 0, nil }

// BenchmarkThroughput sends b.N blocks of 1 MiB one way over loopback:
// directly, through the proxy, and through the proxy handing every block to
// a recorder that keeps nothing. Compare the MB/s of the three in one run:
//
//	go test -run '^$' -bench Throughput -benchtime 2000x ./proxy/
func BenchmarkThroughput(b *testing.B) {
	for _, mode := range []string{"direct", "unrecorded", "recorded"} {
		b.Run(mode, func(b *testing.B) {
			up, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer up.Close()
			addr := up.Addr().String()
			if mode != "direct" {
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				cfg := Config{OutHost: "127.0.0.1", OutPort: up.Addr().(*net.TCPAddr).AddrPort().Port(), Logger: slog.New(slog.DiscardHandler)}
				if mode == "recorded" {
					cfg.OpenRecorder = func(*Facts, func(error)) (Recorder, string, error) { return discardRecorder{}, "", nil }
				}
				srv := New(cfg)
				go srv.Serve(ln)
				defer srv.Shutdown(b.Context())
				addr = ln.Addr().String()
			}
			done := make(chan int64)
			go drain(up, done)
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			if n := <-done; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("received %d bytes; want %d", n, int64(b.N)*int64(len(buf)))
			}
			b.StopTimer()
			c.Close()
		})
	}
}

func drain(ln net.Listener, done chan<- int64) {
	c, err := ln.Accept()
	if err != nil {
		done <- -1
		return
	}
	n, _ := io.Copy(io.Discard, struct{ io.Reader }{c})
	c.Close()
	done <- n
}

// BenchmarkConnections opens b.N short connections through the proxy, 64
// at a time: a request of one line, an answer of 170 bytes, then the
// upstream closes, as an HTTP server with Connection: close does. Its CPU
// profile shows what a connection costs ipprotd beside the kernel's work:
//
//	go test -run '^$' -bench Connections -benchtime 20000x -cpuprofile cpu.out ./proxy/
func BenchmarkConnections(b *testing.B) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	answer := make([]byte, 170)
	go answerEach(up, answer)
	ln, err := Listen(b.Context(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{OutHost: "127.0.0.1", OutPort: up.Addr().(*net.TCPAddr).AddrPort().Port(), Logger: slog.New(slog.DiscardHandler)}
	srv := New(cfg)
	go srv.Serve(ln)
	defer srv.Shutdown(b.Context())
	addr := ln.Addr().String()
	b.SetParallelism(64 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 512)
		for pb.Next() {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
				b.Error(err)
			}
			n, err := io.ReadFull(c, buf[:len(answer)])
			if err != nil || n != len(answer) {
				b.Errorf("read %d bytes (%v); want %d", n, err, len(answer))
			}
			c.Close()
		}
	})
}

// answerEach answers every connection of ln like an HTTP server with
// Connection: close: one read, the answer, close.
func answerEach(ln net.Listener, answer []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go answerOnce(c, answer)
	}
}

func answerOnce(c net.Conn, answer []byte) {
	defer c.Close()
	if _, err := c.Read(make([]byte, 512)); err == nil {
		c.Write(answer)
	}
}
