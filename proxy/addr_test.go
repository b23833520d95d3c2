package proxy

import (
	"net"
	"strconv"
	"testing"
)

func TestParsePortAt(t *testing.T) {
	tests := []struct {
		in   string
		want PortAt
		err  string
	}{
		{in: "8080", want: PortAt{Port: 8080}},
		{in: "1", want: PortAt{Port: 1}},
		{in: "65535", want: PortAt{Port: 65535}},
		{in: "7777@10.1.2.33", want: PortAt{Port: 7777, Host: "10.1.2.33"}},
		{in: "5432@::1", want: PortAt{Port: 5432, Host: "::1"}},
		{in: "5432@[::1]", want: PortAt{Port: 5432, Host: "::1"}},
		{in: "5432@fe80::1%eth0", want: PortAt{Port: 5432, Host: "fe80::1%eth0"}},
		{in: "5678@db-1.example.org", want: PortAt{Port: 5678, Host: "db-1.example.org"}},
		{in: "5678@localhost", want: PortAt{Port: 5678, Host: "localhost"}},
		{in: "0", err: "port 0 is outside 1-65535"},
		{in: "65536", err: "port 65536 is outside 1-65535"},
		{in: "99999999999", err: `port "99999999999" is not a number`},
		{in: "-1", err: `port "-1" is not a number`},
		{in: "+80", err: `port "+80" is not a number`},
		{in: "http", err: `port "http" is not a number`},
		{in: "", err: "missing port number"},
		{in: "@10.0.0.1", err: "missing port number"},
		{in: "80@", err: "missing host after @"},
		{in: "80@[::1", err: `host "[::1" lacks its closing bracket`},
		{in: "80@[10.0.0.1]", err: `host "[10.0.0.1]" is not an IPv6 address`},
		{in: "80@10.0.0.1:90", err: `host "10.0.0.1:90" is not an IPv6 address (a port goes before the @)`},
		{in: "80@bad host", err: `host "bad host" is neither an IP address nor a host name`},
		{in: "80@-bad.example", err: `host "-bad.example" is neither an IP address nor a host name`},
		{in: "80@a..b", err: `host "a..b" is neither an IP address nor a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePortAt(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("got %+v, %v; want error %s", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzParsePortAt: an accepted value has a port in range and a host that
// makes a dial address net.SplitHostPort gives back unchanged.
func FuzzParsePortAt(f *testing.F) {
	for _, s := range []string{"8080", "5432@::1", "5432@[::1]", "7777@10.1.2.33", "80@db.example", "0", "80@", "@", "80@[", "80@a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortAt(s)
		if err != nil {
			return
		}
		if p.Port == 0 {
			t.Fatalf("ParsePortAt(%q) accepted port 0", s)
		}
		host, port, err := net.SplitHostPort(JoinHostPort(p.Host, p.Port))
		if err != nil || host != p.Host || port != strconv.Itoa(int(p.Port)) {
			t.Fatalf("ParsePortAt(%q) = %+v does not round-trip as a dial address: %q %q %v", s, p, host, port, err)
		}
	})
}
