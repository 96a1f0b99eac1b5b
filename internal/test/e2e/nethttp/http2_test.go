package nethttp

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestHTTP2NotMiscounted: HTTP/2 is not instrumented yet. Its requests must
// pass untouched and leave no trace (no counts, no stuck in-flight state),
// while HTTP/1.1 requests to the same TLS server are counted exactly.
func TestHTTP2NotMiscounted(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil, "-tls")
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	// The server's own throwaway certificate, on loopback. Each transport
	// gets its own config: the HTTP/2 one adds "h2" to its NextProtos.
	tlsCfg := func() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg(),
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 10 * time.Second}
	fetch := func(c *http.Client, n int, proto string) {
		t.Helper()
		for i := 0; i < n; i++ {
			resp, err := c.Get("https://" + srv.First + "/hello")
			if err != nil {
				t.Fatalf("request %d over %s: %v", i, proto, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != proto || string(body) != "hello\n" {
				t.Fatalf("got %s %q, want %s hello", resp.Proto, body, proto)
			}
		}
	}
	fetch(h2, 20, "HTTP/2.0")
	fetch(h1, 11, "HTTP/1.1")
	o.WaitScrape(t, 5*time.Second, "11 HTTP/1.1 requests", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) >= 11
	})
	fetch(h2, 20, "HTTP/2.0")
	time.Sleep(300 * time.Millisecond)
	fams := e2e.Families(t, o.Scrape(t))
	if n := requestCount(fams, srv.PID()); n != 11 {
		t.Errorf("counted %v requests, want the 11 over HTTP/1.1", n)
	}
	for _, name := range []string{"http_server_active_requests", "obsd_probe_anomalies_total", "obsd_events_lost_total"} {
		if n := e2e.Sum(fams, name, nil); n != 0 {
			t.Errorf("%s = %v, want 0", name, n)
		}
	}
	o.Stop(t)
}
