package recorder

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
