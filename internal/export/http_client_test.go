package export

import "testing"

func TestServerTarget(t *testing.T) {
	for _, tc := range []struct{ scheme, host, addr, port string }{
		{"http", "example.com", "example.com", "80"},
		{"https", "Example.COM", "example.com", "443"},
		{"http", "127.0.0.1:8080", "127.0.0.1", "8080"},
		{"https", "[::1]:8443", "::1", "8443"},
		{"https", "[::1]", "::1", "443"},
		{"ftp", "host", "host", ""},
	} {
		addr, port := ServerTarget(tc.scheme, tc.host)
		if addr != tc.addr || port != tc.port {
			t.Errorf("ServerTarget(%q, %q) = %q, %q; want %q, %q", tc.scheme, tc.host, addr, port, tc.addr, tc.port)
		}
	}
}

func TestProtocolVersion(t *testing.T) {
	for _, tc := range []struct {
		major, minor int
		want         string
	}{{1, 1, "1.1"}, {1, 0, "1.0"}, {2, 0, "2"}} {
		if got := ProtocolVersion(tc.major, tc.minor); got != tc.want {
			t.Errorf("ProtocolVersion(%d, %d) = %q, want %q", tc.major, tc.minor, got, tc.want)
		}
	}
}
