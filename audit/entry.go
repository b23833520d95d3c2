package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unicode/utf8"
)

// TimeLayout is the layout of start and end: RFC 3339 with microseconds.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// ZeroHash is the prev of the first entry of a chain: 64 zeros.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Entry is one line of the journal, one connection: the fields of SPEC §9
// in their order.
type Entry struct {
	Seq        uint64
	Start, End time.Time
	Client     netip.AddrPort // null where invalid
	Dest       netip.AddrPort // null where no destination was dialed
	Outcome    string
	BytesIn    int64
	BytesOut   int64
	File       string // absolute path; "": null, and so are size and sha256
	Size       int64
	SHA256     string // lowercase hex
	Prev       string // SHA-256 (lowercase hex) of the previous line without its newline
	Recovered  int64  // the number of a torn line this entry follows; 0: none, the field is absent
	Sig        []byte // Ed25519 signature; nil: unsigned, the field is absent
}

// AppendLine appends the entry's line without its newline to dst: unsigned
// if key is nil, else signed with key (Sig is set). The bytes are exactly
// those Parse accepts back, so that a line's hash depends only on the
// entry.
func (e *Entry) AppendLine(dst []byte, key ed25519.PrivateKey) []byte {
	start := len(dst)
	dst = e.appendBody(dst)
	if key == nil {
		e.Sig = nil
		return append(dst, '}')
	}
	body := len(dst)
	dst = append(dst, `,"sig":""}`...)
	e.Sig = ed25519.Sign(key, dst[start:])
	dst = append(dst[:body], `,"sig":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, e.Sig)
	return append(dst, `"}`...)
}

// appendBody appends every field but sig, without the closing brace.
func (e *Entry) appendBody(dst []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = append(dst, `,"start":"`...)
	dst = e.Start.AppendFormat(dst, TimeLayout)
	dst = append(dst, `","end":"`...)
	dst = e.End.AppendFormat(dst, TimeLayout)
	dst = append(dst, `","client":`...)
	dst = appendAddr(dst, e.Client)
	dst = append(dst, `,"client_port":`...)
	dst = appendPort(dst, e.Client)
	dst = append(dst, `,"dest":`...)
	dst = appendAddr(dst, e.Dest)
	dst = append(dst, `,"dest_port":`...)
	dst = appendPort(dst, e.Dest)
	dst = append(dst, `,"outcome":`...)
	dst = appendString(dst, e.Outcome)
	dst = append(dst, `,"bytes_in":`...)
	dst = strconv.AppendInt(dst, e.BytesIn, 10)
	dst = append(dst, `,"bytes_out":`...)
	dst = strconv.AppendInt(dst, e.BytesOut, 10)
	if e.File == "" {
		dst = append(dst, `,"file":null,"size":null,"sha256":null`...)
	} else {
		dst = append(dst, `,"file":`...)
		dst = appendString(dst, e.File)
		dst = append(dst, `,"size":`...)
		dst = strconv.AppendInt(dst, e.Size, 10)
		dst = append(dst, `,"sha256":`...)
		dst = appendString(dst, e.SHA256)
	}
	dst = append(dst, `,"prev":`...)
	dst = appendString(dst, e.Prev)
	if e.Recovered != 0 {
		dst = append(dst, `,"recovered":`...)
		dst = strconv.AppendInt(dst, e.Recovered, 10)
	}
	return dst
}

func appendAddr(dst []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = ap.Addr().AppendTo(dst)
	return append(dst, '"')
}

func appendPort(dst []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(dst, "null"...)
	}
	return strconv.AppendUint(dst, uint64(ap.Port()), 10)
}

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, everything else as it is. Bytes that are not UTF-8
// become U+FFFD, as encoding/json does; the daemon refuses data file
// paths that are not UTF-8 with --audit-log, so none reaches a journal.
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// LineHash returns the SHA-256 of a line (without its newline) in
// lowercase hex: the next entry's prev.
func LineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// wire is a line as encoding/json reads it; a nil pointer is a field that
// is null or absent.
type wire struct {
	Seq        *uint64 `json:"seq"`
	Start      *string `json:"start"`
	End        *string `json:"end"`
	Client     *string `json:"client"`
	ClientPort *uint16 `json:"client_port"`
	Dest       *string `json:"dest"`
	DestPort   *uint16 `json:"dest_port"`
	Outcome    *string `json:"outcome"`
	BytesIn    *int64  `json:"bytes_in"`
	BytesOut   *int64  `json:"bytes_out"`
	File       *string `json:"file"`
	Size       *int64  `json:"size"`
	SHA256     *string `json:"sha256"`
	Prev       *string `json:"prev"`
	Recovered  *int64  `json:"recovered"`
	Sig        *string `json:"sig"`
}

// Parse reads one line of the journal (without its newline). It accepts
// exactly the bytes AppendLine writes: a line with the right values but
// fields reordered, repeated, spaced or escaped otherwise is an error, so
// that a line's hash and signature leave no room for a second spelling.
// Parse does not check the signature (Verify does).
func Parse(line []byte) (*Entry, error) {
	if len(line) == 0 {
		return nil, errors.New("empty line")
	}
	if line[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var w wire
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return nil, fmt.Errorf("not a journal entry: %v", jsonError(err))
	}
	if d.More() || d.InputOffset() != int64(len(line)) {
		return nil, errors.New("not a journal entry: more after the JSON object")
	}
	e, err := w.entry()
	if err != nil {
		return nil, err
	}
	if again := e.appendForm(nil); !bytes.Equal(again, line) {
		return nil, errors.New("not written as ipprotd writes entries (fields reordered, repeated, spaced or escaped otherwise)")
	}
	return e, nil
}

// jsonError shortens encoding/json's messages.
func jsonError(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("field %s: %s is not %s", ute.Field, ute.Value, ute.Type)
	}
	return err.Error()
}

// entry checks the values of w and turns them into an Entry.
func (w *wire) entry() (*Entry, error) {
	e := &Entry{}
	missing := func(name string) error { return fmt.Errorf("field %s missing or null", name) }
	var err error
	switch {
	case w.Seq == nil:
		return nil, missing("seq")
	case w.Start == nil:
		return nil, missing("start")
	case w.End == nil:
		return nil, missing("end")
	case w.Outcome == nil:
		return nil, missing("outcome")
	case w.BytesIn == nil:
		return nil, missing("bytes_in")
	case w.BytesOut == nil:
		return nil, missing("bytes_out")
	case w.Prev == nil:
		return nil, missing("prev")
	}
	e.Seq, e.Outcome, e.BytesIn, e.BytesOut, e.Prev = *w.Seq, *w.Outcome, *w.BytesIn, *w.BytesOut, *w.Prev
	if e.Seq == 0 {
		return nil, errors.New("seq 0: entries count from 1")
	}
	if e.Start, err = time.Parse(TimeLayout, *w.Start); err != nil {
		return nil, fmt.Errorf("start %q is not an RFC 3339 time with microseconds", *w.Start)
	}
	if e.End, err = time.Parse(TimeLayout, *w.End); err != nil {
		return nil, fmt.Errorf("end %q is not an RFC 3339 time with microseconds", *w.End)
	}
	if e.Client, err = addrPort("client", w.Client, w.ClientPort); err != nil {
		return nil, err
	}
	if e.Dest, err = addrPort("dest", w.Dest, w.DestPort); err != nil {
		return nil, err
	}
	if e.BytesIn < 0 || e.BytesOut < 0 {
		return nil, errors.New("negative byte count")
	}
	if (w.File == nil) != (w.Size == nil) || (w.File == nil) != (w.SHA256 == nil) {
		return nil, errors.New("file, size and sha256 must be all null or all set")
	}
	if w.File != nil {
		e.File, e.Size, e.SHA256 = *w.File, *w.Size, *w.SHA256
		switch {
		case e.File == "" || e.File[0] != '/':
			return nil, fmt.Errorf("file %q is not an absolute path", e.File)
		case e.Size < 0:
			return nil, fmt.Errorf("negative size %d", e.Size)
		case !isHash(e.SHA256):
			return nil, fmt.Errorf("sha256 %q is not 64 lowercase hex digits", e.SHA256)
		}
	}
	if !isHash(e.Prev) {
		return nil, fmt.Errorf("prev %q is not 64 lowercase hex digits", e.Prev)
	}
	if w.Recovered != nil {
		if *w.Recovered < 1 {
			return nil, fmt.Errorf("recovered %d is not a line number", *w.Recovered)
		}
		e.Recovered = *w.Recovered
	}
	if w.Sig != nil {
		sig, err := base64.StdEncoding.Strict().DecodeString(*w.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, errors.New("sig is not a base64 Ed25519 signature")
		}
		e.Sig = sig
	}
	return e, nil
}

func addrPort(name string, addr *string, port *uint16) (netip.AddrPort, error) {
	if (addr == nil) != (port == nil) {
		return netip.AddrPort{}, fmt.Errorf("%s and %s_port must be both null or both set", name, name)
	}
	if addr == nil {
		return netip.AddrPort{}, nil
	}
	a, err := netip.ParseAddr(*addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q is not an IP address", name, *addr)
	}
	return netip.AddrPortFrom(a, *port), nil
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// appendForm appends the line as AppendLine wrote it, signature included
// as it is.
func (e *Entry) appendForm(dst []byte) []byte {
	dst = e.appendBody(dst)
	if e.Sig == nil {
		return append(dst, '}')
	}
	dst = append(dst, `,"sig":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, e.Sig)
	return append(dst, `"}`...)
}

// Verify reports whether the entry, as Parse read it, carries a valid
// signature of pub. An unsigned entry does not.
func (e *Entry) Verify(pub ed25519.PublicKey) bool {
	if e.Sig == nil {
		return false
	}
	msg := append(e.appendBody(nil), `,"sig":""}`...)
	return ed25519.Verify(pub, msg, e.Sig)
}

// LoadPrivateKey reads the Ed25519 private key of --audit-key: PKCS#8 in
// PEM, as `openssl genpkey -algorithm ed25519` writes it.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY", "openssl genpkey -algorithm ed25519")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key (openssl genpkey -algorithm ed25519 makes one)", path, k)
	}
	return key, nil
}

// LoadPublicKey reads the Ed25519 public key of verify --pubkey: PKIX in
// PEM, as `openssl pkey -pubout` writes it.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY", "openssl pkey -in KEY -pubout")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key", path, k)
	}
	return key, nil
}

// readPEM returns the bytes of the first PEM block of path, which must be
// of type typ; how says how to make such a file.
func readPEM(path, typ, how string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%s: no PEM block (%s makes the file)", path, how)
	case block.Type != typ:
		return nil, fmt.Errorf("%s: a PEM %q, not a %q (%s makes one)", path, block.Type, typ, how)
	}
	return block.Bytes, nil
}
