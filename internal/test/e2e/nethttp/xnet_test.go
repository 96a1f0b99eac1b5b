package nethttp

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/offsets"
	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// xnetModule is the module whose HTTP/2 server these tests build in.
const xnetModule = "golang.org/x/net"

// xnetServer builds testdata/httpserver with -tags h2c (x/net's
// h2c.NewHandler on plain HTTP, http2.ConfigureServer on TLS) against
// x/net at version.
func xnetServer(t *testing.T, v e2e.Variant, version string) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "httpserver-xnet-" + version,
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "httpserver"),
		Toolchain: v.Toolchain,
		Flavour:   v.Flavour(),
		Tags:      []string{"h2c"},
		Require:   []string{xnetModule + " " + version},
	})
}

// requireTableKnows fails the test unless the embedded offsets table lists
// (want) or does not list (!want) x/net at version: what the test shows
// depends on it.
func requireTableKnows(t *testing.T, version string, want bool) {
	t.Helper()
	table, err := offsets.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := table.Known(xnetModule, version); got != want {
		t.Fatalf("the offsets table knows %s %s: %v, this test needs %v", xnetModule, version, got, want)
	}
}

// TestHTTP2XNetStripped: x/net's HTTP/2 server in a binary without DWARF
// (-s -w) takes its offsets from the table (offsetgen's x/net entries):
// h2c through h2c.NewHandler and h2 over TLS through
// http2.ConfigureServer are counted exactly per method, status and
// network_protocol_version "2", with the routes of the same requests over
// HTTP/1.1, panics as 500; nothing is lost (read_failed included), nothing
// stays in flight. The newest listed x/net with the Go at hand, and the
// oldest listed with the oldest Go as a stripped PIE.
func TestHTTP2XNetStripped(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	variants := []struct {
		v    e2e.Variant
		xnet string
	}{
		{e2e.Variant{Name: "newest-stripped", Stripped: true}, "v0.62.0"},
		{e2e.Variant{Name: "oldest-go1.21-stripped-pie", Toolchain: "go1.21.13", Stripped: true, PIE: true}, "v0.32.0"},
	}
	for _, xv := range variants {
		t.Run(xv.v.Name+"-"+xv.xnet, func(t *testing.T) {
			requireTableKnows(t, xv.xnet, true)
			bin := xnetServer(t, xv.v, xv.xnet)
			h2cSrv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=xnet-h2c-" + xv.v.Name})
			tlsSrv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=xnet-tls-" + xv.v.Name}, "-tls")
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(h2cSrv.PID()), "--pid", itoa(tlsSrv.PID()), "--traces", "none")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(2))

			tlsCfg := func() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
			h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
			h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg(),
				TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 10 * time.Second}
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			h2c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
			t.Cleanup(func() {
				for _, c := range []*http.Client{h2, h1, h2c} {
					c.CloseIdleConnections()
				}
			})

			var tlsTally, h2cTally h2Tally
			h2Mix(t, h2, "https://"+tlsSrv.First, "HTTP/2.0", &tlsTally)
			h2Mix(t, h1, "https://"+tlsSrv.First, "HTTP/1.1", &tlsTally)
			h2Mix(t, h2c, "http://"+h2cSrv.First, "HTTP/2.0", &h2cTally)
			if t.Failed() {
				t.FailNow()
			}
			servers := []h2Server{{"x/net TLS", tlsSrv, &tlsTally}, {"x/net h2c", h2cSrv, &h2cTally}}
			total := func(tl *h2Tally) (n float64) {
				for _, v := range tl.n {
					n += v
				}
				return n
			}
			o.WaitScrape(t, 10*time.Second, "every request", func(f map[string]*dto.MetricFamily) bool {
				for _, s := range servers {
					if requestCount(f, s.srv.PID()) < total(s.want) {
						return false
					}
				}
				return true
			})
			o.WaitScrape(t, 5*time.Second, "no request in flight", func(f map[string]*dto.MetricFamily) bool {
				for _, s := range servers {
					for _, n := range activeSeries(f, s.srv.PID()) {
						if n != 0 {
							return false
						}
					}
				}
				return true
			})
			time.Sleep(300 * time.Millisecond) // for anything extra to show
			scrape := o.Scrape(t)
			fams := e2e.Families(t, scrape)
			for _, s := range servers {
				got := protoSeries(fams, s.srv.PID())
				t.Logf("%s server: %v", s.name, got)
				if fmt.Sprint(got) != fmt.Sprint(s.want.n) {
					t.Errorf("%s server: series by (method, status, protocol) %v, want the client's %v", s.name, got, s.want.n)
				}
				if r1, r2 := routesOf(fams, tlsSrv.PID(), "1.1"), routesOf(fams, s.srv.PID(), "2"); fmt.Sprint(r1) != fmt.Sprint(r2) {
					t.Errorf("%s server: routes over HTTP/2 %q, want those over HTTP/1.1 %q", s.name, r2, r1)
				}
				for m, n := range activeSeries(fams, s.srv.PID()) {
					if n != 0 {
						t.Errorf("%s server: http_server_active_requests{method=%q} = %v, want 0", s.name, m, n)
					}
				}
				// HTTP/1's five, net/http's bundled HTTP/2 end and panic
				// reset, x/net's start, handlerDone and panic reset.
				if n := e2e.ProbeLinks(t, "http_server", s.srv.PID()); n != 10 {
					t.Errorf("%s server: %d links of http_server programs, want 10", s.name, n)
				}
			}
			for _, name := range []string{"obsd_events_lost_total", "obsd_probe_anomalies_total", "obsd_instrumentation_errors_total"} {
				if n := e2e.Sum(fams, name, nil); n != 0 {
					t.Errorf("%s = %v, want 0", name, n)
				}
			}
			e2e.Promtool(t, scrape)
			o.Stop(t)
		})
	}
}

// TestHTTP2XNetUnlisted: a stripped binary whose x/net release the offsets
// table does not list (v0.31.0, a month older than its oldest) is still
// instrumented, not refused: its HTTP/1.1 requests are counted exactly, and
// each of its x/net HTTP/2 requests counts as lost (read_failed) rather than
// being read with another release's offsets.
func TestHTTP2XNetUnlisted(t *testing.T) {
	e2e.RequireRoot(t)
	const version = "v0.31.0"
	requireTableKnows(t, version, false)
	obsdBin := builds.Obsd(t)
	bin := xnetServer(t, e2e.Variant{Name: "stripped", Stripped: true}, version)
	srv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=xnet-unlisted"})
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	h1 := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		h1.CloseIdleConnections()
		h2c.CloseIdleConnections()
	})
	get := func(c *http.Client, wantMajor int) {
		t.Helper()
		resp, err := c.Get("http://" + srv.First + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != wantMajor {
			t.Fatalf("GET /hello answered %d over %s, want 200 over HTTP/%d", resp.StatusCode, resp.Proto, wantMajor)
		}
	}
	const n1, n2 = 9, 7
	for i := 0; i < n1; i++ {
		get(h1, 1)
	}
	for i := 0; i < n2; i++ {
		get(h2c, 2)
	}
	readFailed := map[string]string{"probe": "net/http/server", "reason": "read_failed"}
	o.WaitScrape(t, 10*time.Second, "every request", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) >= n1 && e2e.Sum(f, "obsd_events_lost_total", readFailed) >= n2
	})
	time.Sleep(300 * time.Millisecond) // for anything extra to show
	scrape := o.Scrape(t)
	fams := e2e.Families(t, scrape)
	want := map[[3]string]float64{{"GET", "200", "1.1"}: n1}
	if got := protoSeries(fams, srv.PID()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("series by (method, status, protocol) %v, want the client's HTTP/1.1 ones %v", got, want)
	}
	if n := e2e.Sum(fams, "obsd_events_lost_total", readFailed); n != n2 {
		t.Errorf("obsd_events_lost_total{reason=\"read_failed\"} = %v, want the %d HTTP/2 requests", n, n2)
	}
	if n := e2e.Sum(fams, "obsd_events_lost_total", nil); n != n2 {
		t.Errorf("obsd_events_lost_total = %v, want %d (read_failed only)", n, n2)
	}
	if n := e2e.Sum(fams, "obsd_instrumentation_errors_total", nil); n != 0 {
		t.Errorf("obsd_instrumentation_errors_total = %v, want 0: an unlisted x/net must not refuse the probe", n)
	}
	for m, n := range activeSeries(fams, srv.PID()) {
		if n != 0 {
			t.Errorf("http_server_active_requests{method=%q} = %v, want 0", m, n)
		}
	}
	e2e.Promtool(t, scrape)
	o.Stop(t)
}
