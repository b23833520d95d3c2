// Package metrics serves ipprotd's Prometheus metrics (--metrics-listen).
// What goes in are the daemon's own counters, read only when Prometheus
// scrapes: the proxy's (proxy.Counters, Server.Active, Server.Parked),
// the post-processing runner's (postproc.Runner.Counts) and the build's.
// What comes out is an http.Handler of the text exposition format, with
// Go's runtime and process collectors beside ipprotd's own.
//
//	reg := metrics.New(metrics.Sources{Counters: &counters, Server: srv, Build: build})
//	http.Handle("/metrics", reg.Handler())
//
// The proxy knows nothing of Prometheus: it adds to atomic counters, and
// this package's collector reads them at each scrape.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ipprot/ipprot/datafile"
	"github.com/ipprot/ipprot/postproc"
	"github.com/ipprot/ipprot/proxy"
)

// Build describes the running binary, for ipprotd_build_info.
type Build struct {
	Version, Commit, GoVersion string
}

// Sources are what the metrics are read from. Counters and Server must be
// set; Post is nil without a post-processing command.
type Sources struct {
	Counters *proxy.Counters
	Server   *proxy.Server
	Post     *postproc.Runner
	// MaxConns is --max-conns; ipprotd_max_connections is only exported
	// where it is not zero.
	MaxConns int
	Build    Build
}

// Registry holds ipprotd's collectors. It is safe for concurrent use.
type Registry struct {
	reg *prometheus.Registry
}

// New returns a Registry of the metrics of src and Go's runtime and
// process collectors.
func New(src Sources) *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newCollector(src),
	)
	return &Registry{reg: reg}
}

// Handler returns the handler of /metrics.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// collector reads the Sources at each scrape.
type collector struct {
	src Sources

	connections, bytes, recErrs, active, parked, maxConns *prometheus.Desc
	postRuns, postQueue, build                            *prometheus.Desc
}

func newCollector(src Sources) *collector {
	return &collector{
		src: src,
		connections: prometheus.NewDesc("ipprotd_connections_total",
			"Connections ended, by outcome (as the connection log's %x).", []string{"outcome"}, nil),
		bytes: prometheus.NewDesc("ipprotd_bytes_total",
			"Bytes received from the clients (in) and written to them (out), counted as they move.", []string{"direction"}, nil),
		recErrs: prometheus.NewDesc("ipprotd_recording_errors_total",
			"Sessions whose recording failed: ended as record-error, or forwarded on unrecorded (--on-record-error=continue).", nil, nil),
		active: prometheus.NewDesc("ipprotd_active_sessions",
			"Connections open now, from accept to their end.", nil, nil),
		parked: prometheus.NewDesc("ipprotd_parked_directions",
			"Directions of open connections that are idle and hold no goroutine (two per connection idle both ways).", nil, nil),
		maxConns: prometheus.NewDesc("ipprotd_max_connections",
			"The --max-conns limit: connections beyond it are rejected.", nil, nil),
		postRuns: prometheus.NewDesc("ipprotd_post_runs_total",
			"Post-processing commands by result: ok (exit 0), failed (non-zero, signal, timeout), not-run (queue full, could not start, given up at stop).", []string{"result"}, nil),
		postQueue: prometheus.NewDesc("ipprotd_post_queue_length",
			"Post-processing commands waiting for their turn.", nil, nil),
		build: prometheus.NewDesc("ipprotd_build_info",
			"The running ipprotd: its version, the commit it was built from and the Go version; always 1.", []string{"version", "commit", "goversion"}, nil),
	}
}

// Describe sends the descriptions of every metric the collector may send.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connections, c.bytes, c.recErrs, c.active, c.parked, c.maxConns, c.postRuns, c.postQueue, c.build} {
		ch <- d
	}
}

// Collect reads the sources' counters now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src
	for _, o := range proxy.Outcomes() {
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.CounterValue, float64(s.Counters.Connections(o)), o.String())
	}
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Counters.Bytes(datafile.In)), "in")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Counters.Bytes(datafile.Out)), "out")
	ch <- prometheus.MustNewConstMetric(c.recErrs, prometheus.CounterValue, float64(s.Counters.RecordingErrors()))
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.Server.Active()))
	ch <- prometheus.MustNewConstMetric(c.parked, prometheus.GaugeValue, float64(s.Server.Parked()))
	if s.MaxConns > 0 {
		ch <- prometheus.MustNewConstMetric(c.maxConns, prometheus.GaugeValue, float64(s.MaxConns))
	}
	var pc postproc.Counts
	if s.Post != nil {
		pc = s.Post.Counts()
	}
	// Exported without -u too (as zeros), so that rules and dashboards
	// need no special case.
	ch <- prometheus.MustNewConstMetric(c.postRuns, prometheus.CounterValue, float64(pc.OK), "ok")
	ch <- prometheus.MustNewConstMetric(c.postRuns, prometheus.CounterValue, float64(pc.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.postRuns, prometheus.CounterValue, float64(pc.NotRun), "not-run")
	ch <- prometheus.MustNewConstMetric(c.postQueue, prometheus.GaugeValue, float64(pc.Queued))
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, s.Build.Version, s.Build.Commit, s.Build.GoVersion)
}
