package playback

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// Stats is what a first reading of a recording found: whether it can be
// shown as a TCP connection, and the figures of a capture's comment. Add
// takes every block in order.
type Stats struct {
	Blocks, Bytes [2]int64 // stamped blocks and their data, by direction
	Unstamped     int64    // data without a stamp
	First, Last   time.Time
}

// Add counts b.
func (s *Stats) Add(b Block) error {
	if !b.Stamped {
		s.Unstamped += int64(len(b.Data))
		return nil
	}
	if b.Part == 0 {
		s.Blocks[b.Dir]++
	}
	s.Bytes[b.Dir] += int64(len(b.Data))
	if s.First.IsZero() {
		s.First = b.Time
	}
	s.Last = b.Time
	return nil
}

// Pcapable says why the recording cannot be shown exactly as a TCP
// connection, if it cannot.
func (s *Stats) Pcapable() error {
	switch {
	case s.Blocks[datafile.In]+s.Blocks[datafile.Out]+s.Unstamped == 0:
		return errors.New("the recording is empty")
	case s.Blocks[datafile.In]+s.Blocks[datafile.Out] == 0:
		return errors.New("the recording has no block stamps (made without -M): the boundaries, times and directions of its data are unknown; it needs -M -L")
	case s.Unstamped > 0:
		return fmt.Errorf("%d bytes of data come before the first block stamp", s.Unstamped)
	}
	names := [...]string{datafile.In: "client-to-server", datafile.Out: "server-to-client"}
	for _, d := range []datafile.Direction{datafile.In, datafile.Out} {
		if s.Blocks[d] > 0 && s.Bytes[d] == 0 {
			return fmt.Errorf("the recording has no %s data (made without -L): it needs -M -L", names[d])
		}
	}
	return nil
}

// Known is what is known of a recorded connection beyond its recording:
// addresses given by the user or found in the connection log, and the log's
// line. A zero field is unknown; an address with port 0 is known without
// its port.
type Known struct {
	Client, Server netip.AddrPort
	Start          time.Time
	LogLine        string
}

// CaptureConfig returns the PcapngConfig of the recording at file, read
// into st: the known addresses, or else the client IP of the file name with
// a port made up from its connection number and a placeholder server. notes
// say, one line each, which addresses are made up; the section comment holds
// the connection's facts and the notes.
func CaptureConfig(file string, known Known, st *Stats) (cfg PcapngConfig, notes []string) {
	name, nameErr := datafile.ParseName(file, time.Local)
	cfg.Start = known.Start
	if cfg.Start.IsZero() && nameErr == nil {
		cfg.Start = name.Start
	}
	cfg.Client = known.Client
	if cfg.Client.Port() == 0 {
		ip := known.Client.Addr()
		switch {
		case ip.IsValid():
		case nameErr == nil && name.Client.IsValid():
			ip = name.Client
		default:
			ip = netip.MustParseAddr("127.0.0.1")
			notes = append(notes, "the client's address is a placeholder (127.0.0.1): give --client or -c")
		}
		port := uint16(49152 + name.N%16384)
		cfg.Client = netip.AddrPortFrom(ip, port)
		notes = append(notes, fmt.Sprintf("the client's port %d is made up: give --client or -c", port))
	}
	cfg.Server = known.Server
	if cfg.Server.Port() == 0 {
		ip := netip.MustParseAddr("127.0.0.1")
		if cfg.Client.Addr().Unmap().Is6() {
			ip = netip.IPv6Loopback()
		}
		cfg.Server = netip.AddrPortFrom(ip, 1)
		notes = append(notes, fmt.Sprintf("the server's address %s is a placeholder: give --server or -c", cfg.Server))
	}
	cfg.Comment = captureComment(file, cfg, known.LogLine, st, notes)
	return cfg, notes
}

// captureComment is the section comment: the connection's facts and which
// of them are made up.
func captureComment(file string, cfg PcapngConfig, logLine string, st *Stats, notes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipprotd recording %s\n", file)
	fmt.Fprintf(&b, "client %s, server %s\n", cfg.Client, cfg.Server)
	if name, err := datafile.ParseName(file, time.Local); err == nil {
		fmt.Fprintf(&b, "connection %d, started %s (from the file name)\n", name.N, name.Start.Format(datafile.ISOLayout))
	}
	if logLine != "" {
		fmt.Fprintf(&b, "connection log: %s\n", logLine)
	}
	fmt.Fprintf(&b, "blocks: %d client to server (%d bytes), %d server to client (%d bytes)",
		st.Blocks[datafile.In], st.Bytes[datafile.In], st.Blocks[datafile.Out], st.Bytes[datafile.Out])
	if !st.First.IsZero() {
		fmt.Fprintf(&b, ", from %s to %s", st.First.Format(TimeLayout), st.Last.Format(TimeLayout))
	}
	b.WriteString("\n")
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	b.WriteString("Synthesized by ipprotd: Ethernet, IP and TCP headers, the handshake, the FINs or resets (from the connection log's outcome) and the ACKs; segments of at most 65000 bytes. Payload, direction and block times are the recording's.")
	return b.String()
}
