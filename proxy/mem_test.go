package proxy

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
)

// BenchmarkIdleMemory opens b.N idle connections through the proxy (a few
// bytes each way, then nothing) and reports the stack and heap they hold.
// The client and upstream ends live in this process too: their share is
// measured without the proxy and subtracted.
//
//	go test -run '^$' -bench IdleMemory -benchtime 2000x ./proxy/
func BenchmarkIdleMemory(b *testing.B) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := New(Config{OutHost: "127.0.0.1", OutPort: up.Addr().(*net.TCPAddr).AddrPort().Port(), Logger: slog.New(slog.DiscardHandler)})
	go srv.Serve(ln)
	defer srv.Shutdown(b.Context())

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	before := memNow()
	for range b.N {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := up.Accept()
		if err != nil {
			b.Fatal(err)
		}
		c.Write([]byte("ping"))
		io.ReadFull(s, make([]byte, 4))
		s.Write([]byte("pong"))
		io.ReadFull(c, make([]byte, 4))
		conns = append(conns, c, s)
	}
	after := memNow()
	b.ReportMetric(float64(after.stack-before.stack)/float64(b.N), "stack-B/conn")
	b.ReportMetric(float64(after.heap-before.heap)/float64(b.N), "heap-B/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(b.N), "goroutines/conn")
}

type memSample struct{ stack, heap, goroutines uint64 }

func memNow() memSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{m.StackInuse, m.HeapInuse, uint64(runtime.NumGoroutine())}
}
