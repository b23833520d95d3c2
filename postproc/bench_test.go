package postproc

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRuns measures a whole run of a command that does nothing: fork,
// exec of the shell, the group sweep and the reaping. enqueue-ns/op is what
// the caller of Enqueue waits for, with the queue never full.
func BenchmarkRuns(b *testing.B) {
	for _, jobs := range []int{1, 4} {
		b.Run("jobs="+strconv.Itoa(jobs), func(b *testing.B) {
			dir := b.TempDir()
			r, err := New(Config{Command: "true", Jobs: jobs, Queue: b.N + 1,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			f := facts(b, 1, filepath.Join(dir, "data"))
			var enqueue time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				r.Enqueue(f)
				enqueue += time.Since(t0)
			}
			if err := r.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(enqueue.Nanoseconds())/float64(b.N), "enqueue-ns/op")
		})
	}
}
