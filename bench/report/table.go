package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// A sample is one measurement of one round.
type sample struct {
	section, load, target string
	value                 float64
	foreign               float64 // share of the CPUs other processes took meanwhile
}

func readSamples(r io.Reader) ([]sample, error) {
	var ss []sample
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 {
			return nil, fmt.Errorf("line %d: %d fields; want 6", n, len(f))
		}
		v, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		foreign, err := strconv.ParseFloat(f[5], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		ss = append(ss, sample{section: f[0], load: f[1], target: f[2], value: v, foreign: foreign})
	}
	return ss, sc.Err()
}

// A figure is the rounds of one target under one load.
type figure struct {
	section, load, target string
	values                []float64 // sorted
	foreign               []float64 // sorted
}

func (f *figure) median() float64 { return median(f.values) }

// median returns the median of sorted values.
func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// summarise groups the samples into figures, in the order they first
// appear.
func summarise(ss []sample) []*figure {
	var figs []*figure
	index := map[[3]string]*figure{}
	for _, s := range ss {
		k := [3]string{s.section, s.load, s.target}
		f := index[k]
		if f == nil {
			f = &figure{section: s.section, load: s.load, target: s.target}
			index[k] = f
			figs = append(figs, f)
		}
		f.values = append(f.values, s.value)
		f.foreign = append(f.foreign, s.foreign)
	}
	for _, f := range figs {
		slices.Sort(f.values)
		slices.Sort(f.foreign)
	}
	return figs
}

// references are the figures of something other than a proxy, which have
// no ratio to a direct connection or to the best peer.
var references = map[string]bool{"folder-create": true, "dd-disk": true}

// units are the units of figures whose unit is not their section's.
var units = map[string]string{"folder-create": "files/s"}

// peers are the proxies ipprotd is measured against.
var peers = []string{"haproxy-splice", "haproxy", "nginx", "socat"}

// labels are the targets' names in the table.
var labels = map[string]string{
	"direct":           "direct",
	"haproxy-splice":   "HAProxy + splice-auto",
	"haproxy":          "HAProxy",
	"nginx":            "nginx stream",
	"socat":            "socat",
	"naive":            "naive Go",
	"naive-tee-file":   "naive Go tee-to-file",
	"naive-tee-pgzip":  "naive Go tee-to-pgzip",
	"epoll-go":         "epoll Go",
	"ipprotd":          "**ipprotd**",
	"ipprotd-Lf":       "**ipprotd -L -f**",
	"ipprotd-Lfc":      "**ipprotd -L -f -c**",
	"ipprotd-Lz":       "**ipprotd -L -f -z**",
	"ipprotd-Lz1":      "**ipprotd -L -f -z --gzip-level 1**",
	"ipprotd-Lj":       "**ipprotd -L -f -j**",
	"ipprotd-Lf-disk":  "**ipprotd -L -f** into DISK",
	"ipprotd-Lfc-disk": "**ipprotd -L -f -c** into DISK",
	"folder-create":    "DISK folder's own create rate",
	"dd-disk":          "dd bs=1M into DISK",
	"pgzip":            "pgzip alone (all CPUs)",
	"flate":            "flate alone (1 CPU)",
	"bzip2":            "bzip2 -9 alone (1 CPU)",
}

// sections describes each section: its title, unit and whether less is
// better.
var sections = map[string]struct {
	title, unit string
	less        bool
	scale       float64
}{
	"tput":      {"throughput, iperf3 (random data)", "MB/s", false, 1e-6},
	"tputsql":   {"throughput, SQL text (loadgen blast)", "MB/s", false, 1e-6},
	"connrate":  {"connections/s", "req/s", false, 1},
	"keepalive": {"keep-alive requests/s", "req/s", false, 1},
	"idle":      {"RSS per idle connection", "KiB", true, 1},
	"active":    {"RSS per active connection", "KiB", true, 1},
	"codec":     {"compression bound", "MB/s", false, 1e-6},
}

// lookup finds figures by section, load and target.
type lookup map[[3]string]*figure

func (l lookup) median(section, load, target string) (float64, bool) {
	f := l[[3]string{section, load, target}]
	if f == nil {
		return 0, false
	}
	return f.median(), true
}

// bestPeer returns the best peer's median under a load.
func (l lookup) bestPeer(section, load string) (float64, bool) {
	best, found := 0.0, false
	for _, p := range peers {
		v, ok := l.median(section, load, p)
		if !ok {
			continue
		}
		if !found || (sections[section].less && v < best) || (!sections[section].less && v > best) {
			best, found = v, true
		}
	}
	return best, found
}

func render(figs []*figure) string {
	l := lookup{}
	for _, f := range figs {
		l[[3]string{f.section, f.load, f.target}] = f
	}
	var b strings.Builder
	b.WriteString("| figure | load | proxy | median | min–max | rounds | CPU elsewhere | × direct | × best peer | goal | met? |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|--:|---|---|\n")
	for _, f := range figs {
		sec := sections[f.section]
		title := sec.title
		if title == "" {
			title = f.section
		}
		label := labels[f.target]
		if label == "" {
			label = f.target
		}
		m := f.median()
		unit := sec.unit
		if u := units[f.target]; u != "" {
			unit = u
		}
		direct, best := "–", "–"
		if d, ok := l.median(f.section, f.load, "direct"); ok && f.target != "direct" && d > 0 && !references[f.target] {
			direct = ratio(m / d)
		}
		if p, ok := l.bestPeer(f.section, f.load); ok && p > 0 && f.section != "codec" && !references[f.target] {
			best = ratio(m / p)
		}
		goal, met := "", ""
		if g := goalFor(f); g != nil {
			goal = g.text
			met = g.judge(l, f)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s %s | %s–%s | %d | %.0f %% | %s | %s | %s | %s |\n",
			title, f.load, label, num(m*sec.scale), unit,
			num(f.values[0]*sec.scale), num(f.values[len(f.values)-1]*sec.scale),
			len(f.values), 100*median(f.foreign), direct, best, goal, met)
	}
	return b.String()
}

// ratio writes a ratio with two decimals, three below 0.1.
func ratio(r float64) string {
	if r < 0.1 {
		return strconv.FormatFloat(r, 'f', 3, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// num writes a figure with about three significant digits.
func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
