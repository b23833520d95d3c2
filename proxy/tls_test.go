package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// testPKI is a throw-away CA and certificates it signed.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial int64
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ipprot test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, pool: pool, serial: 1}
}

// leaf returns a certificate for name (a DNS name or an IP), for servers
// and clients alike.
func (p *testPKI) leaf(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"ipprot test"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsUpstream serves TLS on the harness's upstream listener: accept
// returns its side of each connection once the handshake is done.
func tlsAccept(t *testing.T, h *harness, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c := h.accept()
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("upstream handshake: %v", err)
	}
	return tc
}

// TestTLSTerminated: a client's TLS ends at the proxy; the destination
// and the recording get the plaintext, byte for byte both ways; a
// close_notify passes on as a FIN and a FIN as a close_notify; the facts
// name the TLS and the client certificate.
func TestTLSTerminated(t *testing.T) {
	pki := newPKI(t)
	rec := &blockLog{}
	srvCfg := &tls.Config{
		Certificates: []tls.Certificate{pki.leaf(t, "proxy.test")},
		ClientCAs:    pki.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}
	h := newHarness(t, "tcp4", Config{
		TLS:          &TLS{Client: srvCfg},
		OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil },
	})
	raw := h.dial()
	client := tls.Client(raw, &tls.Config{ServerName: "proxy.test", RootCAs: pki.pool, Certificates: []tls.Certificate{pki.leaf(t, "alice")}})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	server := h.accept()
	question, answer := randomBytes(t, 200000), randomBytes(t, 300000)
	errc := make(chan error, 1)
	go func() {
		_, err := client.Write(question)
		errc <- errors.Join(err, client.CloseWrite())
	}()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, question) {
		t.Fatalf("the destination read %d bytes, %v; want the %d the client sent, then EOF", len(got), err, len(question))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go sendAndClose(server, answer, errc)
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("the client read %d bytes, %v; want %d and a close_notify", len(got), err, len(answer))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	client.Close()
	f := h.wait()
	if f.Outcome != OK || !strings.HasPrefix(f.ClientTLS, "TLSv1.3/TLS_") || f.ServerTLS != "" || f.ClientCert != "CN=alice,O=ipprot test" {
		t.Errorf("facts %+v; want ok, the client's TLS and certificate, none upstream", f)
	}
	if !bytes.Equal(rec.blocks[datafile.In], question) || !bytes.Equal(rec.blocks[datafile.Out], answer) {
		t.Errorf("recorded %d and %d bytes; want the plaintext, %d and %d", len(rec.blocks[datafile.In]), len(rec.blocks[datafile.Out]), len(question), len(answer))
	}
	if f.BytesIn != int64(len(question)) || f.BytesOut != int64(len(answer)) {
		t.Errorf("counted %d in, %d out; want the plaintext's %d and %d", f.BytesIn, f.BytesOut, len(question), len(answer))
	}
}

// TestTLSOriginated: the proxy speaks TLS to the destination, verified for
// the configured name; a wrong name fails the session as tls-failed and
// no byte of the client's reaches the destination.
func TestTLSOriginated(t *testing.T) {
	pki := newPKI(t)
	upCfg := &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "db.test")}}
	t.Run("verified", func(t *testing.T) {
		h := newHarness(t, "tcp4", Config{TLS: &TLS{Upstream: &tls.Config{ServerName: "db.test", RootCAs: pki.pool}}})
		client := h.dial()
		server := tlsAccept(t, h, upCfg)
		client.Write([]byte("SELECT 1;"))
		q := make([]byte, 9)
		if _, err := io.ReadFull(server, q); err != nil || string(q) != "SELECT 1;" {
			t.Fatalf("the destination read %q, %v", q, err)
		}
		go server.Write([]byte("1 row"))
		got := make([]byte, 5)
		if _, err := io.ReadFull(client, got); err != nil || string(got) != "1 row" {
			t.Fatalf("client read %q, %v", got, err)
		}
		client.CloseWrite()
		if _, err := io.ReadAll(server); err != nil {
			t.Errorf("the destination's read after the client's FIN: %v; want the close_notify's EOF", err)
		}
		server.Close()
		if f := h.wait(); f.Outcome != OK || !strings.HasPrefix(f.ServerTLS, "TLSv1.3/") || f.ClientTLS != "" {
			t.Errorf("facts %+v; want ok and the destination's TLS", f)
		}
	})
	t.Run("wrong name", func(t *testing.T) {
		h := newHarness(t, "tcp4", Config{TLS: &TLS{Upstream: &tls.Config{ServerName: "other.test", RootCAs: pki.pool}}})
		client := h.dial()
		client.Write([]byte("SELECT secret;"))
		up := h.accept()
		tc := tls.Server(up, upCfg)
		tc.Handshake() // the proxy rejects the certificate
		f := h.wait()
		if f.Outcome != TLSFailed || !strings.Contains(f.Err.Error(), "other.test") {
			t.Errorf("outcome %v (%v); want tls-failed naming the name", f.Outcome, f.Err)
		}
		tc.SetReadDeadline(time.Now().Add(time.Second))
		if n, _ := tc.Read(make([]byte, 100)); n != 0 {
			t.Errorf("the destination got %d bytes of the client's after a failed verification", n)
		}
		if _, err := io.ReadAll(client); err == nil {
			t.Errorf("the client's connection ended cleanly; want a reset")
		}
	})
}

// TestTLSHostileClients: a client that sends a plaintext request to a TLS
// port, garbage, or stalls in its handshake is closed within the connect
// timeout as tls-failed, without a dial, and leaves nothing behind.
func TestTLSHostileClients(t *testing.T) {
	pki := newPKI(t)
	cfg := Config{TLS: &TLS{Client: &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "proxy.test")}}}, ConnectTimeout: 300 * time.Millisecond}
	h := newHarness(t, "tcp4", cfg)
	before := openFDs(t)
	for name, send := range map[string][]byte{
		"plaintext": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"garbage":   {0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8},
		"stall":     {0x16, 0x03, 0x01}, // a record header cut short
		"nothing":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(send)
			f := h.wait()
			if f.Outcome != TLSFailed || f.Dest.IsValid() {
				t.Errorf("outcome %v (%v), dest %v; want tls-failed before any dial", f.Outcome, f.Err, f.Dest)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.ReadAll(c)
		})
	}
	// Nothing stays behind: the descriptors are back (goleak checks the
	// goroutines at the end of the package).
	if after := openFDs(t); after > before {
		t.Errorf("%d descriptors open after the hostile clients; %d before", after, before)
	}
}

// TestTLSParks: idle TLS directions park like plain ones and wake on
// data, and hold no read buffer while parked.
func TestTLSParks(t *testing.T) {
	pki := newPKI(t)
	h := newHarness(t, "tcp4", Config{
		TLS: &TLS{Client: &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "proxy.test")}},
			Upstream: &tls.Config{ServerName: "db.test", RootCAs: pki.pool}},
	})
	upCfg := &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "db.test")}}
	const n = 10
	var clients, servers []*tls.Conn
	for range n {
		c := tls.Client(h.dial(), &tls.Config{ServerName: "proxy.test", RootCAs: pki.pool})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		servers = append(servers, tlsAccept(t, h, upCfg))
	}
	waitFor(t, "every TLS direction parked", func() bool { return h.srv.parker.count() == 2*n })
	waitFor(t, "no buffer out", func() bool { return h.srv.bufPool.out.Load() == 0 })
	for i := range n {
		clients[i].Write([]byte("ping"))
		got := make([]byte, 4)
		if _, err := io.ReadFull(servers[i], got); err != nil || string(got) != "ping" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		servers[i].Write([]byte("pong"))
		if _, err := io.ReadFull(clients[i], got); err != nil || string(got) != "pong" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		clients[i].Close()
		servers[i].Close()
	}
	for range n {
		h.wait()
	}
}

// pgPacket returns a PostgreSQL packet without a type byte: its length,
// then code.
func pgPacket(code uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(rest)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, rest...)
}

// startup is a StartupMessage of protocol 3.0 for user and database.
func startup(user, database string) []byte {
	var params []byte
	for _, kv := range [][2]string{{"user", user}, {"database", database}} {
		params = append(params, kv[0]...)
		params = append(params, 0)
		params = append(params, kv[1]...)
		params = append(params, 0)
	}
	return pgPacket(196608, append(params, 0)...)
}

// pgUpstream is the destination of the PostgreSQL tests: it answers the
// proxy's SSLRequest with 'S', takes its TLS, and returns the connection.
func pgUpstream(t *testing.T, h *harness, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c := h.accept()
	req := make([]byte, 8)
	if _, err := io.ReadFull(c, req); err != nil || !bytes.Equal(req, pgPacket(pgSSLRequest)) {
		t.Fatalf("the destination's first packet %x, %v; want an SSLRequest", req, err)
	}
	c.Write([]byte{'S'})
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestPostgresNegotiation: PostgreSQL's own negotiation on both sides.
func TestPostgresNegotiation(t *testing.T) {
	pki := newPKI(t)
	clientSide := &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "proxy.test")}, NextProtos: []string{"postgresql"}}
	upSide := &tls.Config{Certificates: []tls.Certificate{pki.leaf(t, "db.test")}}
	tlsCfg := &TLS{Postgres: true, Client: clientSide, Upstream: &tls.Config{ServerName: "db.test", RootCAs: pki.pool}}
	clientTLS := &tls.Config{ServerName: "proxy.test", RootCAs: pki.pool}
	hello := startup("alice", "shop")

	t.Run("GSSENC then SSLRequest", func(t *testing.T) {
		rec := &blockLog{}
		h := newHarness(t, "tcp4", Config{TLS: tlsCfg, OpenRecorder: func(*Facts, func(error)) (Recorder, string, error) { return rec, "f", nil }})
		c := h.dial()
		answer := make([]byte, 1)
		c.Write(pgPacket(pgGSSENCRequest))
		if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'N' {
			t.Fatalf("GSSENCRequest answered %q, %v; want N", answer, err)
		}
		c.Write(pgPacket(pgSSLRequest))
		if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'S' {
			t.Fatalf("SSLRequest answered %q, %v; want S", answer, err)
		}
		tc := tls.Client(c, clientTLS)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.Write(hello)
		up := pgUpstream(t, h, upSide)
		got := make([]byte, len(hello))
		if _, err := io.ReadFull(up, got); err != nil || !bytes.Equal(got, hello) {
			t.Fatalf("the destination read %x, %v; want the StartupMessage", got, err)
		}
		tc.Close()
		up.Close()
		f := h.wait()
		if f.ClientTLS == "" || f.ServerTLS == "" {
			t.Errorf("facts %+v; want TLS on both sides", f)
		}
		// The recording starts with the StartupMessage, as a clear one.
		if !bytes.Equal(rec.blocks[datafile.In], hello) {
			t.Errorf("recorded %x; want the StartupMessage alone", rec.blocks[datafile.In])
		}
	})
	t.Run("direct TLS", func(t *testing.T) {
		h := newHarness(t, "tcp4", Config{TLS: tlsCfg})
		direct := clientTLS.Clone()
		direct.NextProtos = []string{"postgresql"}
		tc := tls.Client(h.dial(), direct)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "postgresql" {
			t.Errorf("ALPN %q; want postgresql", p)
		}
		tc.Write(hello)
		up := pgUpstream(t, h, upSide)
		got := make([]byte, len(hello))
		if _, err := io.ReadFull(up, got); err != nil || !bytes.Equal(got, hello) {
			t.Fatalf("the destination read %x, %v", got, err)
		}
		tc.Close()
		up.Close()
		h.wait()
	})
	t.Run("CancelRequest", func(t *testing.T) {
		h := newHarness(t, "tcp4", Config{TLS: tlsCfg})
		c := h.dial()
		cancel := pgPacket(pgCancelRequest, 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef)
		c.Write(cancel)
		up := h.accept() // in clear, no SSLRequest: PostgreSQL takes cancels so
		got := make([]byte, len(cancel))
		if _, err := io.ReadFull(up, got); err != nil || !bytes.Equal(got, cancel) {
			t.Fatalf("the destination read %x, %v; want the CancelRequest as it was", got, err)
		}
		up.Close()
		c.Close()
		if f := h.wait(); f.Outcome == TLSFailed {
			t.Errorf("outcome %v (%v)", f.Outcome, f.Err)
		}
	})
	t.Run("required", func(t *testing.T) {
		req := *tlsCfg
		req.Required = true
		h := newHarness(t, "tcp4", Config{TLS: &req})
		c := h.dial()
		c.Write(hello)
		got, _ := io.ReadAll(c)
		want := pgError("FATAL", "28000", `no pg_hba.conf entry for host "127.0.0.1", user "alice", database "shop", no encryption`)
		if !bytes.Equal(got, want) {
			t.Errorf("the client read %q; want PostgreSQL's error %q", got, want)
		}
		if f := h.wait(); f.Outcome != Rejected || f.Dest.IsValid() {
			t.Errorf("outcome %v, dest %v; want rejected before any dial", f.Outcome, f.Dest)
		}
	})
	t.Run("clear when only upstream speaks TLS", func(t *testing.T) {
		up := *tlsCfg
		up.Client = nil
		h := newHarness(t, "tcp4", Config{TLS: &up})
		c := h.dial()
		c.Write(pgPacket(pgSSLRequest))
		answer := make([]byte, 1)
		if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'N' {
			t.Fatalf("SSLRequest answered %q, %v; want N (no certificate to offer)", answer, err)
		}
		c.Write(hello)
		u := pgUpstream(t, h, upSide)
		got := make([]byte, len(hello))
		if _, err := io.ReadFull(u, got); err != nil || !bytes.Equal(got, hello) {
			t.Fatalf("the destination read %x, %v", got, err)
		}
		u.Close()
		c.Close()
		h.wait()
	})
}

// TestPostgresPassthrough: without TLS of its own, the proxy passes an
// SSLRequest through untouched, as before it spoke TLS.
func TestPostgresPassthrough(t *testing.T) {
	h := newHarness(t, "tcp4", Config{})
	c := h.dial()
	req := pgPacket(pgSSLRequest)
	c.Write(req)
	up := h.accept()
	got := make([]byte, 8)
	if _, err := io.ReadFull(up, got); err != nil || !bytes.Equal(got, req) {
		t.Fatalf("the destination read %x, %v; want the SSLRequest", got, err)
	}
	up.Write([]byte{'N'})
	if _, err := io.ReadFull(c, got[:1]); err != nil || got[0] != 'N' {
		t.Fatalf("the client read %q, %v; want the destination's N", got[:1], err)
	}
	c.Close()
	up.Close()
	h.wait()
}

// FuzzPostgresNegotiation feeds the client side's negotiation arbitrary
// first bytes: it never panics, never forwards more than it read, and
// answers only S or N to what it took for a request.
func FuzzPostgresNegotiation(f *testing.F) {
	for _, seed := range [][]byte{
		pgPacket(pgSSLRequest), pgPacket(pgGSSENCRequest), append(pgPacket(pgGSSENCRequest), pgPacket(pgSSLRequest)...),
		pgPacket(pgCancelRequest, 1, 2, 3, 4, 5, 6, 7, 8), startup("a", "b"), {0x16, 3, 1, 0, 5}, {0, 0, 0, 8}, nil,
		pgPacket(pgGSSENCRequest), bytes.Repeat([]byte{0xff}, 20),
	} {
		f.Add(seed)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	cfg := &TLS{Postgres: true, Upstream: &tls.Config{}}
	srv := New(Config{TLS: cfg, ConnectTimeout: 200 * time.Millisecond})
	f.Fuzz(func(t *testing.T, input []byte) {
		client, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		accepted, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer accepted.Close()
		client.Write(input)
		client.(*net.TCPConn).CloseWrite()
		ss := &session{srv: srv, client: accepted.(*net.TCPConn)}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		neg, err := ss.negotiateClient(ctx, cfg)
		if err == nil && len(neg.pending) > len(input) {
			t.Errorf("pending %d bytes of an input of %d", len(neg.pending), len(input))
		}
		if err == nil && !bytes.Contains(input, neg.pending) {
			t.Errorf("pending %x is not what the client sent (%x)", neg.pending, input)
		}
		accepted.Close()
		client.SetReadDeadline(time.Now().Add(time.Second))
		answers, _ := io.ReadAll(client)
		// Without a certificate, every request is answered N, nothing else.
		if len(bytes.Trim(answers, "N")) != 0 {
			t.Errorf("answered %x to %x", answers, input)
		}
	})
}
