// Package datafile is the vocabulary of ipprotd's data files (-f), shared by
// the proxy that fills them, the recorder that writes them and the playback
// that reads them: the directions of a block, the markers of the format, the
// time layout of ISO lines and log fields, the compressions with their
// extensions, and the file name with its parser. docs/format.md describes
// the format byte by byte.
package datafile

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
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
)

// ISOLayout is the time layout of ISO lines, of the connection log's times
// (%s, %e) and of the hooks' $6 and $7: "2013-12-04 16:18:42+01:00".
const ISOLayout = "2006-01-02 15:04:05-07:00"

// Marker returns the block-stamp marker of direction d.
func (d Direction) Marker() string {
	if d == In {
		return MarkerIn
	}
	return MarkerOut
}

// Compression is how a data file is compressed while it is written.
type Compression uint8

const (
	None  Compression = iota // plain file
	Gzip                     // -z: one gzip member, sync-flushed; name ends in .gz
	Bzip2                    // -j: bzip2 streams, one per flush; name ends in .bz2
)

var extensions = [...]string{None: "", Gzip: ".gz", Bzip2: ".bz2"}

// Ext returns the extension of c's file names: "", ".gz" or ".bz2".
func (c Compression) Ext() string {
	if int(c) < len(extensions) {
		return extensions[c]
	}
	return ""
}

// CompressionOf tells a data file's compression by its name's extension.
func CompressionOf(path string) Compression {
	switch {
	case strings.HasSuffix(path, Gzip.Ext()):
		return Gzip
	case strings.HasSuffix(path, Bzip2.Ext()):
		return Bzip2
	}
	return None
}

// nameTimeLayout is the start time's layout in a data file's name.
const nameTimeLayout = "2006-01-02_150405"

// FileName returns the data file name of a connection:
// <prefix>_<yyyy-mm-dd_HHMMSS>_<n>_<client_ip> and c's extension. start is
// written in its own location (the daemon passes local time). An IPv6
// address is written with '-' for ':' and without its zone, an IPv4-mapped
// one as IPv4; an invalid address as "unknown".
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
	b = append(b, c.Ext()...)
	return string(b)
}

// Name is what a data file's name says about its connection (FileName's
// inverse).
type Name struct {
	Start       time.Time  // when the connection was accepted, to the second, in loc
	N           uint64     // the number in the name: at least the connection's number
	Client      netip.Addr // the client's address; invalid if the name says "unknown"
	Compression Compression
}

// ParseName reads the name of the data file at path,
// <prefix>_<yyyy-mm-dd_HHMMSS>_<n>_<client_ip>[.gz|.bz2], taking the time
// in loc (the daemon's time zone). It fails for any other name.
func ParseName(path string, loc *time.Location) (Name, error) {
	base := filepath.Base(path)
	nm := Name{Compression: CompressionOf(base)}
	rest := strings.TrimSuffix(base, nm.Compression.Ext())
	var parts [4]string // date, time, n, client
	for i := 3; i >= 0; i-- {
		j := strings.LastIndexByte(rest, '_')
		if j < 0 {
			return Name{}, fmt.Errorf("%s is not the name of an ipprotd data file", base)
		}
		parts[i], rest = rest[j+1:], rest[:j]
	}
	start, err := time.ParseInLocation(nameTimeLayout, parts[0]+"_"+parts[1], loc)
	if err != nil {
		return Name{}, fmt.Errorf("%s is not the name of an ipprotd data file: bad time %s_%s", base, parts[0], parts[1])
	}
	n, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return Name{}, fmt.Errorf("%s is not the name of an ipprotd data file: bad number %q", base, parts[2])
	}
	nm.Start, nm.N = start, n
	if parts[3] != "unknown" {
		if nm.Client, err = netip.ParseAddr(strings.ReplaceAll(parts[3], "-", ":")); err != nil {
			return Name{}, fmt.Errorf("%s is not the name of an ipprotd data file: bad client address %q", base, parts[3])
		}
	}
	return nm, nil
}
