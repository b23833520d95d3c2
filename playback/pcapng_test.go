package playback

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/internal/testkit"
)

// writePcapng writes blocks as a capture of conn into a file.
func writePcapng(t *testing.T, conn PcapngConfig, blocks []tblock, end time.Time) string {
	t.Helper()
	var out bytes.Buffer
	w, err := NewPcapng(&out, conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if err := w.Block(Block{Dir: b.dir, Stamped: true, Time: b.at, Data: b.data}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(end); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.pcapng")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPcapngGolden: the capture of a small session, byte for byte.
func TestPcapngGolden(t *testing.T) {
	at := time.UnixMicro(1386170322361458)
	blocks := []tblock{
		{datafile.In, at, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{datafile.Out, at.Add(42728 * time.Microsecond), []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")},
	}
	conn := PcapngConfig{
		Client:  netip.MustParseAddrPort("10.1.2.33:49169"),
		Server:  netip.MustParseAddrPort("10.1.2.34:80"),
		Comment: "ipprotd recording prot_2013-12-04_161842_17_10.1.2.33",
	}
	path := writePcapng(t, conn, blocks, time.Time{})
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "session.pcapng", got)
}

// TestPcapngTshark: tshark reads captures of IPv4 and IPv6 sessions, with
// a block too big for one segment, without a warning; its checksum checks
// and expert analysis find nothing; Follow TCP stream gives each
// direction's bytes exactly; the comment and packet times are there.
func TestPcapngTshark(t *testing.T) {
	testkit.Need(t, "tshark", "capinfos")
	big := bytes.Repeat([]byte("0123456789"), 20000) // 200000 bytes: 4 segments
	at := time.UnixMicro(1386170322361458)
	blocks := []tblock{
		{datafile.In, at, []byte("GET /big HTTP/1.1\r\n\r\n")},
		{datafile.Out, at.Add(time.Millisecond), []byte("HTTP/1.1 200 OK\r\n\r\n")},
		{datafile.Out, at.Add(2 * time.Millisecond), big},
		{datafile.In, at.Add(3 * time.Millisecond), []byte{0, 1, 2, 255}},
	}
	var wantClient, wantServer []byte
	for _, b := range blocks {
		if b.dir == datafile.In {
			wantClient = append(wantClient, b.data...)
		} else {
			wantServer = append(wantServer, b.data...)
		}
	}
	for _, tt := range []struct{ name, client, server string }{
		{"IPv4", "10.1.2.33:49169", "10.1.2.34:80"},
		{"IPv6", "[2001:db8::33]:49169", "[2001:db8::34]:80"},
		{"IPv4 client, IPv6 server", "10.1.2.33:49169", "[2001:db8::34]:80"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn := PcapngConfig{
				Client:  netip.MustParseAddrPort(tt.client),
				Server:  netip.MustParseAddrPort(tt.server),
				Comment: "ipprotd test\nsecond line",
				Start:   at.Add(-time.Second),
			}
			path := writePcapng(t, conn, blocks, at.Add(time.Second))
			list := testkit.Tshark(t, "-r", path)
			if n := strings.Count(list, "\n"); n != 3+1+1+1+1+4+1+1+1+3 {
				t.Errorf("tshark lists %d packets; want 17:\n%s", n, list)
			}
			bad := testkit.Tshark(t, "-r", path, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
				"-Y", "tcp.checksum.status != 1 || ip.checksum.status == 0 || tcp.analysis.flags || _ws.expert.severity >= warning")
			if bad != "" {
				t.Errorf("tshark flags packets:\n%s", bad)
			}
			client, server := testkit.FollowTCP(t, path)
			if !bytes.Equal(client, wantClient) || !bytes.Equal(server, wantServer) {
				t.Errorf("Follow TCP stream: client %d bytes, server %d; want %d and %d, equal", len(client), len(server), len(wantClient), len(wantServer))
			}
			fields := testkit.Tshark(t, "-r", path, "-T", "fields", "-e", "frame.time_epoch", "-Y", "tcp.len > 0")
			wantTimes := "1386170322.361458000\n1386170322.362458000\n1386170322.363458000\n1386170322.363458000\n1386170322.363458000\n1386170322.363458000\n1386170322.364458000\n"
			if fields != wantTimes {
				t.Errorf("packet times:\n%s\nwant:\n%s", fields, wantTimes)
			}
			capinfo, err := exec.Command("capinfos", "-k", path).CombinedOutput()
			if err != nil || !bytes.Contains(capinfo, []byte("ipprotd test")) {
				t.Errorf("capinfos -k shows no section comment:\n%s", capinfo)
			}
		})
	}
}

// TestPcapngConfig: what NewPcapng refuses.
func TestPcapngConfig(t *testing.T) {
	for _, tt := range []struct{ name, client, server string }{
		{"no client", "", "10.0.0.1:80"},
		{"port 0", "10.0.0.2:0", "10.0.0.1:80"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var conn PcapngConfig
			if tt.client != "" {
				conn.Client = netip.MustParseAddrPort(tt.client)
			}
			conn.Server = netip.MustParseAddrPort(tt.server)
			if _, err := NewPcapng(&bytes.Buffer{}, conn); err == nil {
				t.Error("got nil error; want one")
			}
		})
	}
}

// TestPcapngReset: a connection that ended in a reset ends in resets, one
// from each side, and no FIN; Wireshark sees them as such.
func TestPcapngReset(t *testing.T) {
	testkit.Need(t, "tshark")
	at := time.UnixMicro(1386170322361458)
	var out bytes.Buffer
	w, err := NewPcapng(&out, PcapngConfig{Client: netip.MustParseAddrPort("10.1.2.33:49169"), Server: netip.MustParseAddrPort("10.1.2.34:80")})
	if err != nil {
		t.Fatal(err)
	}
	w.Block(Block{Dir: datafile.In, Stamped: true, Time: at, Data: []byte("GET / HTTP/1.1\r\n\r\n")})
	if err := w.Reset(at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "reset.pcapng")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	resets := testkit.Tshark(t, "-r", path, "-Y", "tcp.flags.reset == 1", "-T", "fields", "-e", "tcp.srcport")
	fins := testkit.Tshark(t, "-r", path, "-Y", "tcp.flags.fin == 1")
	if resets != "80\n49169\n" || fins != "" {
		t.Errorf("resets from %q, FINs %q; want one reset from each side and no FIN", resets, fins)
	}
}
