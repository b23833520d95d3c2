package recorder

import (
	"net/netip"
	"strconv"
	"time"
)

// Direction says which way a block travelled: In is a block from the
// connection establisher (client to server), Out a block to it.
type Direction uint8

const (
	In  Direction = iota // client to server
	Out                  // server to client
)

// String returns "in" or "out".
func (d Direction) String() string {
	if d == In {
		return "in"
	}
	return "out"
}

// The magic numbers of the data file format. A block stamp is the marker of
// its direction, the block's time in microseconds since the Unix epoch and a
// newline; an ISO line is MarkerISO, the local time in ISOLayout and a
// newline. They are the original daemon's and must not change.
const (
	MarkerIn  = "#848367#" // precedes the stamp of a block from the establisher
	MarkerOut = "#948366#" // precedes the stamp of a block to the establisher
	MarkerISO = "#748369#" // precedes a periodic ISO timestamp line
	ISOLayout = "2006-01-02 15:04:05-07:00"
)

// Marker returns the block-stamp marker of direction d.
func (d Direction) Marker() string {
	if d == In {
		return MarkerIn
	}
	return MarkerOut
}

// The tail of a data file's name: the start time's layout and the
// extension of each compression.
const nameTimeLayout = "2006-01-02_150405"

var extensions = [...]string{None: "", Gzip: ".gz", Bzip2: ".bz2"}

// FileName returns the data file name of a connection:
// <prefix>_<yyyy-mm-dd_HHMMSS>_<n>_<client_ip> and ".gz" or ".bz2" for c.
// start is written in its own location (the daemon passes local time).
// An IPv6 address is written with '-' for ':' and without its zone, an
// IPv4-mapped one as IPv4; an invalid address as "unknown".
func FileName(prefix string, start time.Time, n uint64, client netip.Addr, c Compression) string {
	b := make([]byte, 0, len(prefix)+64)
	b = append(b, prefix...)
	b = append(b, '_')
	b = start.AppendFormat(b, nameTimeLayout)
	b = append(b, '_')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, '_')
	if client.IsValid() {
		for _, ch := range []byte(client.Unmap().WithZone("").String()) {
			if ch == ':' {
				ch = '-'
			}
			b = append(b, ch)
		}
	} else {
		b = append(b, "unknown"...)
	}
	if int(c) < len(extensions) {
		b = append(b, extensions[c]...)
	}
	return string(b)
}
