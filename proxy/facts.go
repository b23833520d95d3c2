package proxy

import (
	"net/netip"
	"time"
)

// Outcome is how a connection ended, as the connection log's %x shows it.
type Outcome uint8

const (
	OK            Outcome = iota // both directions ended normally
	Rejected                     // the client is not on the allow-list, --max-conns was reached, Config.Admit refused it, or a trusted peer sent no valid PROXY protocol header
	ConnectFailed                // the destination could not be dialed
	RecordError                  // the recording could not be written
	Aborted                      // ended by a reset, an I/O error, the idle timeout or a forced stop
	TLSFailed                    // a TLS handshake on either side failed, or a certificate did not verify
)

var outcomeNames = [...]string{
	OK:            "ok",
	Rejected:      "rejected",
	ConnectFailed: "connect-failed",
	RecordError:   "record-error",
	Aborted:       "aborted",
	TLSFailed:     "tls-failed",
}

// String returns the outcome's name in the connection log.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Facts describes one accepted connection once it has ended. The proxy hands
// it to Config.OnEnd after the data file is closed; it is not modified after.
type Facts struct {
	N      uint64         // the connection's number in this process, from 1
	Start  time.Time      // when it was accepted
	End    time.Time      // when it ended
	Client netip.AddrPort // the establisher, IPv4-mapped addresses unmapped
	// Via is the peer that connected where a PROXY protocol header
	// (Config.ProxyFrom) named the client: the load balancer. Zero where
	// the client connected itself.
	Via netip.AddrPort
	// Dest is the destination dialed; for ConnectFailed, the address the
	// dial tried last; zero if no address was tried (the client was
	// rejected, or the destination's name did not resolve).
	Dest    netip.AddrPort
	OutHost string // the destination host as configured (a name or an address)
	OutPort uint16 // the destination port as configured
	// BytesIn is the number of bytes received from the establisher, also
	// those an early end kept from reaching the destination.
	BytesIn int64
	// BytesOut is the number of bytes written to the establisher.
	BytesOut int64
	File     string // the data file's path; "" if there is none
	// Size and SHA256 describe the data file as it lies on disk once it
	// is closed: its length and its SHA-256 in lowercase hex, the sum
	// sha256sum gives (of the compressed bytes for -z and -j). They are
	// 0 and "" where there is no file; SHA256 is also "" where the
	// recorder does not hash (Recorder.Digest).
	Size   int64
	SHA256 string
	// ClientTLS and ServerTLS are the TLS the proxy spoke with the client
	// and with the destination, as "TLSv1.3/TLS_AES_128_GCM_SHA256"; ""
	// in clear or where TLS passed through. ClientCert is the subject of
	// the client's verified certificate, "" if none.
	ClientTLS, ServerTLS, ClientCert string
	Outcome                          Outcome
	Err                              error // why the connection did not end OK; nil when it did
}
