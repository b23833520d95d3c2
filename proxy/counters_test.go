package proxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/ipprot/ipprot/datafile"
)

// TestCounters: the totals equal the facts of the connections that
// ended: outcomes, bytes both ways, recording errors in both modes.
func TestCounters(t *testing.T) {
	for _, cont := range []bool{false, true} {
		var c Counters
		rec := &blockLog{failAt: 1}
		h := newHarness(t, "tcp4", Config{
			Counters:              &c,
			ContinueOnRecordError: cont,
			OpenRecorder: func(f *Facts, _ func(error)) (Recorder, string, error) {
				if f.N == 4 {
					return rec, "f", nil // the fourth connection's recording fails
				}
				return nil, "", nil
			},
			Allow: NewAllowList(netip.MustParsePrefix("127.0.0.1/32")),
		})
		go echo(h.upstream)
		var in, out int64
		for i := range 4 {
			err := roundTrip(h.addr, i)
			if i == 3 && !cont {
				continue // ended by its recording error
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		conn, err := dialFrom("127.0.0.2", h.addr)
		if err == nil {
			conn.Close()
		}
		want := map[Outcome]uint64{OK: 3, RecordError: 1, Rejected: 1}
		for range 5 {
			f := h.wait()
			in += f.BytesIn
			out += f.BytesOut
		}
		for _, o := range Outcomes() {
			if got := c.Connections(o); got != want[o] {
				t.Errorf("continue=%v: %d connections %v; want %d", cont, got, o, want[o])
			}
		}
		if c.Bytes(datafile.In) != in || c.Bytes(datafile.Out) != out || in == 0 {
			t.Errorf("continue=%v: bytes %d in, %d out; want %d, %d as the facts", cont, c.Bytes(datafile.In), c.Bytes(datafile.Out), in, out)
		}
		if c.RecordingErrors() != 1 {
			t.Errorf("continue=%v: %d recording errors; want 1", cont, c.RecordingErrors())
		}
	}
}

// dialFrom connects to addr from the local address ip (127.0.0.2, say).
func dialFrom(ip, addr string) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
