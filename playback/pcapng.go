package playback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// PcapngConfig describes the connection a Pcapng capture shows.
type PcapngConfig struct {
	// Client and Server are the connection's ends, ports not zero. If
	// one is IPv6, both are written as IPv6 (an IPv4 one IPv4-mapped).
	Client, Server netip.AddrPort
	// Comment is the section's comment (the connection's facts); "" for none.
	Comment string
	// Start is when the handshake is shown. If zero, the first block's time.
	Start time.Time
}

// Pcapng writes one TCP connection as a pcapng capture (a Section Header
// with the comment, one Ethernet interface, an Enhanced Packet Block per
// packet, times in µs) that Wireshark and tshark read like a real capture:
// a SYN, SYN-ACK, ACK handshake, each block as segments of at most
// MaxSegment bytes with correct sequence and acknowledgement numbers and
// checksums, each answered by an ACK, and FIN-ACKs from both sides at the
// end. Ethernet, IP and TCP headers are synthesized (MAC addresses are
// placeholders); only the payload, its direction and its time come from the
// recording.
//
// A Pcapng writes to w as it goes and buffers nothing beyond one packet;
// Close writes the connection's end and does not close w. It is not safe
// for concurrent use.
type Pcapng struct {
	w       io.Writer
	cfg     PcapngConfig
	v6      bool
	seq     [2]uint32 // next sequence number sent by In (the client) and Out
	ipID    uint16
	started bool
	last    time.Time
	pkt     []byte
	err     error
}

// MaxSegment is the most payload a Pcapng puts in one TCP segment; longer
// blocks are split.
const MaxSegment = 65000

// Initial sequence numbers, arbitrary: Wireshark shows them as 0.
var isn = [2]uint32{datafile.In: 0x1000_0000, datafile.Out: 0x2000_0000}

const (
	linkTypeEthernet = 1
	tcpFIN           = 0x01
	tcpSYN           = 0x02
	tcpRST           = 0x04
	tcpPSH           = 0x08
	tcpACK           = 0x10
	window           = 0xffff
	windowShift      = 7 // window scale option: 65535 << 7, about 8 MiB
)

// MAC addresses: locally administered placeholders.
var macs = [2][6]byte{datafile.In: {2, 0, 0, 0, 0, 1}, datafile.Out: {2, 0, 0, 0, 0, 2}}

// NewPcapng checks cfg and writes the capture's Section Header and
// Interface Description to w.
func NewPcapng(w io.Writer, cfg PcapngConfig) (*Pcapng, error) {
	c, s := cfg.Client.Addr(), cfg.Server.Addr()
	switch {
	case !c.IsValid() || !s.IsValid():
		return nil, errors.New("pcapng: client and server addresses are needed")
	case cfg.Client.Port() == 0 || cfg.Server.Port() == 0:
		return nil, errors.New("pcapng: client and server ports cannot be 0")
	}
	if c.Unmap().Is4() && s.Unmap().Is4() {
		c, s = c.Unmap(), s.Unmap()
	} else {
		c, s = netip.AddrFrom16(c.As16()), netip.AddrFrom16(s.As16())
	}
	cfg.Client = netip.AddrPortFrom(c, cfg.Client.Port())
	cfg.Server = netip.AddrPortFrom(s, cfg.Server.Port())
	p := &Pcapng{w: w, cfg: cfg, v6: c.Is6(), seq: isn}

	// Section Header Block: byte-order magic, version 1.0, unknown length.
	var body []byte
	body = binary.LittleEndian.AppendUint32(body, 0x1a2b3c4d)
	body = binary.LittleEndian.AppendUint16(body, 1)
	body = binary.LittleEndian.AppendUint16(body, 0)
	body = binary.LittleEndian.AppendUint64(body, ^uint64(0))
	if cfg.Comment != "" {
		body = appendOption(body, 1, []byte(cfg.Comment)) // opt_comment
	}
	body = appendOption(body, 4, []byte("ipprotd cat --pcapng")) // shb_userappl
	body = appendOption(body, 0, nil)
	p.block(0x0a0d0d0a, body)

	// Interface Description Block: Ethernet, no snap length limit, µs.
	body = body[:0]
	body = binary.LittleEndian.AppendUint16(body, linkTypeEthernet)
	body = binary.LittleEndian.AppendUint16(body, 0)
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = appendOption(body, 2, []byte("ipprotd")) // if_name
	body = appendOption(body, 9, []byte{6})         // if_tsresol: 10^-6 s
	body = appendOption(body, 0, nil)
	p.block(1, body)
	return p, p.err
}

// appendOption appends a pcapng option, padded to 32 bits.
func appendOption(b []byte, code uint16, value []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	for len(value)%4 != 0 {
		b = append(b, 0)
		value = append(value, 0)
	}
	return b
}

// block writes a pcapng block of type typ around body.
func (p *Pcapng) block(typ uint32, body []byte) {
	if p.err != nil {
		return
	}
	pad := (4 - len(body)%4) % 4
	total := uint32(12 + len(body) + pad)
	out := make([]byte, 0, total)
	out = binary.LittleEndian.AppendUint32(out, typ)
	out = binary.LittleEndian.AppendUint32(out, total)
	out = append(out, body...)
	out = append(out, make([]byte, pad)...)
	out = binary.LittleEndian.AppendUint32(out, total)
	if _, err := p.w.Write(out); err != nil {
		p.err = fmt.Errorf("pcapng: %w", err)
	}
}

// Block writes the data of b as segments from its direction's sender,
// acknowledged by the other side. A block without data writes nothing.
func (p *Pcapng) Block(b Block) error {
	if len(b.Data) == 0 {
		return p.err
	}
	t := b.Time
	if t.Before(p.last) || t.IsZero() {
		t = p.last
	}
	p.handshake(t)
	from := b.Dir
	for off := 0; off < len(b.Data); off += MaxSegment {
		seg := b.Data[off:min(off+MaxSegment, len(b.Data))]
		flags := byte(tcpACK)
		if off+len(seg) == len(b.Data) {
			flags |= tcpPSH
		}
		p.packet(t, from, flags, seg, nil)
	}
	p.packet(t, 1-from, tcpACK, nil, nil)
	return p.err
}

// handshake writes SYN, SYN-ACK and ACK once, at Start or else at t.
func (p *Pcapng) handshake(t time.Time) {
	if p.started {
		return
	}
	p.started = true
	if !p.cfg.Start.IsZero() && (t.IsZero() || p.cfg.Start.Before(t)) {
		t = p.cfg.Start
	}
	p.last = t
	// MSS 65495 (loopback's), NOP, window scale.
	opts := []byte{2, 4, 0xff, 0xd7, 1, 3, 3, windowShift}
	p.packet(t, datafile.In, tcpSYN, nil, opts)
	p.packet(t, datafile.Out, tcpSYN|tcpACK, nil, opts)
	p.packet(t, datafile.In, tcpACK, nil, nil)
}

// Close writes the end of the connection at end (if zero or earlier than
// the last packet, at the last packet's time): FIN-ACK from the client,
// FIN-ACK from the server, the client's ACK. It returns the first error
// writing the capture met.
func (p *Pcapng) Close(end time.Time) error {
	if end.Before(p.last) || end.IsZero() {
		end = p.last
	}
	p.handshake(end)
	p.packet(end, datafile.In, tcpFIN|tcpACK, nil, nil)
	p.packet(end, datafile.Out, tcpFIN|tcpACK, nil, nil)
	p.packet(end, datafile.In, tcpACK, nil, nil)
	return p.err
}

// Reset writes the end of a connection that was reset at end (as Close
// places it): a RST-ACK from each side, as the proxy resets both sides of
// an aborted session (which side's reset came first is not recorded). It
// returns the first error writing the capture met.
func (p *Pcapng) Reset(end time.Time) error {
	if end.Before(p.last) || end.IsZero() {
		end = p.last
	}
	p.handshake(end)
	p.packet(end, datafile.Out, tcpRST|tcpACK, nil, nil)
	p.packet(end, datafile.In, tcpRST|tcpACK, nil, nil)
	return p.err
}

// packet writes one Ethernet frame from side from at t. SYN and FIN count
// as one byte of sequence space.
func (p *Pcapng) packet(t time.Time, from datafile.Direction, flags byte, payload, opts []byte) {
	if p.err != nil {
		return
	}
	p.last = t
	to := 1 - from
	src, dst := p.cfg.Client, p.cfg.Server
	if from == datafile.Out {
		src, dst = dst, src
	}
	var ack uint32
	if flags&tcpACK != 0 {
		ack = p.seq[to]
	}

	pkt := p.pkt[:0]
	pkt = append(pkt, macs[to][:]...)
	pkt = append(pkt, macs[from][:]...)
	tcpLen := 20 + len(opts) + len(payload)
	ipStart := len(pkt) + 2
	if p.v6 {
		pkt = binary.BigEndian.AppendUint16(pkt, 0x86dd)
		pkt = append(pkt, 0x60, 0, 0, 0)
		pkt = binary.BigEndian.AppendUint16(pkt, uint16(tcpLen))
		pkt = append(pkt, 6, 64) // next header TCP, hop limit
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		pkt = append(pkt, s16[:]...)
		pkt = append(pkt, d16[:]...)
	} else {
		pkt = binary.BigEndian.AppendUint16(pkt, 0x0800)
		pkt = append(pkt, 0x45, 0)
		pkt = binary.BigEndian.AppendUint16(pkt, uint16(20+tcpLen))
		pkt = binary.BigEndian.AppendUint16(pkt, p.ipID)
		p.ipID++
		pkt = append(pkt, 0x40, 0, 64, 6, 0, 0) // DF, TTL 64, TCP, checksum later
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		pkt = append(pkt, s4[:]...)
		pkt = append(pkt, d4[:]...)
		sum := checksum(0, pkt[ipStart:ipStart+20])
		binary.BigEndian.PutUint16(pkt[ipStart+10:], sum)
	}
	tcpStart := len(pkt)
	pkt = binary.BigEndian.AppendUint16(pkt, src.Port())
	pkt = binary.BigEndian.AppendUint16(pkt, dst.Port())
	pkt = binary.BigEndian.AppendUint32(pkt, p.seq[from])
	pkt = binary.BigEndian.AppendUint32(pkt, ack)
	pkt = append(pkt, byte((20+len(opts))/4)<<4, flags)
	pkt = binary.BigEndian.AppendUint16(pkt, window)
	pkt = append(pkt, 0, 0, 0, 0) // checksum, urgent pointer
	pkt = append(pkt, opts...)
	pkt = append(pkt, payload...)

	// The TCP checksum covers a pseudo header of the addresses, the
	// protocol and the length.
	var pseudo []byte
	if p.v6 {
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		pseudo = append(append(pseudo, s16[:]...), d16[:]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(tcpLen))
		pseudo = append(pseudo, 0, 0, 0, 6)
	} else {
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		pseudo = append(append(pseudo, s4[:]...), d4[:]...)
		pseudo = append(pseudo, 0, 6)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(tcpLen))
	}
	sum := checksum(sumWords(0, pseudo), pkt[tcpStart:])
	binary.BigEndian.PutUint16(pkt[tcpStart+16:], sum)
	p.pkt = pkt

	p.seq[from] += uint32(len(payload))
	if flags&(tcpSYN|tcpFIN) != 0 {
		p.seq[from]++
	}

	// Enhanced Packet Block: interface 0, time in µs, captured = original.
	us := uint64(t.UnixMicro())
	body := make([]byte, 0, 20+len(pkt))
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = binary.LittleEndian.AppendUint32(body, uint32(us>>32))
	body = binary.LittleEndian.AppendUint32(body, uint32(us))
	body = binary.LittleEndian.AppendUint32(body, uint32(len(pkt)))
	body = binary.LittleEndian.AppendUint32(body, uint32(len(pkt)))
	body = append(body, pkt...)
	p.block(6, body)
}

// sumWords adds b as big-endian 16-bit words to the one's complement sum.
func sumWords(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(sum uint32, b []byte) uint16 {
	sum = sumWords(sum, b)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
