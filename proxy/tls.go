package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// TLS says where the proxy speaks TLS itself, so that it sees, records
// and forwards the plaintext. Its zero value passes TLS through untouched,
// as bytes like any other.
type TLS struct {
	// Client terminates the clients' TLS with this configuration (its
	// certificate, through GetConfigForClient where it is reloaded, and
	// its client authentication; with Postgres, ALPN "postgresql"). If
	// nil, what the client sends passes through as it is.
	Client *tls.Config

	// Upstream originates TLS to the destination with this configuration
	// (ServerName, RootCAs, client Certificates). If nil, the destination
	// is spoken to in clear.
	Upstream *tls.Config

	// Postgres speaks PostgreSQL's negotiation instead of TLS from the
	// first byte: a client's SSLRequest is answered 'S' (with Client) or
	// 'N', a GSSENCRequest 'N', a CancelRequest forwarded in clear, and a
	// TLS ClientHello as the first bytes (PostgreSQL 17's direct TLS,
	// ALPN "postgresql") is accepted; upstream, an SSLRequest goes first
	// and 'S' is required.
	Postgres bool

	// Required refuses, with PostgreSQL's own error, a client that does
	// not ask for TLS (Postgres and Client only).
	Required bool
}

func (t *TLS) active() bool { return t != nil && (t.Client != nil || t.Upstream != nil) }

// The first packets of PostgreSQL's protocol that are not a StartupMessage:
// their length and code, both big-endian int32.
const (
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
	pgCancelRequest = 80877102
	pgCancelLen     = 16
	pgMaxStartup    = 10000 // PostgreSQL's own limit on a StartupMessage
	tlsRecordHello  = 0x16  // the first byte of a TLS handshake record
)

// asTLSError makes every failure of a negotiation a *tlsError: a client
// that sends garbage, or stalls past the connect timeout, failed its TLS.
func asTLSError(err error) error {
	var te *tlsError
	if errors.As(err, &te) {
		return err
	}
	return &tlsError{err}
}

// tlsError wraps the failures that end a session as TLSFailed.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

func tlsFailed(format string, args ...any) error {
	return &tlsError{fmt.Errorf(format, args...)}
}

// errNotTLS ends a PostgreSQL client that did not ask for TLS where it is
// required; the session's outcome is Rejected.
var errNotTLS = errors.New("the client did not ask for TLS (--tls-required)")

// negotiation is what the client side's negotiation found.
type negotiation struct {
	conn    *tls.Conn // the client's TLS, or nil in clear
	pending []byte    // the client's first bytes, read and not yet forwarded
	cancel  bool      // a PostgreSQL CancelRequest: forwarded in clear
}

// negotiateClient runs the client side's negotiation within ctx: a TLS
// handshake, or PostgreSQL's SSLRequest dance first.
func (ss *session) negotiateClient(ctx context.Context, cfg *TLS) (neg negotiation, err error) {
	c := ss.client
	defer interruptible(ctx, c, &err)()
	if !cfg.Postgres {
		if cfg.Client == nil {
			return negotiation{}, nil
		}
		tc, err := serverHandshake(ctx, c, nil, cfg.Client)
		return negotiation{conn: tc}, err
	}
	for range 3 { // at most a GSSENCRequest and an SSLRequest before the rest
		var head [8]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return negotiation{}, fmt.Errorf("read the first packet: %w", err)
		}
		if head[0] == tlsRecordHello {
			// PostgreSQL 17's direct TLS: a ClientHello right away.
			if cfg.Client == nil {
				return negotiation{}, tlsFailed("the client starts with TLS, and ipprotd has no certificate (--tls-cert) for it")
			}
			tc, err := serverHandshake(ctx, c, head[:], cfg.Client)
			return negotiation{conn: tc}, err
		}
		length := binary.BigEndian.Uint32(head[:4])
		code := binary.BigEndian.Uint32(head[4:])
		switch {
		case length == 8 && code == pgSSLRequest && cfg.Client != nil:
			if _, err := c.Write([]byte{'S'}); err != nil {
				return negotiation{}, err
			}
			tc, err := serverHandshake(ctx, c, nil, cfg.Client)
			return negotiation{conn: tc}, err
		case length == 8 && (code == pgSSLRequest || code == pgGSSENCRequest):
			// No TLS to offer (or GSSAPI, never): the client goes on in
			// clear, or gives up.
			if _, err := c.Write([]byte{'N'}); err != nil {
				return negotiation{}, err
			}
		case length == pgCancelLen && code == pgCancelRequest:
			rest := make([]byte, pgCancelLen)
			copy(rest, head[:])
			if _, err := io.ReadFull(c, rest[8:]); err != nil {
				return negotiation{}, fmt.Errorf("read the CancelRequest: %w", err)
			}
			return negotiation{pending: rest, cancel: true}, nil
		case cfg.Required && cfg.Client != nil:
			return negotiation{}, ss.refuseClear(head[:], length)
		default:
			return negotiation{pending: head[:]}, nil
		}
	}
	return negotiation{}, tlsFailed("the client asked for encryption three times")
}

// serverHandshake runs the server side of a TLS handshake on c, of which
// the first bytes were read already (prefix).
func serverHandshake(ctx context.Context, c *net.TCPConn, prefix []byte, cfg *tls.Config) (*tls.Conn, error) {
	var conn net.Conn = c
	if len(prefix) > 0 {
		conn = &prefixConn{TCPConn: c, prefix: bytes.Clone(prefix)}
	}
	tc := tls.Server(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, tlsFailed("TLS handshake with the client: %w", err)
	}
	return tc, nil
}

// refuseClear answers a PostgreSQL client that did not ask for TLS with the
// error PostgreSQL itself gives where only hostssl lines of pg_hba.conf
// match it.
func (ss *session) refuseClear(head []byte, length uint32) error {
	user, database := "", ""
	if length > 8 && length <= pgMaxStartup {
		body := make([]byte, length-8)
		if _, err := io.ReadFull(ss.client, body); err == nil {
			user, database = startupParams(body)
		}
	}
	if database == "" {
		database = user
	}
	msg := fmt.Sprintf("no pg_hba.conf entry for host %q, user %q, database %q, no encryption",
		ss.facts.Client.Addr().String(), user, database)
	ss.client.Write(pgError("FATAL", "28000", msg))
	return errNotTLS
}

// startupParams returns the user and database of a StartupMessage's
// parameters (what follows its length and protocol version).
func startupParams(body []byte) (user, database string) {
	fields := bytes.Split(body, []byte{0})
	for i := 0; i+1 < len(fields); i += 2 {
		switch string(fields[i]) {
		case "user":
			user = string(fields[i+1])
		case "database":
			database = string(fields[i+1])
		}
	}
	return user, database
}

// pgError returns a PostgreSQL ErrorResponse.
func pgError(severity, code, msg string) []byte {
	var b []byte
	b = append(b, 'E', 0, 0, 0, 0)
	for _, f := range []struct {
		t byte
		v string
	}{{'S', severity}, {'V', severity}, {'C', code}, {'M', msg}} {
		b = append(b, f.t)
		b = append(b, f.v...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-1))
	return b
}

// negotiateUpstream speaks TLS to the freshly dialed destination c within
// ctx: PostgreSQL's SSLRequest first where asked to.
func (ss *session) negotiateUpstream(ctx context.Context, cfg *TLS) (_ *tls.Conn, err error) {
	c := ss.server
	defer interruptible(ctx, c, &err)()
	if cfg.Postgres {
		var req [8]byte
		binary.BigEndian.PutUint32(req[:4], 8)
		binary.BigEndian.PutUint32(req[4:], pgSSLRequest)
		if _, err := c.Write(req[:]); err != nil {
			return nil, tlsFailed("send the SSLRequest to the destination: %w", err)
		}
		var answer [1]byte
		if _, err := io.ReadFull(c, answer[:]); err != nil {
			return nil, tlsFailed("read the destination's answer to the SSLRequest: %w", err)
		}
		if answer[0] != 'S' {
			return nil, tlsFailed("the destination refused TLS (answered %q to the SSLRequest)", answer[0])
		}
	}
	tc := tls.Client(c, cfg.Upstream)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, tlsFailed("TLS handshake with the destination: %w", err)
	}
	return tc, nil
}

// prefixConn is a TCP connection whose first bytes were read already: Read
// returns them first.
type prefixConn struct {
	*net.TCPConn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// describeTLS renders a connection's TLS as the connection log's %T and %U
// show it: "TLSv1.3/TLS_AES_128_GCM_SHA256".
func describeTLS(st tls.ConnectionState) string {
	v := "TLSv1.3"
	switch st.Version {
	case tls.VersionTLS12:
		v = "TLSv1.2"
	case tls.VersionTLS11:
		v = "TLSv1.1"
	case tls.VersionTLS10:
		v = "TLSv1.0"
	}
	return v + "/" + tls.CipherSuiteName(st.CipherSuite)
}

// clientSubject is the subject of a verified client certificate, or "".
func clientSubject(st tls.ConnectionState) string {
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.String()
}

// interruptible bounds the plain reads and writes of a negotiation on c by
// ctx: its deadline, and its cancellation (a forced stop), which
// io.ReadFull does not watch. The function it returns clears the deadline;
// if ctx ended under a negotiation that succeeded, it fails it (*errp),
// since c's deadline may be in the past by then.
func interruptible(ctx context.Context, c *net.TCPConn, errp *error) func() {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	return func() {
		if !stop() && *errp == nil {
			*errp = context.Cause(ctx)
			return
		}
		c.SetDeadline(time.Time{})
	}
}
