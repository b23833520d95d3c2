package audit

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey is a fixed Ed25519 key: Ed25519 signatures are deterministic,
// so signed lines are golden too.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

var (
	plus0100 = time.FixedZone("CET", 3600)
	minus030 = time.FixedZone("NST", -(3*3600 + 1800))
)

func at(loc *time.Location, d time.Duration) time.Time {
	return time.Date(2013, 12, 4, 16, 18, 42, 361458789, loc).Add(d)
}

// entryCases are the entries the golden file holds.
func entryCases() []Entry {
	return []Entry{
		{Seq: 1, Start: at(plus0100, 0), End: at(plus0100, 7900*time.Millisecond),
			Client: netip.MustParseAddrPort("192.0.2.10:50123"), Dest: netip.MustParseAddrPort("198.51.100.7:5432"),
			Outcome: "ok", BytesIn: 1234, BytesOut: 567890,
			File: "/var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz", Size: 4242,
			SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Prev: ZeroHash},
		{Seq: 2, Start: at(time.UTC, 0), End: at(time.UTC, time.Second),
			Client: netip.MustParseAddrPort("[2001:db8::1]:40000"), Outcome: "rejected",
			Prev: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},
		{Seq: 3, Start: at(minus030, 0), End: at(minus030, 10*time.Second),
			Client: netip.MustParseAddrPort("[::1]:60000"), Dest: netip.MustParseAddrPort("[::1]:5432"),
			Outcome: "record-error", BytesIn: 300000,
			File: "/data/a \"quoted\" \\ name\twith\ncontrol\x7f and ünïcödé", Size: 0,
			SHA256:    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			Prev:      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			Recovered: 7},
		{Seq: 18446744073709551615, Start: at(time.UTC, 0), End: at(time.UTC, 24*time.Hour),
			Client: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Dest: netip.MustParseAddrPort("10.0.0.2:65535"),
			Outcome: "aborted", BytesIn: 1<<63 - 1, BytesOut: 1<<63 - 1, File: "/tmp/p", Size: 1<<63 - 1,
			SHA256: ZeroHash, Prev: ZeroHash},
	}
}

// checkGolden compares got with testdata/name.golden, or rewrites it with
// -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\ngot\n%s\nwant\n%s", path, got, want)
	}
}

// TestGolden renders every case unsigned and signed with testKey, and
// reads each line back.
func TestGolden(t *testing.T) {
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		var key ed25519.PrivateKey
		if signed {
			name, key = "signed", testKey
		}
		t.Run(name, func(t *testing.T) {
			var out []byte
			for _, e := range entryCases() {
				start := len(out)
				out = e.AppendLine(out, key)
				line := out[start:]
				got, err := Parse(line)
				if err != nil {
					t.Fatalf("Parse(%s): %v", line, err)
				}
				if again := got.appendForm(nil); !bytes.Equal(again, line) {
					t.Errorf("Parse then write: got %s; want %s", again, line)
				}
				if got.Verify(testKey.Public().(ed25519.PublicKey)) != signed {
					t.Errorf("Verify of %s: got %v; want %v", line, !signed, signed)
				}
				out = append(out, '\n')
			}
			checkGolden(t, name, out)
		})
	}
}

// TestLineByHand states the first line by hand, independently of the
// golden file: the field names and order of SPEC §9.
func TestLineByHand(t *testing.T) {
	e := entryCases()[0]
	want := `{"seq":1,"start":"2013-12-04T16:18:42.361458+01:00","end":"2013-12-04T16:18:50.261458+01:00",` +
		`"client":"192.0.2.10","client_port":50123,"dest":"198.51.100.7","dest_port":5432,"outcome":"ok",` +
		`"bytes_in":1234,"bytes_out":567890,"file":"/var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz",` +
		`"size":4242,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",` +
		`"prev":"0000000000000000000000000000000000000000000000000000000000000000"}`
	if got := string(e.AppendLine(nil, nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	r := entryCases()[1]
	if got := string(r.AppendLine(nil, nil)); !strings.Contains(got, `"dest":null,"dest_port":null,`) ||
		!strings.Contains(got, `"file":null,"size":null,"sha256":null,`) {
		t.Errorf("rejected entry %s: want dest, dest_port, file, size and sha256 null", got)
	}
}

// TestSignatureWithOpenSSL: a key made by openssl signs lines that
// openssl verifies, over the line with "sig":"" as SPEC §9 says.
func TestSignatureWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	keyFile, pubFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	openssl(t, "genpkey", "-algorithm", "ed25519", "-out", keyFile)
	openssl(t, "pkey", "-in", keyFile, "-pubout", "-out", pubFile)
	key, err := LoadPrivateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	e := entryCases()[0]
	line := e.AppendLine(nil, key)
	parsed, err := Parse(line)
	if err != nil || !parsed.Verify(pub) {
		t.Fatalf("Parse: %v, Verify: false; want a valid signature", err)
	}
	msg := filepath.Join(dir, "msg")
	sig := filepath.Join(dir, "sig")
	os.WriteFile(msg, append(e.appendBody(nil), `,"sig":""}`...), 0o644)
	os.WriteFile(sig, parsed.Sig, 0o644)
	openssl(t, "pkeyutl", "-verify", "-pubin", "-inkey", pubFile, "-rawin", "-in", msg, "-sigfile", sig)
	// A signature of another key does not verify.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	if parsed.Verify(other.Public().(ed25519.PublicKey)) {
		t.Errorf("Verify with another key: true; want false")
	}
}

func openssl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
}

// TestLoadKeyErrors: each wrong key file is an error that names the file
// and says what is wrong.
func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	rsaPEM := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
	tests := []struct {
		name, path, want string
		public           bool
	}{
		{"missing", filepath.Join(dir, "none"), "no such file", false},
		{"not PEM", write("text", "hello"), "no PEM block", false},
		{"public for private", write("pub", "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"), `a PEM "PUBLIC KEY", not a "PRIVATE KEY"`, false},
		{"private for public", write("priv", rsaPEM), `a PEM "PRIVATE KEY", not a "PUBLIC KEY"`, true},
		{"bad DER", write("bad", rsaPEM), "bad", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.public {
				_, err = LoadPublicKey(tc.path)
			} else {
				_, err = LoadPrivateKey(tc.path)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("got %v; want an error naming %s and saying %q", err, tc.path, tc.want)
			}
		})
	}
}

// TestParseRejects: every change to a valid line that is not exactly how
// AppendLine writes an entry is refused, with a reason.
func TestParseRejects(t *testing.T) {
	e := entryCases()[0]
	good := string(e.AppendLine(nil, testKey))
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, line, want string }{
		{"empty", "", "empty line"},
		{"not JSON", "hello", "not a JSON object"},
		{"torn", good[:len(good)/2], "not a journal entry"},
		{"trailing space", good + " ", "more after the JSON object"},
		{"two objects", good + good, "more after the JSON object"},
		{"unknown field", strings.Replace(good, `"seq":1,`, `"seq":1,"x":1,`, 1), `unknown field "x"`},
		{"seq missing", strings.Replace(good, `"seq":1,`, ``, 1), "field seq missing"},
		{"seq zero", strings.Replace(good, `"seq":1,`, `"seq":0,`, 1), "seq 0"},
		{"seq string", strings.Replace(good, `"seq":1,`, `"seq":"1",`, 1), "field seq"},
		{"seq repeated", strings.Replace(good, `"seq":1,`, `"seq":1,"seq":1,`, 1), "not written as ipprotd writes"},
		{"seq spaced", strings.Replace(good, `"seq":1,`, `"seq": 1,`, 1), "not written as ipprotd writes"},
		{"seq leading zero", strings.Replace(good, `"seq":1,`, `"seq":01,`, 1), "not a journal entry"},
		{"seq upper case", strings.Replace(good, `"seq":1,`, `"SEQ":1,`, 1), "not written as ipprotd writes"},
		{"time without µs", strings.Replace(good, `16:18:42.361458+01:00`, `16:18:42+01:00`, 1), "not an RFC 3339 time"},
		{"time in UTC spelled +00:00", strings.Replace(good, `16:18:42.361458+01:00`, `15:18:42.361458+00:00`, 1), "not written as ipprotd writes"},
		{"client not an IP", strings.Replace(good, `"192.0.2.10"`, `"host"`, 1), `client "host" is not an IP address`},
		{"dest without port", strings.Replace(good, `"dest_port":5432`, `"dest_port":null`, 1), "dest and dest_port"},
		{"port too big", strings.Replace(good, `"dest_port":5432`, `"dest_port":65536`, 1), "field dest_port"},
		{"negative bytes", strings.Replace(good, `"bytes_in":1234`, `"bytes_in":-1`, 1), "negative byte count"},
		{"file null alone", strings.Replace(good, `"file":"/var/log/conn_rec/prot_2013-12-04_161842_1_192.0.2.10.gz"`, `"file":null`, 1), "file, size and sha256"},
		{"file relative", strings.Replace(good, `"file":"/var`, `"file":"var`, 1), "not an absolute path"},
		{"sha256 upper case", strings.Replace(good, `9f86d081`, `9F86D081`, 1), "64 lowercase hex"},
		{"sha256 short", strings.Replace(good, `9f86d081`, `9f86d08`, 1), "64 lowercase hex"},
		{"prev missing", strings.Replace(good, `"prev":"`+ZeroHash+`",`, ``, 1), "field prev missing"},
		{"prev bad", strings.Replace(good, `"prev":"0`, `"prev":"x`, 1), "prev"},
		{"recovered zero", strings.Replace(good, `,"sig"`, `,"recovered":0,"sig"`, 1), "not a line number"},
		{"sig not base64", strings.Replace(good, `"sig":"`, `"sig":"!`, 1), "sig is not a base64"},
		{"sig short", good[:strings.Index(good, `"sig":"`)+7] + `AAAA"}`, "sig is not a base64"},
		{"sig escaped", strings.Replace(good, `"sig":"`, `"sig":"\u0041`, 1), "sig is not a base64"},
		{"escape spelled otherwise", strings.Replace(good, `"outcome":"ok"`, `"outcome":"\u006fk"`, 1), "not written as ipprotd writes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Parse([]byte(tc.line))
			if err == nil {
				t.Fatalf("Parse(%s) = %+v; want an error saying %q", tc.line, e, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q; want it to say %q", err, tc.want)
			}
		})
	}
}

// TestEditedLineFailsSignature: a field edited in a signed line that
// still parses no longer verifies.
func TestEditedLineFailsSignature(t *testing.T) {
	e := entryCases()[0]
	line := string(e.AppendLine(nil, testKey))
	edited := strings.Replace(line, `"bytes_out":567890`, `"bytes_out":567891`, 1)
	p, err := Parse([]byte(edited))
	if err != nil {
		t.Fatal(err)
	}
	if p.Verify(testKey.Public().(ed25519.PublicKey)) {
		t.Errorf("an edited line verifies")
	}
}

// FuzzParse: no input panics Parse, and whatever it accepts it writes back
// byte for byte.
func FuzzParse(f *testing.F) {
	for _, e := range entryCases() {
		f.Add(e.AppendLine(nil, nil))
		f.Add(e.AppendLine(nil, testKey))
	}
	for _, s := range []string{"", "{", "{}", "null", `{"seq":1}`, "[1]", `{"seq":1e3}`, "{\"file\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := Parse(line)
		if err != nil {
			return
		}
		if again := e.appendForm(nil); !bytes.Equal(again, line) {
			t.Fatalf("accepted %q but writes it as %q", line, again)
		}
		if e.Sig == nil {
			if got := e.AppendLine(nil, nil); !bytes.Equal(got, line) {
				t.Fatalf("accepted %q but AppendLine writes %q", line, got)
			}
		}
	})
}

func ExampleEntry_AppendLine() {
	e := Entry{
		Seq: 1, Start: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC), End: time.Date(2024, 3, 1, 12, 0, 1, 500000000, time.UTC),
		Client: netip.MustParseAddrPort("10.1.2.3:50000"), Dest: netip.MustParseAddrPort("10.1.2.34:5432"),
		Outcome: "ok", BytesIn: 10, BytesOut: 20,
		File: "/var/log/conn_rec/prot_2024-03-01_120000_1_10.1.2.3", Size: 30,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Prev: ZeroHash,
	}
	fmt.Printf("%s\n", e.AppendLine(nil, nil))
	// Output:
	// {"seq":1,"start":"2024-03-01T12:00:00.000000Z","end":"2024-03-01T12:00:01.500000Z","client":"10.1.2.3","client_port":50000,"dest":"10.1.2.34","dest_port":5432,"outcome":"ok","bytes_in":10,"bytes_out":20,"file":"/var/log/conn_rec/prot_2024-03-01_120000_1_10.1.2.3","size":30,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","prev":"0000000000000000000000000000000000000000000000000000000000000000"}
}
