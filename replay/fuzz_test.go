package replay

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipprot/ipprot/datafile"
)

// FuzzReplay: any bytes as a recording, replayed raw and as a PostgreSQL
// session to servers that answer every message as PostgreSQL would,
// never panic the replayer and never leave it waiting.
func FuzzReplay(f *testing.F) {
	dir := f.TempDir()
	for i, blocks := range [][]recBlock{shopSession, httpBlocks} {
		b, err := os.ReadFile(recordFile(f, dir, uint64(i+1), datafile.None, both, blocks))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("#848367#1\n\x00\x00\x00\x08\x04\xd2\x16\x2f#948366#2\nN"))
	pg := startFakePG(f, map[string]answer{"COPY t FROM STDIN": {copyIn: true}, "SELECT * FROM missing": {code: "42P01"}})
	sink := startSinkTB(f, []byte("HTTP/1.1 200 OK\r\n\r\n"))
	f.Fuzz(func(t *testing.T, rec []byte) {
		path := filepath.Join(t.TempDir(), "prot")
		if err := os.WriteFile(path, rec, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*Cmd{
			{Files: []string{path}, Postgres: pg.conninfo(), Wait: 50 * time.Millisecond, Format: "text"},
			{Files: []string{path}, To: hostPort(sink.addr()), Wait: 50 * time.Millisecond, Format: "json"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c.run(ctx, io.Discard, io.Discard)
			err := ctx.Err()
			cancel()
			if err != nil {
				t.Fatalf("the replay (--postgres %q, --to %q) of %q did not end within 20 s", c.Postgres, c.To, rec)
			}
		}
	})
}
