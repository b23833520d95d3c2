// Command loadgen is the benchmark's own load and measuring tool: a
// backend server, a throughput client with a compressible payload, a
// holder of many idle or trickling connections, the codec-alone bound and
// a memory reader. Every subcommand prints one figure (or a "ready" line)
// on stdout, errors on stderr.
//
//	loadgen serve -listen 127.0.0.1:17003
//	loadgen blast -addr 127.0.0.1:17003 -dir up -payload sql -t 3s -streams 1   # bytes/s
//	loadgen hold -addr 127.0.0.1:17003 -n 9000                                  # "ready OK FAILED", then holds until SIGTERM
//	loadgen hold -addr 127.0.0.1:17003 -n 1000 -down 10m                        # the same, clients that never read what the server sends
//	loadgen conns -addr 127.0.0.1:17003 -n 12000 -c 16                          # short echo connections: "OK FAILED"
//	loadgen codec -codec pgzip -payload sql -t 2s                              # bytes/s of input
//	loadgen codec -codec flate -level 1 -payload sql                           # and the ratio on stderr
//	loadgen create -dir /tmp -c 50 -t 3s                                        # files/s a folder takes: create, write 200 bytes, close
//	loadgen create -dir /tmp -c 1 -n 5000                                       # exactly 5000 files (then removed, as always)
//	loadgen rss PID...                                                          # KiB, the PIDs and all their descendants
//	loadgen quiet -max 10s PID...                                               # returns once they use no CPU
//	loadgen cpu PID...                                                          # busy ticks of the machine, of the PIDs' trees
//
// The server reads one line from each connection: "UP" (it reads to EOF and
// answers with the byte count), "DOWN <payload> <millis>" (it sends that
// payload for that long, then closes) or "ECHO" (it echoes until EOF).
package main

import (
	"fmt"
	"os"
)

func main() {
	cmds := map[string]func(args []string) error{
		"serve":  serve,
		"blast":  blast,
		"hold":   hold,
		"conns":  conns,
		"codec":  codec,
		"create": create,
		"rss":    rss,
		"quiet":  quiet,
		"cpu":    cpu,
	}
	if len(os.Args) < 2 || cmds[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: loadgen serve|blast|hold|conns|codec|create|rss|quiet|cpu [flags]")
		os.Exit(2)
	}
	if err := cmds[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
