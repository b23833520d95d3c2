package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
)

// pki is a throw-away CA made with openssl, and certificates it signs.
type pki struct {
	t   *testing.T
	dir string
	ca  string // ca.pem
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	testkit.Need(t, "openssl")
	p := &pki{t: t, dir: t.TempDir()}
	p.ca = filepath.Join(p.dir, "ca.pem")
	p.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(p.dir, "ca.key"), "-out", p.ca, "-days", "1", "-subj", "/CN=ipprot e2e CA")
	return p
}

func (p *pki) openssl(args ...string) {
	p.t.Helper()
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		p.t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
}

// cert makes a certificate and key (name.pem, name.key) for the subject
// CN=cn with the given subjectAltNames (DNS:x, IP:y), signed by the CA;
// rsa makes an RSA key instead of ECDSA.
func (p *pki) cert(name, cn string, rsa bool, sans ...string) (certFile, keyFile string) {
	p.t.Helper()
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	csr := filepath.Join(p.dir, name+".csr")
	key := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}
	if rsa {
		key = []string{"-newkey", "rsa:2048"}
	}
	p.openssl(append(append([]string{"req", "-new"}, key...), "-nodes", "-keyout", keyFile, "-out", csr, "-subj", "/CN="+cn)...)
	ext := filepath.Join(p.dir, name+".ext")
	os.WriteFile(ext, []byte("subjectAltName="+strings.Join(sans, ",")+"\nextendedKeyUsage=serverAuth,clientAuth\n"), 0o644)
	serial := make([]byte, 8)
	rand.Read(serial)
	p.openssl("x509", "-req", "-in", csr, "-CA", p.ca, "-CAkey", filepath.Join(p.dir, "ca.key"),
		"-set_serial", "0x"+fmt.Sprintf("%x", serial), "-days", "1", "-extfile", ext, "-out", certFile)
	return certFile, keyFile
}

// serialOf returns the serial number of the certificate a TLS server at
// addr shows, as openssl s_client sees it.
func serialOf(t *testing.T, addr, ca string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("openssl s_client -connect %s -CAfile %s </dev/null 2>/dev/null | openssl x509 -noout -serial", addr, ca))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("s_client: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestTLSPostgres: a stock psql with sslmode=verify-full, through the proxy
// that speaks PostgreSQL's TLS negotiation on both sides, to a PostgreSQL
// 15 that refuses TCP clients without TLS. The recording holds the
// statements and results in clear, cat --sql lists them, the connection
// log names both sides' TLS, a psql Ctrl-C cancels the running query, and
// a wrong --upstream-server-name fails the session before any statement
// leaves.
func TestTLSPostgres(t *testing.T) {
	testkit.Need(t, "runuser", "psql")
	p := newPKI(t)
	pgCert, pgKey := p.cert("pg", "pg.test", true, "DNS:pg.test") // RSA upstream
	proxyCert, proxyKey := p.cert("proxy", "proxy.test", false, "IP:127.0.0.1", "DNS:localhost")
	pgPort := testkit.FreePort(t)
	pg, err := testkit.StartPostgresWith(testkit.PgTool(t, "initdb"), testkit.PgTool(t, "postgres"), pgPort,
		testkit.PostgresOptions{CertFile: pgCert, KeyFile: pgKey, SSLOnly: true, LogStatements: true})
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	t.Cleanup(pg.Stop)
	dir := t.TempDir()
	common := []string{"-P", fmt.Sprintf("%d@127.0.0.1", pgPort), "--starttls", "postgres",
		"--tls-cert", proxyCert, "--tls-key", proxyKey, "--upstream-tls", "--upstream-ca", p.ca}
	d := startDaemon(t, append(common, "--upstream-server-name", "pg.test", "-L", "-M", "-f", dir+"/prot",
		"-c", dir+"/conn.log", "-C", "%N %x %T %U %f%n")...)
	psql := func(port int, args ...string) *exec.Cmd {
		cmd := exec.Command("psql", append([]string{"-X", "-q", "-d",
			fmt.Sprintf("dbname=postgres user=postgres host=127.0.0.1 port=%d sslmode=verify-full sslrootcert=%s", port, p.ca)}, args...)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGGSSENCMODE=prefer")
		return cmd
	}
	out, err := psql(d.port, "-c", "CREATE TABLE tls_t (id int)", "-c", "INSERT INTO tls_t VALUES (42)", "-c", "SELECT id FROM tls_t").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "42") {
		t.Fatalf("psql through the proxy: %v\n%s", err, out)
	}

	// Ctrl-C: psql sends a CancelRequest on a new connection.
	slow := psql(d.port, "-c", "SELECT pg_sleep(60)")
	var slowOut bytes.Buffer
	slow.Stdout, slow.Stderr = &slowOut, &slowOut
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the query to run", func() bool {
		b, _ := os.ReadFile(pg.Log)
		return bytes.Contains(b, []byte("SELECT pg_sleep(60)"))
	})
	slow.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- slow.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		slow.Process.Kill()
		t.Fatalf("psql's cancel did not end the query within 30 s")
	}
	if !strings.Contains(slowOut.String(), "canceling statement due to user request") {
		t.Errorf("psql after Ctrl-C: %q; want the query canceled", slowOut.String())
	}
	d.stop()

	lines := readLines(t, dir+"/conn.log")
	var psqlFile string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 5 {
			t.Fatalf("log line %q", l)
		}
		if f[0] == "1" {
			psqlFile = f[4]
			if f[1] != "ok" || !strings.HasPrefix(f[2], "TLSv1.3/TLS_") || !strings.HasPrefix(f[3], "TLSv1.") {
				t.Errorf("line %q; want ok with TLS on both sides", l)
			}
		}
	}
	rec, err := os.ReadFile(psqlFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CREATE TABLE tls_t (id int)", "INSERT INTO tls_t VALUES (42)", "SELECT id FROM tls_t", "INSERT 0 1"} {
		if !bytes.Contains(rec, []byte(want)) {
			t.Errorf("the recording lacks %q in clear", want)
		}
	}
	sql, errOut, code := catRun(t, "--sql", psqlFile)
	if code != 0 || !strings.Contains(sql, "CREATE TABLE tls_t (id int) => CREATE TABLE") || !strings.Contains(sql, "SELECT id FROM tls_t => SELECT 1") {
		t.Errorf("cat --sql: %d, %s\n%s", code, errOut, sql)
	}

	// A wrong name: the destination's certificate does not verify.
	bad := startDaemon(t, append(common, "--upstream-server-name", "wrong.test", "-c", dir+"/bad.log", "-C", "%x%n")...)
	out, err = psql(bad.port, "-c", "SELECT 'must not arrive'").CombinedOutput()
	if err == nil {
		t.Errorf("psql through a proxy that cannot verify the server: %s", out)
	}
	bad.stop()
	if got := readLines(t, dir+"/bad.log"); len(got) == 0 || got[0] != "tls-failed" {
		t.Errorf("log %q; want tls-failed", got)
	}
	if l := bad.logLines("connection"); len(l) == 0 || !strings.Contains(l[0], "wrong.test") {
		t.Errorf("daemon log %q; want the reason naming the certificate's name", l)
	}
	if b, _ := os.ReadFile(pg.Log); bytes.Contains(b, []byte("must not arrive")) {
		t.Errorf("the statement reached the server through a failed verification")
	}
}

// nginxTLS runs nginx with TLS on a free port, serving root; it returns
// the port.
func nginxTLS(t *testing.T, cert, key, root string) int {
	t.Helper()
	testkit.Need(t, "nginx")
	port := testkit.FreePort(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
    server {
        listen 127.0.0.1:%[2]d ssl;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;
        root %[5]s;
    }
}
`, dir, port, cert, key, root)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	cmd := exec.Command("nginx", "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		cmd.Wait()
	})
	waitFor(t, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return port
}

// TestTLSNginx: curl --cacert through the proxy that terminates and
// originates TLS to nginx: the body arrives byte for byte, the recording
// holds the request and the body in clear; a new certificate put in place
// and SIGHUP: the next handshake shows it, the daemon the same process.
func TestTLSNginx(t *testing.T) {
	testkit.Need(t, "curl")
	p := newPKI(t)
	webCert, webKey := p.cert("web", "web.test", false, "DNS:web.test")
	proxyCert, proxyKey := p.cert("proxy", "proxy.test", true, "IP:127.0.0.1") // RSA to the clients
	root := t.TempDir()
	// nginx's workers run as nobody: the folder must be theirs to read.
	os.Chmod(filepath.Dir(root), 0o755)
	os.Chmod(root, 0o755)
	body := make([]byte, 300000)
	rand.Read(body)
	os.WriteFile(filepath.Join(root, "file.bin"), body, 0o644)
	webPort := nginxTLS(t, webCert, webKey, root)
	dir := t.TempDir()
	live := filepath.Join(dir, "live")
	os.Mkdir(live, 0o755)
	copyFile(t, proxyCert, live+"/cert.pem")
	copyFile(t, proxyKey, live+"/key.pem")
	d := startDaemon(t, "-P", fmt.Sprintf("%d@127.0.0.1", webPort), "--tls-cert", live+"/cert.pem", "--tls-key", live+"/key.pem",
		"--upstream-tls", "--upstream-ca", p.ca, "--upstream-server-name", "web.test", "-L", "-f", dir+"/prot")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--fail", "--cacert", p.ca,
		fmt.Sprintf("https://127.0.0.1:%d/file.bin", d.port)).Output()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("curl got %d bytes, %v; want the %d of the file", len(got), err, len(body))
	}
	before := serialOf(t, d.addr(), p.ca)

	newCert, newKey := p.cert("proxy2", "proxy.test", false, "IP:127.0.0.1")
	copyFile(t, newCert, live+"/cert.pem")
	copyFile(t, newKey, live+"/key.pem")
	d.signal(syscall.SIGHUP)
	d.waitLog(`"reloaded after SIGHUP"`, 1)
	after := serialOf(t, d.addr(), p.ca)
	want, _ := exec.Command("sh", "-c", "openssl x509 -noout -serial -in "+newCert).Output()
	if before == after || after != strings.TrimSpace(string(want)) {
		t.Errorf("serial %s before SIGHUP, %s after; want the new certificate's %s", before, after, strings.TrimSpace(string(want)))
	}
	// A key that does not load keeps the pair in use.
	os.WriteFile(live+"/key.pem", []byte("not a key"), 0o600)
	d.signal(syscall.SIGHUP)
	d.waitLog(`"reload after SIGHUP failed; the previous one stays in use"`, 1)
	if s := serialOf(t, d.addr(), p.ca); s != after {
		t.Errorf("serial %s after a failed reload; want %s still", s, after)
	}
	pid := d.pid()
	d.stop()
	if pid != d.cmd.Process.Pid {
		t.Errorf("the daemon changed process")
	}
	files := dataFiles(t, dir+"/prot")
	if len(files) == 0 {
		t.Fatal("no recording")
	}
	rec, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rec, []byte("GET /file.bin HTTP/1.1")) || !bytes.Contains(rec, body) {
		t.Errorf("the recording lacks the request or the body in clear (%d bytes)", len(rec))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTLSClientCertNginx: --tls-client-ca through the binary. curl without
// a client certificate is refused (tls-failed: nothing dialed, no file);
// with one the CA signed it gets the page, and the connection log names
// the certificate's subject (%C). --upstream-insecure reaches nginx
// without its CA, and each connection's line in the daemon's log says the
// destination went unverified.
func TestTLSClientCertNginx(t *testing.T) {
	testkit.Need(t, "curl")
	p := newPKI(t)
	webCert, webKey := p.cert("web", "web.test", false, "DNS:web.test")
	proxyCert, proxyKey := p.cert("proxy", "proxy.test", false, "IP:127.0.0.1")
	clientCert, clientKey := p.cert("alice", "alice", false, "DNS:alice.test")
	root := t.TempDir()
	// nginx's workers run as nobody: the folder must be theirs to read.
	os.Chmod(filepath.Dir(root), 0o755)
	os.Chmod(root, 0o755)
	page := "hello through mutual TLS\n"
	os.WriteFile(filepath.Join(root, "page.html"), []byte(page), 0o644)
	webPort := nginxTLS(t, webCert, webKey, root)
	dir := t.TempDir()
	d := startDaemon(t, "-P", fmt.Sprintf("%d@127.0.0.1", webPort), "--tls-cert", proxyCert, "--tls-key", proxyKey,
		"--tls-client-ca", p.ca, "--upstream-tls", "--upstream-insecure",
		"-L", "-f", dir+"/prot", "-c", dir+"/conn.log", "-C", "%x %C%n")
	url := fmt.Sprintf("https://127.0.0.1:%d/page.html", d.port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--fail", "--cacert", p.ca, url).CombinedOutput(); err == nil {
		t.Fatalf("curl without a client certificate got through: %q", out)
	}
	got, err := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--fail", "--cacert", p.ca,
		"--cert", clientCert, "--key", clientKey, url).Output()
	if err != nil || string(got) != page {
		t.Fatalf("curl with a client certificate: %q, %v; want %q", got, err, page)
	}
	d.stop()
	connLog, err := os.ReadFile(dir + "/conn.log")
	if err != nil {
		t.Fatal(err)
	}
	if want := "tls-failed -\nok CN=alice\n"; string(connLog) != want {
		t.Errorf("connection log %q; want %q", connLog, want)
	}
	if files := dataFiles(t, dir+"/prot"); len(files) != 1 {
		t.Errorf("data files %v; want one, the admitted connection's", files)
	}
	lines := d.logLines("connection")
	if len(lines) != 2 || strings.Contains(lines[0], " dest=") || strings.Contains(lines[0], "upstream_unverified") ||
		!strings.Contains(lines[1], "upstream_unverified=true") {
		t.Errorf("connection lines %q; want two: the refused one with no destination dialed, the admitted one saying upstream_unverified=true", lines)
	}
}
