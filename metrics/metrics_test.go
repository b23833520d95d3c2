package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/ipprot/ipprot/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestExposition: the collector's metrics pass Prometheus's linter and
// read as the proxy's counters; without -u the post-processing metrics
// are zeros, ipprotd_max_connections only with --max-conns.
func TestExposition(t *testing.T) {
	var counters proxy.Counters
	srv := proxy.New(proxy.Config{OutHost: "127.0.0.1", OutPort: 1, Counters: &counters})
	c := newCollector(Sources{Counters: &counters, Server: srv, Build: Build{Version: "1.2.3", Commit: "abc", GoVersion: "go1.26"}})
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v, %v", problems, err)
	}
	want := `
# HELP ipprotd_build_info The running ipprotd: its version, the commit it was built from and the Go version; always 1.
# TYPE ipprotd_build_info gauge
ipprotd_build_info{commit="abc",goversion="go1.26",version="1.2.3"} 1
# HELP ipprotd_post_queue_length Post-processing commands waiting for their turn.
# TYPE ipprotd_post_queue_length gauge
ipprotd_post_queue_length 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "ipprotd_build_info", "ipprotd_post_queue_length", "ipprotd_max_connections"); err != nil {
		t.Error(err)
	}

	rec := httptest.NewRecorder()
	New(Sources{Counters: &counters, Server: srv, MaxConns: 7}).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range []string{`ipprotd_connections_total{outcome="tls-failed"} 0`, `ipprotd_bytes_total{direction="in"} 0`, "ipprotd_max_connections 7", "go_goroutines ", "process_open_fds "} {
		if !strings.Contains(string(body), "\n"+line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}
