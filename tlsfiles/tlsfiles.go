// Package tlsfiles turns the PEM files of ipprotd's TLS options into
// crypto/tls configurations: the certificate the proxy shows its clients
// (and the CA it checks theirs against), and what it needs to speak TLS to
// the destination. Reload re-reads the files on SIGHUP: new handshakes use
// the new certificate, open sessions go on, and files that fail to load
// leave the old ones in use.
//
//	srv, err := tlsfiles.NewServer(tlsfiles.ServerFiles{Cert: "c.pem", Key: "k.pem"})
//	proxyConfig.TLS.Client = srv.Config()
//	...
//	err = srv.Reload() // SIGHUP
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// ServerFiles are the files of the side that terminates the clients' TLS.
type ServerFiles struct {
	Cert, Key string // PEM certificate chain and its private key (ECDSA, RSA or Ed25519)
	ClientCA  string // PEM CA certificates: if set, clients must present a certificate it verifies
	// ALPN is the application protocol to agree on with clients that
	// offer ALPN ("postgresql" for PostgreSQL 17's direct TLS); none if
	// empty. A client offering others only is refused.
	ALPN []string
}

// Server is the reloadable configuration of the clients' side. It is safe
// for concurrent use.
type Server struct {
	files ServerFiles
	cur   atomic.Pointer[tls.Config]
}

// NewServer loads files. The error names the file at fault.
func NewServer(files ServerFiles) (*Server, error) {
	s := &Server{files: files}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again. If any fails to load, the configuration in
// use is kept and the error says why.
func (s *Server) Reload() error {
	pair, err := loadPair(s.files.Cert, s.files.Key)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   s.files.ALPN,
	}
	if s.files.ClientCA != "" {
		pool, err := LoadPool(s.files.ClientCA)
		if err != nil {
			return err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	s.cur.Store(cfg)
	return nil
}

// Config returns the configuration for tls.Server: each handshake takes
// the one loaded last.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
}

// UpstreamFiles is what speaking TLS to the destination needs.
type UpstreamFiles struct {
	CA         string // PEM CA certificates to verify the destination against; "" for the system's
	ServerName string // the name its certificate must have; also the SNI
	Cert, Key  string // a client certificate to present, if set
	Insecure   bool   // skip verification (never by default)
}

// Upstream is the reloadable configuration of the destination's side. It
// is safe for concurrent use.
type Upstream struct {
	files UpstreamFiles
	roots *x509.CertPool
	pair  atomic.Pointer[tls.Certificate]
}

// NewUpstream loads files.
func NewUpstream(files UpstreamFiles) (*Upstream, error) {
	u := &Upstream{files: files}
	if files.CA != "" {
		pool, err := LoadPool(files.CA)
		if err != nil {
			return nil, err
		}
		u.roots = pool
	}
	if err := u.Reload(); err != nil {
		return nil, err
	}
	return u, nil
}

// Reload reads the client certificate again, if there is one; on failure
// the one in use is kept.
func (u *Upstream) Reload() error {
	if u.files.Cert == "" {
		return nil
	}
	pair, err := loadPair(u.files.Cert, u.files.Key)
	if err != nil {
		return err
	}
	u.pair.Store(&pair)
	return nil
}

// Config returns the configuration for tls.Client.
func (u *Upstream) Config() *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            u.roots,
		ServerName:         u.files.ServerName,
		InsecureSkipVerify: u.files.Insecure,
	}
	if u.files.Cert != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return u.pair.Load(), nil
		}
	}
	return cfg
}

// loadPair loads a certificate chain and its key.
func loadPair(certFile, keyFile string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load the certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return pair, nil
}

// LoadPool loads the PEM certificates of file into a pool.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New(file + ": no PEM certificate in it")
	}
	return pool, nil
}
