package playback

import (
	"bytes"
	"io"
	"testing"

	"github.com/ipprot/ipprot/datafile"
)

// BenchmarkReader splits a -M -L recording of 4 KiB blocks held in memory:
// the reader's own cost, without the disk or a decompressor.
func BenchmarkReader(b *testing.B) {
	var content []byte
	block := bytes.Repeat([]byte("SELECT * FROM t WHERE a = '#1';\n"), 128)
	for i := range 2048 {
		content = append(content, datafile.Direction(i%2).Marker()...)
		content = append(content, "1386170322361458\n"...)
		content = append(content, block...)
	}
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(content), datafile.Out)
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 2048 {
			b.Fatalf("got %d blocks; want 2048", n)
		}
	}
}
