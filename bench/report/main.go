// Command report turns the samples of a benchmark run into its markdown
// table: the median of the rounds of each figure, its ratio to a direct
// connection and to the best peer (HAProxy with or without splice, nginx
// stream, socat), and whether ipprotd meets the goal of the "Performance"
// issue. It also reads iperf3's JSON output, so the run needs no jq.
//
//	report table -samples samples.tsv -header machine.md -out results/latest.md
//	report iperf3 out.json    # bytes/s received
//
// A sample is a tab-separated line: section, load, target, round, value.
// Throughputs are in bytes/s, rates in requests/s, memory in KiB per
// connection; codec-alone samples have section "codec", the payload as load
// and the codec as target.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: report table|iperf3 ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "table":
		err = table(os.Args[2:])
	case "iperf3":
		err = iperf3(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "report %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func table(args []string) error {
	fs := flag.NewFlagSet("table", flag.ExitOnError)
	samples := fs.String("samples", "", "the samples file")
	header := fs.String("header", "", "markdown to put before the table (the machine's description)")
	out := fs.String("out", "", "also write the result to this file")
	fs.Parse(args)
	f, err := os.Open(*samples)
	if err != nil {
		return err
	}
	defer f.Close()
	ss, err := readSamples(f)
	if err != nil {
		return fmt.Errorf("%s: %w", *samples, err)
	}
	var head []byte
	if *header != "" {
		if head, err = os.ReadFile(*header); err != nil {
			return err
		}
	}
	md := string(head) + render(summarise(ss))
	fmt.Print(md)
	if *out != "" {
		return os.WriteFile(*out, []byte(md), 0o644)
	}
	return nil
}

// iperf3 prints the bytes/s the receiver counted in an iperf3 -J output.
func iperf3(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one file")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var v struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if v.Error != "" {
		return fmt.Errorf("%s: iperf3: %s", args[0], v.Error)
	}
	if v.End.SumReceived.BitsPerSecond <= 0 {
		return fmt.Errorf("%s: no sum_received", args[0])
	}
	fmt.Printf("%.0f\n", v.End.SumReceived.BitsPerSecond/8)
	return nil
}
