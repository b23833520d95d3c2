package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// createSize is what each created file gets: about what a short recorded
// connection writes (a request and a small page, with -M stamps).
const createSize = 200

// create measures a folder's own rate of creating files the way a
// recording proxy does: c goroutines, each creating a file with
// open(O_CREAT|O_EXCL), writing createSize bytes to it and closing it, in
// a loop for d. It prints files per second. The files are made in the
// folder itself, not in a folder of its own (which the file system may
// place elsewhere on the disk), and removed after the timing.
func create(args []string) error {
	fs := flag.NewFlagSet("create", flag.ExitOnError)
	dir := fs.String("dir", os.TempDir(), "the folder to create files in")
	conc := fs.Int("c", 50, "goroutines creating at once")
	d := fs.Duration("t", 3*time.Second, "create for this long")
	n := fs.Int("n", 0, "if not 0, create this many files instead, however long it takes")
	fs.Parse(args)
	prefix := filepath.Join(*dir, fmt.Sprintf("loadgen-create-%d-", os.Getpid()))
	rate, made, err := createRate(prefix, *conc, *d, int64(*n))
	removeCreated(prefix, made)
	if err != nil {
		return err
	}
	fmt.Printf("%.0f\n", rate)
	return nil
}

// removeCreated removes the files createRate made.
func removeCreated(prefix string, made []int) {
	for g, n := range made {
		for i := range n {
			os.Remove(createName(prefix, g, i))
		}
	}
}

func createName(prefix string, g, i int) string {
	return prefix + strconv.Itoa(g) + "-" + strconv.Itoa(i)
}

// createRate creates files named by prefix from conc goroutines for d, or
// n files if n is not 0, and returns the files made per second and how
// many each goroutine tried.
func createRate(prefix string, conc int, d time.Duration, n int64) (float64, []int, error) {
	var made, left atomic.Int64
	left.Store(n)
	var firstErr atomic.Value
	var stop atomic.Bool
	data := make([]byte, createSize)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	tries := make([]int, conc)
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if n > 0 && left.Add(-1) < 0 {
					return
				}
				tries[g] = i + 1
				if err := createOne(createName(prefix, g, i), data); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				made.Add(1)
			}
		}()
	}
	if n == 0 {
		time.Sleep(d)
		stop.Store(true)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := firstErr.Load().(error); ok {
		return 0, tries, err
	}
	return float64(made.Load()) / elapsed.Seconds(), tries, nil
}

// createOne creates path, writes data to it with one write(2) and closes
// it.
func createOne(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	n, err := unix.Write(fd, data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("wrote %d of %d bytes", n, len(data))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
