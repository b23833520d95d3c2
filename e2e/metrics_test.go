package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipprot/ipprot/internal/testkit"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scraper keeps no connection open between scrapes: none outlives a test.
var scraper = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// scrape reads http://addr/metrics and parses it as Prometheus text.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := scraper.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q; want Prometheus text", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the metric name whose labels include
// labels (name=value pairs), failing where there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// TestMetrics: /metrics of the built binary parses as Prometheus text and
// its values are what was sent: connections by outcome, bytes both ways,
// post-processing runs, the build, Go's own collectors. Without
// --metrics-listen the daemon listens on its port alone.
func TestMetrics(t *testing.T) {
	testkit.Need(t, "ss")
	up := startUpstream(t, echoHandler)
	dir := t.TempDir()
	clog := filepath.Join(dir, "conn.log")
	mport := testkit.FreePort(t)
	maddr := fmt.Sprintf("127.0.0.1:%d", mport)
	d := startDaemon(t, "-P", up.out(), "-L", "-f", filepath.Join(dir, "prot"), "-c", clog, "-u", "true",
		"-r", "127.0.0.1", "--max-conns", "50", "--metrics-listen", maddr)
	if l := d.logLines("listening")[0]; !strings.Contains(l, " metrics=http://"+maddr+"/metrics") {
		t.Errorf("listening line %q; want the metrics address", l)
	}

	var sent int
	for _, n := range []int{1000, 2000, 3000} {
		echoOnce(t, d.addr(), bytes.Repeat([]byte{'x'}, n))
		sent += n
	}
	if c, err := dialFrom("127.0.0.2", d.addr()); err == nil {
		io.ReadAll(c)
		c.Close()
	}
	waitLines(t, clog, 4)
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams = scrape(t, maddr)
		if value(t, fams, "ipprotd_post_runs_total", "result", "ok") == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ipprotd_connections_total", []string{"outcome", "ok"}, 3},
		{"ipprotd_connections_total", []string{"outcome", "rejected"}, 1},
		{"ipprotd_connections_total", []string{"outcome", "connect-failed"}, 0},
		{"ipprotd_connections_total", []string{"outcome", "record-error"}, 0},
		{"ipprotd_connections_total", []string{"outcome", "aborted"}, 0},
		{"ipprotd_connections_total", []string{"outcome", "tls-failed"}, 0},
		{"ipprotd_bytes_total", []string{"direction", "in"}, float64(sent)},
		{"ipprotd_bytes_total", []string{"direction", "out"}, float64(sent)},
		{"ipprotd_recording_errors_total", nil, 0},
		{"ipprotd_active_sessions", nil, 0},
		{"ipprotd_parked_directions", nil, 0},
		{"ipprotd_max_connections", nil, 50},
		{"ipprotd_post_runs_total", []string{"result", "ok"}, 3},
		{"ipprotd_post_runs_total", []string{"result", "failed"}, 0},
		{"ipprotd_post_runs_total", []string{"result", "not-run"}, 0},
		{"ipprotd_post_queue_length", nil, 0},
	}
	for _, c := range checks {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_open_fds", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s: Go's collectors are missing", name)
		}
	}
	// The build: the same number as -v and the start line.
	out, err := exec.Command(binary, "-v").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^ipprotd (\d+\.\d+\.\d+) \(commit (\S+), (go\S+)\)\n$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("-v printed %q; want ipprotd X.Y.Z (commit C, goV)", out)
	}
	if v := value(t, fams, "ipprotd_build_info", "version", m[1], "commit", m[2], "goversion", m[3]); v != 1 {
		t.Errorf("ipprotd_build_info = %v; want 1", v)
	}
	if l := d.logLines("listening")[0]; !strings.Contains(l, " version="+m[1]+" ") {
		t.Errorf("listening line %q; want version=%s", l, m[1])
	}

	// A session that is open counts as active, and once idle its two
	// directions are parked.
	c, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	checkEchoLine(t, c)
	waitFor(t, "an idle session parked both ways", func() bool {
		f := scrape(t, maddr)
		return value(t, f, "ipprotd_active_sessions") == 1 && value(t, f, "ipprotd_parked_directions") == 2
	})
	c.Close()

	// SIGTERM: the metrics port closes with the proxy's.
	d.signal(syscall.SIGTERM)
	if code := d.exit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if _, err := scraper.Get("http://" + maddr + "/metrics"); err == nil {
		t.Errorf("metrics still served after the daemon ended")
	}

	// Without --metrics-listen, one listening socket: the proxy's.
	d2 := startDaemon(t, "-P", up.out())
	ss, err := exec.Command("ss", "-Hltnp").Output()
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, l := range strings.Split(string(ss), "\n") {
		if strings.Contains(l, fmt.Sprintf("pid=%d,", d2.cmd.Process.Pid)) {
			mine = append(mine, l)
		}
	}
	if len(mine) != 1 || !strings.Contains(mine[0], d2.addr()) {
		t.Errorf("the daemon listens on:\n%s\nwant only %s", strings.Join(mine, "\n"), d2.addr())
	}
}

// checkEchoLine sends a line through c and reads its echo.
func checkEchoLine(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		t.Fatalf("echo %q, %v", b, err)
	}
}

// TestMetricsListenFails: a metrics port that cannot be bound stops the
// start with exit status 1, leaving nothing behind.
func TestMetricsListenFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	port := testkit.FreePort(t)
	cmd := exec.Command(binary, "-p", fmt.Sprintf("%d@127.0.0.1", port), "-c", filepath.Join(dir, "logs", "conn.log"),
		"--metrics-listen", busy.Addr().String())
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "ipprotd: --metrics-listen: listen tcp "+busy.Addr().String()+": bind: address already in use") {
		t.Errorf("exit %v, output %q; want status 1 naming --metrics-listen", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs")); !os.IsNotExist(err) {
		t.Errorf("the log folder was made: %v", err)
	}
}
