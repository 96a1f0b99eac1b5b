package nethttp

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// h2Variants: the oldest Go (HTTP/2 bundled, h2c only through x/net), the
// first with net/http's own h2c, the current, the newest (HTTP/2 moved to
// net/http/internal/http2), and a stripped build (offsets from the table).
var h2Variants = []struct {
	v e2e.Variant
	// nativeH2C: Server.Protocols serves h2c (Go 1.24+); else x/net's
	// h2c.NewHandler in front of the mux does.
	nativeH2C bool
}{
	{e2e.Variant{Name: "go1.21", Toolchain: "go1.21.13"}, false},
	{e2e.Variant{Name: "go1.24", Toolchain: "go1.24.9"}, true},
	{e2e.Variant{Name: "current"}, true},
	{e2e.Variant{Name: "go1.27", Toolchain: "go1.27.3"}, true},
	{e2e.Variant{Name: "stripped", Stripped: true}, true},
}

// h2Tally is the client's own count of requests by method, status and
// protocol version ("2", "1.1"); a request the server reset or dropped
// (a panicking handler) is tallied as 500, what obsd reports for it.
type h2Tally struct {
	mu sync.Mutex
	n  map[[3]string]float64
}

func (c *h2Tally) add(method string, status int, proto string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[[3]string]float64{}
	}
	c.n[[3]string{method, strconv.Itoa(status), proto}]++
}

// h2Server is one server process of TestHTTP2Server with what its
// clients tallied.
type h2Server struct {
	name string
	srv  *e2e.Proc
	want *h2Tally
}

// h2Mix sends the known mix to base ("https://ADDR" or "http://ADDR")
// with c, requiring every answer over wantProto (resp.Proto), and tallies
// it. Part of it runs as concurrent streams on one connection.
func h2Mix(t *testing.T, c *http.Client, base, wantProto string, into *h2Tally) {
	t.Helper()
	proto := strings.TrimPrefix(wantProto, "HTTP/")
	if proto == "2.0" {
		proto = "2"
	}
	do := func(method, path string, body string, wantErr bool) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, rd)
		if err != nil {
			t.Error(err)
			return
		}
		resp, err := c.Do(req)
		if wantErr {
			// A panicking handler: HTTP/2 resets the stream, HTTP/1
			// drops the connection; no response either way.
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s %s answered %d, want no response", method, path, resp.StatusCode)
				return
			}
			into.add(method, 500, proto)
			return
		}
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != wantProto {
			t.Errorf("%s %s answered over %s, want %s", method, path, resp.Proto, wantProto)
		}
		if body != "" && string(got) != body {
			t.Errorf("%s %s echoed %q, want %q", method, path, got, body)
		}
		into.add(method, resp.StatusCode, proto)
	}
	for i := 0; i < 4; i++ {
		do("GET", "/hello", "", false)
	}
	do("GET", "/empty", "", false)
	do("GET", "/status/404", "", false)
	do("GET", "/status/404", "", false)
	do("GET", "/status/503", "", false)
	do("POST", "/echo", "ping", false)
	do("POST", "/echo", "pong", false)
	do("DELETE", "/items/7", "", false)
	// POST: the client would retry a GET that got no answer on a reused
	// HTTP/1 connection, and the server would see it twice.
	do("POST", "/panic", "", true)
	do("POST", "/abort", "", true)
	// Concurrent requests: HTTP/2 multiplexes them on one connection.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do("GET", "/sleep?ms=30", "", false)
		}()
	}
	wg.Wait()
}

// protoSeries sums the duration histogram's counts of one process by
// (method, status, network_protocol_version).
func protoSeries(fams map[string]*dto.MetricFamily, pid int) map[[3]string]float64 {
	out := map[[3]string]float64{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] == instance(pid) {
			out[[3]string{l["http_request_method"], l["http_response_status_code"], l["network_protocol_version"]}] += e2e.Value(m)
		}
	}
	return out
}

// routesOf lists one process's series of one protocol version as "method
// status route count", sorted: the same requests must have the same routes
// whatever the protocol.
func routesOf(fams map[string]*dto.MetricFamily, pid int, proto string) []string {
	var out []string
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] == instance(pid) && l["network_protocol_version"] == proto {
			out = append(out, fmt.Sprintf("%s %s %s %v", l["http_request_method"], l["http_response_status_code"], l["http_route"], e2e.Value(m)))
		}
	}
	sort.Strings(out)
	return out
}

// TestHTTP2Server: HTTP/2 requests to net/http servers, over TLS (ALPN h2)
// and h2c (net/http's own from Go 1.24, x/net's h2c handler before), are
// counted exactly per method, status and network_protocol_version "2",
// with the routes the same requests get over HTTP/1.1, panics included
// (as 500); nothing stays in flight, nothing is lost.
func TestHTTP2Server(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, hv := range h2Variants {
		t.Run(hv.v.Name, func(t *testing.T) {
			bin := builds.HTTPServer(t, hv.v)
			tlsSrv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=h2-tls-" + hv.v.Name}, "-tls")
			var h2cSrv, xnetTLS *e2e.Proc
			pids := []string{"--pid", itoa(tlsSrv.PID())}
			if hv.nativeH2C {
				h2cSrv = e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=h2c-" + hv.v.Name}, "-h2c")
			} else {
				// x/net's server behind h2c.NewHandler, and over TLS
				// through http2.ConfigureServer: it starts requests at
				// runHandler, then calls net/http's serverHandler too.
				xbin := h2cServer(t, hv.v)
				h2cSrv = e2e.Start(t, xbin, []string{"OTEL_SERVICE_NAME=h2c-" + hv.v.Name})
				xnetTLS = e2e.Start(t, xbin, []string{"OTEL_SERVICE_NAME=h2-xnet-" + hv.v.Name}, "-tls")
				pids = append(pids, "--pid", itoa(xnetTLS.PID()))
			}
			pids = append(pids, "--pid", itoa(h2cSrv.PID()))
			o := e2e.StartObsd(t, obsdBin, nil, append(pids, "--traces", "none")...)
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(float64(len(pids)/2)))

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

			var tlsTally, h2cTally, xnetTally h2Tally
			h2Mix(t, h2, "https://"+tlsSrv.First, "HTTP/2.0", &tlsTally)
			h2Mix(t, h1, "https://"+tlsSrv.First, "HTTP/1.1", &tlsTally)
			h2Mix(t, h2c, "http://"+h2cSrv.First, "HTTP/2.0", &h2cTally)
			if xnetTLS != nil {
				h2Mix(t, h2, "https://"+xnetTLS.First, "HTTP/2.0", &xnetTally)
			}
			if t.Failed() {
				t.FailNow()
			}
			total := func(tl *h2Tally) (n float64) {
				for _, v := range tl.n {
					n += v
				}
				return n
			}
			servers := []h2Server{{"TLS", tlsSrv, &tlsTally}, {"h2c", h2cSrv, &h2cTally}}
			if xnetTLS != nil {
				servers = append(servers, h2Server{"x/net TLS", xnetTLS, &xnetTally})
			}
			o.WaitScrape(t, 10*time.Second, "every request", func(f map[string]*dto.MetricFamily) bool {
				for _, s := range servers {
					if requestCount(f, s.srv.PID()) < total(s.want) {
						return false
					}
				}
				return true
			})
			// The HTTP/1 panics end at their connection's close, which
			// follows the client's error at once; wait for nothing in
			// flight, then a moment for anything extra to show.
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
			time.Sleep(300 * time.Millisecond)
			scrape := o.Scrape(t)
			fams := e2e.Families(t, scrape)
			for _, s := range servers {
				got := protoSeries(fams, s.srv.PID())
				t.Logf("%s server: %v", s.name, got)
				if fmt.Sprint(got) != fmt.Sprint(s.want.n) {
					t.Errorf("%s server: series by (method, status, protocol) %v, want the client's %v", s.name, got, s.want.n)
				}
				for m, n := range activeSeries(fams, s.srv.PID()) {
					if n != 0 {
						t.Errorf("%s server: http_server_active_requests{method=%q} = %v, want 0", s.name, m, n)
					}
				}
				if s.srv != tlsSrv {
					if r1, r2 := routesOf(fams, tlsSrv.PID(), "1.1"), routesOf(fams, s.srv.PID(), "2"); fmt.Sprint(r1) != fmt.Sprint(r2) {
						t.Errorf("%s server: routes over HTTP/2 %q, want those over HTTP/1.1 %q", s.name, r2, r1)
					}
				}
			}
			if r1, r2 := routesOf(fams, tlsSrv.PID(), "1.1"), routesOf(fams, tlsSrv.PID(), "2"); fmt.Sprint(r1) != fmt.Sprint(r2) {
				t.Errorf("routes over HTTP/2 %q, want those over HTTP/1.1 %q", r2, r1)
			}
			for _, name := range []string{"obsd_events_lost_total", "obsd_probe_anomalies_total", "obsd_instrumentation_errors_total"} {
				if n := e2e.Sum(fams, name, nil); n != 0 {
					t.Errorf("%s = %v, want 0", name, n)
				}
			}
			// HTTP/1's five, net/http's HTTP/2 handlerDone and panic reset,
			// and x/net's start, handlerDone and panic reset where linked.
			wantLinks := map[int]int{tlsSrv.PID(): 7, h2cSrv.PID(): 7}
			if !hv.nativeH2C {
				wantLinks[h2cSrv.PID()], wantLinks[xnetTLS.PID()] = 10, 10
			}
			for pid, want := range wantLinks {
				if n := e2e.ProbeLinks(t, "http_server", pid); n != want {
					t.Errorf("pid %d: %d links of http_server programs, want %d", pid, n, want)
				}
			}
			e2e.Promtool(t, scrape)
			o.Stop(t)
		})
	}
}
