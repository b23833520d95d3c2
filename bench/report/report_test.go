package main

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSamples = `connrate	wrk Connection: close	direct	1	10000	0.01
connrate	wrk Connection: close	nginx	1	5000	0.02
connrate	wrk Connection: close	haproxy	1	6000	0.00
connrate	wrk Connection: close	ipprotd	1	4000	0.05
connrate	wrk Connection: close	direct	2	12000	0.01
connrate	wrk Connection: close	nginx	2	5400	0.02
connrate	wrk Connection: close	haproxy	2	5000	0.00
connrate	wrk Connection: close	ipprotd	2	6000	0.07
connrate	wrk Connection: close	ipprotd	3	5600	0.00
idle	9000 idle	haproxy	1	3.5	0
idle	9000 idle	nginx	1	9.5	0
idle	9000 idle	ipprotd	1	7.9	0
codec	sql	pgzip	1	100000000	0
tputsql	c→s 1 stream	direct	1	1000000000	0
tputsql	c→s 1 stream	ipprotd-Lz	1	85000000	0
`

func TestRender(t *testing.T) {
	ss, err := readSamples(strings.NewReader(testSamples))
	if err != nil {
		t.Fatal(err)
	}
	got := render(summarise(ss))
	// Medians: direct 11000, nginx 5200, haproxy 5500 (the best peer),
	// ipprotd 5600 over three rounds.
	for _, want := range []string{
		"| connections/s | wrk Connection: close | direct | 11000 req/s | 10000–12000 | 2 | 1 % | – | 2.00× |  |  |\n",
		"| connections/s | wrk Connection: close | nginx stream | 5200 req/s | 5000–5400 | 2 | 2 % | 0.47× | 0.95× |  |  |\n",
		"| connections/s | wrk Connection: close | **ipprotd** | 5600 req/s | 4000–6000 | 3 | 5 % | 0.51× | 1.02× | ≥ 1.0× nginx stream | **yes** (1.08×) |\n",
		"| RSS per idle connection | 9000 idle | nginx stream | 9.50 KiB | 9.50–9.50 | 1 | 0 % | – | 2.71× |  |  |\n",
		"| RSS per idle connection | 9000 idle | **ipprotd** | 7.90 KiB | 7.90–7.90 | 1 | 0 % | – | 2.26× | ≤ 3 KiB | **no** (7.90 KiB) |\n",
		"| compression bound | sql | pgzip alone (all CPUs) | 100 MB/s | 100–100 | 1 | 0 % | – | – |  |  |\n",
		"| throughput, SQL text (loadgen blast) | c→s 1 stream | **ipprotd -L -f -z** | 85.0 MB/s | 85.0–85.0 | 1 | 0 % | 0.085× | – | ≥ 0.9× pgzip alone | **no** (0.85×) |\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("got table\n%s\nwant it to hold the row\n%s", got, want)
		}
	}
}

func TestReadSamplesErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"five fields", "tput\tload\tdirect\t1\t5\n", "line 1: 5 fields; want 6"},
		{"bad value", "tput\tload\tdirect\t1\tfast\t0\n", `line 1: strconv.ParseFloat: parsing "fast": invalid syntax`},
		{"bad share", "\ntput\tload\tdirect\t1\t5\tx\n", `line 2: strconv.ParseFloat: parsing "x": invalid syntax`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readSamples(strings.NewReader(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got error %v; want %s", err, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{1, 2, 10}, 2},
		{[]float64{1, 2, 4, 10}, 3},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v): got %v; want %v", tt.in, got, tt.want)
		}
	}
}

// TestDiskGoals checks the goals read against the least of two figures
// and against dd, and that reference figures get no ratios of their own.
func TestDiskGoals(t *testing.T) {
	const samples = `connrate	wrk Connection: close	direct	1	10000	0
connrate	wrk Connection: close	nginx	1	5000	0
connrate	wrk Connection: close	folder-create	1	1500	0
connrate	wrk Connection: close	ipprotd-Lfc-disk	1	1300	0
connrate	wrk Connection: close	folder-create	1	1700	0
tput	c→s 1 stream	direct	1	2000000000	0
tput	c→s 1 stream	ipprotd-Lf-disk	1	800000000	0
tput	c→s 1 stream	dd-disk	1	1000000000	0
`
	ss, err := readSamples(strings.NewReader(samples))
	if err != nil {
		t.Fatal(err)
	}
	got := render(summarise(ss))
	// The folder's median is 1600, below nginx's 5000: 1300/1600.
	for _, want := range []string{
		"| connections/s | wrk Connection: close | DISK folder's own create rate | 1600 files/s | 1500–1700 | 2 | 0 % | – | – |  |  |\n",
		"| connections/s | wrk Connection: close | **ipprotd -L -f -c** into DISK | 1300 req/s | 1300–1300 | 1 | 0 % | 0.13× | 0.26× | ≥ 0.8× min(nginx stream, the folder's create rate) | **yes** (0.81×) |\n",
		"| throughput, iperf3 (random data) | c→s 1 stream | dd bs=1M into DISK | 1000 MB/s | 1000–1000 | 1 | 0 % | – | – |  |  |\n",
		"| throughput, iperf3 (random data) | c→s 1 stream | **ipprotd -L -f** into DISK | 800 MB/s | 800–800 | 1 | 0 % | 0.40× | – | ≥ 0.9× dd bs=1M | **no** (0.80×) |\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("got table\n%s\nwant it to hold the row\n%s", got, want)
		}
	}
}
