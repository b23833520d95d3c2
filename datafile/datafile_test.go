package datafile

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestFileName(t *testing.T) {
	start := time.Date(2013, 12, 4, 16, 18, 42, 999_000_000, time.FixedZone("CET", 3600))
	tests := []struct {
		name   string
		start  time.Time
		n      uint64
		client string
		c      Compression
		want   string
	}{
		{"ipv4", start, 1, "10.1.2.33", None, "/log/prot_2013-12-04_161842_1_10.1.2.33"},
		{"gzip", start, 17, "10.1.2.33", Gzip, "/log/prot_2013-12-04_161842_17_10.1.2.33.gz"},
		{"bzip2", start, 17, "10.1.2.33", Bzip2, "/log/prot_2013-12-04_161842_17_10.1.2.33.bz2"},
		{"loopback6", start, 2, "::1", None, "/log/prot_2013-12-04_161842_2_--1"},
		{"ipv6", start, 3, "2001:db8::42:1", None, "/log/prot_2013-12-04_161842_3_2001-db8--42-1"},
		{"zone dropped", start, 4, "fe80::1%eth0", None, "/log/prot_2013-12-04_161842_4_fe80--1"},
		{"mapped", start, 5, "::ffff:192.0.2.7", None, "/log/prot_2013-12-04_161842_5_192.0.2.7"},
		{"own location", start.In(time.UTC), 6, "192.0.2.7", None, "/log/prot_2013-12-04_151842_6_192.0.2.7"},
		{"west of utc", start.In(time.FixedZone("", -5*3600)), 7, "192.0.2.7", None, "/log/prot_2013-12-04_101842_7_192.0.2.7"},
		{"big n", start, 18446744073709551615, "192.0.2.7", None, "/log/prot_2013-12-04_161842_18446744073709551615_192.0.2.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FileName("/log/prot", tt.start, tt.n, netip.MustParseAddr(tt.client), tt.c)
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
	if got, want := FileName("p", start, 1, netip.Addr{}, None), "p_2013-12-04_161842_1_unknown"; got != want {
		t.Errorf("invalid address: got %q; want %q", got, want)
	}
}

func TestParseName(t *testing.T) {
	start := time.Date(2013, 12, 4, 16, 18, 42, 0, time.Local)
	for _, tt := range []struct {
		client string
		c      Compression
	}{
		{"10.1.2.33", Gzip}, {"2001:db8::42:1", None}, {"::1", Bzip2},
	} {
		client := netip.MustParseAddr(tt.client)
		path := FileName("/var/log/conn_rec/my_prot", start, 17, client, tt.c)
		t.Run(path, func(t *testing.T) {
			got, err := ParseName(path, time.Local)
			want := Name{Start: start, N: 17, Client: client, Compression: tt.c}
			if err != nil || got != want {
				t.Errorf("got %+v, %v; want %+v", got, err, want)
			}
		})
	}
	for _, bad := range []string{"prot", "prot_2013-12-04_161842_x_10.1.2.33", "prot_2013-12-04_1618_1_10.1.2.33", "prot_2013-12-04_161842_1_10.1.2"} {
		if _, err := ParseName(bad, time.Local); err == nil {
			t.Errorf("ParseName(%q) = nil error; want one", bad)
		}
	}
	if nm, err := ParseName("p_2013-12-04_161842_1_unknown", time.Local); err != nil || nm.Client.IsValid() {
		t.Errorf("unknown client: got %+v, %v; want an invalid address", nm, err)
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
