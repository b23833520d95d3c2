package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// pieceSize is the size of one write of a payload; both payloads are a
// multiple of it.
const pieceSize = 64 << 10

// payloads names the data a blast sends and a codec compresses:
//   - sql: 4 MiB of varied SQL statements, as a database proxy records
//     (gzip shrinks it about fivefold);
//   - random: 128 KiB of random bytes sent over and over, as iperf3 does by
//     default (incompressible to gzip, whose window is 32 KiB).
var payloads = map[string]func() []byte{
	"sql":    sqlPayload,
	"random": randomPayload,
}

func payload(name string) ([]byte, error) {
	f := payloads[name]
	if f == nil {
		return nil, fmt.Errorf("unknown payload %q (want sql or random)", name)
	}
	return f(), nil
}

func randomPayload() []byte {
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	b := make([]byte, 128<<10)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sqlPayload() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"north", "south", "east", "west", "central", "harbour", "airport", "station"}
	var b strings.Builder
	for b.Len() < 4<<20 {
		id, cust, qty := r.IntN(9_000_000)+1_000_000, r.IntN(90_000)+10_000, r.IntN(20)+1
		price := float64(r.IntN(100_000)) / 100
		ts := fmt.Sprintf("2024-%02d-%02d %02d:%02d:%02d", r.IntN(12)+1, r.IntN(28)+1, r.IntN(24), r.IntN(60), r.IntN(60))
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "INSERT INTO orders (id, customer_id, sku, qty, price, created_at) VALUES (%d, %d, 'SKU-%05d', %d, %.2f, '%s');\n",
				id, cust, r.IntN(50_000), qty, price, ts)
		case 1:
			fmt.Fprintf(&b, "SELECT o.id, o.qty, o.price, c.name, c.branch FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.customer_id = %d AND o.created_at > '%s' ORDER BY o.created_at DESC LIMIT %d;\n",
				cust, ts, qty*10)
		case 2:
			fmt.Fprintf(&b, "UPDATE accounts SET balance = balance - %.2f, updated_at = '%s' WHERE id = %d AND branch = '%s';\n",
				price, ts, cust, names[r.IntN(len(names))])
		default:
			fmt.Fprintf(&b, "%d|%d|SKU-%05d|%d|%.2f|%s|%s\n", id, cust, r.IntN(50_000), qty, price, ts, names[r.IntN(len(names))])
		}
	}
	s := b.String()
	return []byte(s[:len(s)/pieceSize*pieceSize])
}
