package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PgTool finds a PostgreSQL program: on PATH or in the server's bin
// folder, which Debian keeps off PATH. A missing one skips the test, or
// fails it in CI.
func PgTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name); len(m) > 0 {
		sort.Strings(m)
		return m[len(m)-1]
	}
	Need(t, name)
	return ""
}

// StartPostgres runs initdb and the server, on 127.0.0.1:port with trust
// authentication for the user postgres, as that user (PostgreSQL refuses
// root) in a fresh folder, and waits until psql gets an answer. stop ends
// the server and removes the folder; the server also dies with this
// process (Pdeathsig) should stop never be called.
func StartPostgres(initdb, postgres string, port int) (stop func(), err error) {
	pg, err := StartPostgresWith(initdb, postgres, port, PostgresOptions{})
	if err != nil {
		return nil, err
	}
	return pg.Stop, nil
}

// PostgresOptions are what a test's PostgreSQL server may need beyond the
// defaults.
type PostgresOptions struct {
	// CertFile and KeyFile turn on ssl with this certificate; with SSLOnly,
	// pg_hba.conf admits TCP clients only over TLS (hostssl).
	CertFile, KeyFile string
	SSLOnly           bool
	// LogStatements logs every statement the server runs in its log.
	LogStatements bool
}

// Postgres is a running server of a test.
type Postgres struct {
	Port int
	Log  string // its log file
	Stop func()
}

// StartPostgresWith is StartPostgres with opts.
func StartPostgresWith(initdb, postgres string, port int, opts PostgresOptions) (*Postgres, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "ipprot-pg-")
	if err != nil {
		return nil, err
	}
	removeDir := func() { os.RemoveAll(dir) }
	if err := os.Chown(dir, uid, gid); err != nil {
		removeDir()
		return nil, err
	}
	data := filepath.Join(dir, "data")
	out, err := exec.Command("runuser", "-u", "postgres", "--", initdb, "-D", data,
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		removeDir()
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	extra := []string{}
	if opts.CertFile != "" {
		for _, f := range []struct{ from, to string }{{opts.CertFile, "server.crt"}, {opts.KeyFile, "server.key"}} {
			b, err := os.ReadFile(f.from)
			if err == nil {
				err = os.WriteFile(filepath.Join(data, f.to), b, 0o600)
			}
			if err == nil {
				err = os.Chown(filepath.Join(data, f.to), uid, gid)
			}
			if err != nil {
				removeDir()
				return nil, err
			}
		}
		extra = append(extra, "-c", "ssl=on")
		if opts.SSLOnly {
			hba := "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
			if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
				removeDir()
				return nil, err
			}
		}
	}
	if opts.LogStatements {
		extra = append(extra, "-c", "log_statement=all")
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		removeDir()
		return nil, err
	}
	os.Chown(logFile.Name(), uid, gid)
	cmd := exec.Command(postgres, append([]string{"-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		removeDir()
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	stop := func() {
		// A fast shutdown (SIGINT), killed after 20 s.
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		removeDir()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Through the server's own socket folder: TCP may need TLS.
		err := exec.Command("psql", "-X", "-h", dir, "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres", "-c", "SELECT 1").Run()
		if err == nil {
			return &Postgres{Port: port, Log: logFile.Name(), Stop: stop}, nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logFile.Name())
			removeDir()
			return nil, fmt.Errorf("the server ended at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile.Name())
			stop()
			return nil, fmt.Errorf("not ready within 60 s: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
