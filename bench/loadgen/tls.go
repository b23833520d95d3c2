package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"net"
	"os"
	"time"
)

// stream is a connection that can end its sending side: a TCP connection,
// or TLS over one (close_notify).
type stream interface {
	net.Conn
	CloseWrite() error
}

// clientTLS is the TLS the client subcommands speak, set by their -tls-ca
// flag; nil speaks TCP.
var clientTLS *tls.Config

// addClientTLS adds -tls-ca and -tls-name to fs; useClientTLS applies them
// after parsing.
func addClientTLS(fs *flag.FlagSet) (ca, name *string) {
	return fs.String("tls-ca", "", "speak TLS, verifying the server against this PEM CA"),
		fs.String("tls-name", "", "the name the server's certificate must have (default: the address's host)")
}

func useClientTLS(ca, name string) error {
	if ca == "" {
		return nil
	}
	b, err := os.ReadFile(ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return errors.New(ca + ": no certificate")
	}
	clientTLS = &tls.Config{RootCAs: pool, ServerName: name, ClientSessionCache: nil}
	return nil
}

// dial connects to addr within 10 s, with TLS where asked.
func dial(ctx context.Context, addr string) (stream, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if clientTLS == nil {
		return c.(*net.TCPConn), nil
	}
	cfg := clientTLS
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}
