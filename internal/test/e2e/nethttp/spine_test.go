package nethttp

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// spineVariants are the Go releases whose net/http the ends of a request
// are checked on: the oldest supported, the first with patterns, one with
// the concrete-redirect Pattern, the current and the newest.
var spineVariants = []e2e.Variant{
	{Name: "go1.21", Toolchain: "go1.21.13"},
	{Name: "go1.22", Toolchain: "go1.22.12"},
	{Name: "go1.24", Toolchain: "go1.24.9"},
	{Name: "current"},
	{Name: "go1.27", Toolchain: "go1.27.3"},
}

// series sums the duration histogram's counts of one process by (method,
// status, route).
func series(fams map[string]*dto.MetricFamily, pid int) map[[3]string]float64 {
	out := map[[3]string]float64{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != instance(pid) {
			continue
		}
		out[[3]string{l["http_request_method"], l["http_response_status_code"], l["http_route"]}] += e2e.Value(m)
	}
	return out
}

// activeSeries returns the gauge's series of one process by method (empty
// when the gauge has none).
func activeSeries(fams map[string]*dto.MetricFamily, pid int) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams["http_server_active_requests"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] == instance(pid) {
			out[l["http_request_method"]] += e2e.Value(m)
		}
	}
	return out
}

// rawRequest sends one request on a new connection and returns the status
// line's code, with the connection still open for what follows.
func rawRequest(t *testing.T, addr, req string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body) // the connection's next answer follows
	}
	return c, br, resp.StatusCode
}

// TestRequestsThatNeverFinish: requests that never reach finishRequest (a
// hijacked connection, a panicking handler, http.ErrAbortHandler) and one
// net/http answers itself (417 for an unsupported Expect) are each counted
// once with the status the client saw (101, 417) or, for a panic, 500; the
// active gauge follows requests in flight and returns to 0 while staying
// exported; nothing is lost.
func TestRequestsThatNeverFinish(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range spineVariants {
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), []string{"OTEL_SERVICE_NAME=ends-" + v.Name})
			addr := srv.First
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

			// The client's own tally, by the status it saw; a panic is a
			// connection dropped without an answer.
			tally := map[string]int{}
			var tallyMu sync.Mutex // get also runs on goroutines, below
			count := func(k string) {
				tallyMu.Lock()
				tally[k]++
				tallyMu.Unlock()
			}
			client := &http.Client{Timeout: 10 * time.Second}
			get := func(path string, header ...string) {
				t.Helper()
				req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
				for i := 0; i+1 < len(header); i += 2 {
					req.Header.Set(header[i], header[i+1])
				}
				resp, err := client.Do(req)
				if err != nil {
					count(path + " dropped")
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				count(fmt.Sprintf("%s %d", path, resp.StatusCode))
			}
			for i := 0; i < 20; i++ {
				get("/hello")
			}
			for i := 0; i < 5; i++ {
				get("/hello", "Expect", "x-obsd-unsupported")
			}
			for i := 0; i < 12; i++ {
				get("/panic")
			}
			for i := 0; i < 8; i++ {
				get("/abort")
			}
			for i := 0; i < 15; i++ {
				c, br, code := rawRequest(t, addr, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
				count(fmt.Sprintf("/upgrade %d", code))
				io.WriteString(c, "ping\n")
				if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
					t.Errorf("upgraded connection echoed %q, %v", line, err)
				}
				c.Close()
			}
			wantTally := map[string]int{"/hello 200": 20, "/hello 417": 5, "/panic dropped": 12, "/abort dropped": 8, "/upgrade 101": 15}
			if fmt.Sprint(tally) != fmt.Sprint(wantTally) {
				t.Fatalf("the server answered %v, want %v", tally, wantTally)
			}

			want := map[[3]string]float64{
				{"GET", "200", "/hello"}:   20,
				{"GET", "417", "/hello"}:   5,
				{"GET", "500", "/panic"}:   12,
				{"GET", "500", "/abort"}:   8,
				{"GET", "101", "/upgrade"}: 15,
			}
			scrape := o.WaitScrape(t, 10*time.Second, "60 requests", func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= 60
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			scrape = o.Scrape(t)
			fams := e2e.Families(t, scrape)
			if got := series(fams, srv.PID()); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("series %v, want %v", got, want)
			}
			for _, name := range []string{"obsd_events_lost_total", "obsd_probe_anomalies_total"} {
				if n := e2e.Sum(fams, name, nil); n != 0 {
					t.Errorf("%s = %v, want 0", name, n)
				}
			}
			e2e.Promtool(t, scrape)

			// Three requests in flight, then none: the gauge says so, and
			// stays exported at 0.
			var wg sync.WaitGroup
			for i := 0; i < 3; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					get("/sleep?ms=1500")
				}()
			}
			o.WaitScrape(t, 5*time.Second, "3 requests in flight", func(f map[string]*dto.MetricFamily) bool {
				return activeSeries(f, srv.PID())["GET"] == 3
			})
			wg.Wait()
			fams = e2e.Families(t, o.Scrape(t))
			if got := activeSeries(fams, srv.PID()); fmt.Sprint(got) != "map[GET:0]" {
				t.Errorf("http_server_active_requests = %v once all were answered, want map[GET:0]", got)
			}
			// HTTP/1's five (see TestRequestsCountedExactly) and HTTP/2's
			// handlerDone and panic reset.
			if n := e2e.ProbeLinks(t, "http_server", srv.PID()); n != 7 {
				t.Errorf("%d links of http_server programs, want 7", n)
			}
		})
	}
}

// h2cServer builds testdata/httpserver with -tags h2c (x/net's h2c handler
// in front of the mux) in a module of its own requiring golang.org/x/net,
// at a version every supported toolchain builds.
func h2cServer(t *testing.T, v e2e.Variant) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "httpserver-h2c",
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "httpserver"),
		Toolchain: v.Toolchain,
		Flavour:   v.Flavour(),
		Tags:      []string{"h2c"},
		Require:   []string{"golang.org/x/net v0.30.0"},
	})
}

// TestH2CNoPhantoms: behind x/net's h2c.NewHandler, the "Upgrade: h2c"
// request and the HTTP/2 preface ("PRI *", prior knowledge) are hijacked
// and never reach finishRequest. The preface is no request: not counted.
// An upgrade is counted as 101 at the hijack, and again with its real
// answer, which x/net's server gives as HTTP/2 stream 1 (labelled with the
// HTTP/1.1 request's protocol, which x/net keeps). The HTTP/2 requests that
// follow the preface are counted as "2", and nothing stays in flight.
func TestH2CNoPhantoms(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range spineVariants {
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, h2cServer(t, v), []string{"OTEL_SERVICE_NAME=h2c-" + v.Name})
			addr := srv.First
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

			const upgrades, priorConns, perConn, plain = 8, 4, 5, 10
			for i := 0; i < upgrades; i++ {
				c, _, code := rawRequest(t, addr, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
					"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
				if code != http.StatusSwitchingProtocols {
					t.Fatalf("h2c upgrade answered %d, want 101", code)
				}
				c.Close()
			}
			for i := 0; i < priorConns; i++ {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
				for j := 0; j < perConn; j++ {
					resp, err := c.Get("http://" + addr + "/hello")
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.ProtoMajor != 2 {
						t.Fatalf("prior-knowledge request answered over %s", resp.Proto)
					}
				}
				c.CloseIdleConnections()
			}
			get(t, "http://"+addr+"/hello", plain) // HTTP/1.1 through h2c's handler

			want := map[[3]string]float64{{"GET", "101", "1.1"}: upgrades, {"GET", "200", "1.1"}: upgrades + plain,
				{"GET", "200", "2"}: priorConns * perConn}
			o.WaitScrape(t, 10*time.Second, "the requests", func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= 2*upgrades+priorConns*perConn+plain
			})
			time.Sleep(300 * time.Millisecond)
			fams := e2e.Families(t, o.Scrape(t))
			got := protoSeries(fams, srv.PID())
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("series by method and status %v, want %v", got, want)
			}
			// The connections are closed by now; give the server a moment
			// to notice, then nothing may be in flight.
			o.WaitScrape(t, 5*time.Second, "no request in flight", func(f map[string]*dto.MetricFamily) bool {
				a := activeSeries(f, srv.PID())
				return len(a) > 0 && a["GET"] == 0
			})
			for _, name := range []string{"obsd_events_lost_total", "obsd_probe_anomalies_total"} {
				if n := e2e.Sum(fams, name, nil); n != 0 {
					t.Errorf("%s = %v, want 0", name, n)
				}
			}
		})
	}
}

// metricsEntries counts the entries of every in-kernel metrics map on the
// node (the kernel keeps 15 characters of the name) whose key belongs to
// pid: only this test's own target counts.
func metricsEntries(t *testing.T, pid int) int {
	t.Helper()
	n := 0
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := m.Info()
		if err != nil || info.Name != "http_server_met" {
			m.Close()
			continue
		}
		key := make([]byte, m.KeySize())
		it := m.Iterate()
		var vals [][]byte
		for it.Next(&key, &vals) {
			if binary.NativeEndian.Uint32(key) == uint32(pid) {
				n++
			}
		}
		m.Close()
	}
	return n
}

// TestInKernelKeysCanonical: 300 connections each sending a request with an
// unknown method of its own and then GET /hello are 2 series, and 2 entries
// of the in-kernel map, whatever bytes the slot held before (keys holding
// the method's bytes made 600).
func TestInKernelKeysCanonical(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range []e2e.Variant{{Name: "current"}, {Name: "go1.22", Toolchain: "go1.22.12"}} {
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), nil)
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
			const conns = 300
			for i := 0; i < conns; i++ {
				// A different method each time, so that neither its bytes nor
				// what they leave in the slot for the GET can be the same.
				method := fmt.Sprintf("X%07d", i)
				c, br, code := rawRequest(t, srv.First, method+" /hello HTTP/1.1\r\nHost: x\r\n\r\n")
				if code != 200 {
					t.Fatalf("%s answered %d", method, code)
				}
				io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET on the same connection: %v", err)
				}
				c.Close()
			}
			want := map[[3]string]float64{{"GET", "200", "/hello"}: conns, {"_OTHER", "200", "/hello"}: conns}
			scrape := o.WaitScrape(t, 10*time.Second, "the requests", func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= 2*conns
			})
			if got := series(e2e.Families(t, scrape), srv.PID()); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("series %v, want %v", got, want)
			}
			if n := metricsEntries(t, srv.PID()); n != 2 {
				t.Errorf("%d in-kernel map entries for 2 series, want 2", n)
			}
		})
	}
}

// TestSeriesBudget: one process cannot take more than its budget of the
// node-wide in-kernel map; past it, its requests are sent as records and
// still counted exactly.
func TestSeriesBudget(t *testing.T) {
	e2e.RequireRoot(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	o := e2e.StartObsd(t, builds.Obsd(t), nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
	// 400 statuses times 6 methods: 2,400 series, more than the budget
	// (bpf/net/http/server.BudgetSeries, 2,048).
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}
	// In-kernel series are allocated as they come; when many arrive at once
	// an insert can fail for a moment (counted as metrics_map_full, sent as
	// a record). Passes repeat until the budget is reached.
	client := &http.Client{Timeout: 10 * time.Second}
	sent := 0
	for pass := 0; pass < 4 && (pass == 0 || metricsEntries(t, srv.PID()) < 2048); pass++ {
		for code := 200; code < 600; code++ {
			for _, m := range methods {
				req, _ := http.NewRequest(m, fmt.Sprintf("http://%s/status/%d", srv.First, code), nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != code {
					t.Fatalf("%s /status/%d answered %d", m, code, resp.StatusCode)
				}
				sent++
			}
		}
	}
	const nSeries = 400 * 6
	scrape := o.WaitScrape(t, 10*time.Second, "the requests", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) >= float64(sent)
	})
	fams := e2e.Families(t, scrape)
	if n := requestCount(fams, srv.PID()); n != float64(sent) {
		t.Errorf("counted %v requests, want %d", n, sent)
	}
	if n := len(series(fams, srv.PID())); n != nSeries {
		t.Errorf("%d series, want %d", n, nSeries)
	}
	const budget = 2048
	if n := metricsEntries(t, srv.PID()); n != budget {
		t.Errorf("%d in-kernel map entries, want the budget %d", n, budget)
	}
	// The last pass found the budget spent: each of its requests of a
	// series beyond it was counted as such.
	if n := e2e.Sum(fams, "obsd_probe_anomalies_total", map[string]string{"reason": "metrics_budget"}); n < nSeries-budget {
		t.Errorf("metrics_budget = %v, want at least %d", n, nSeries-budget)
	}
	if n := e2e.Sum(fams, "obsd_events_lost_total", nil); n != 0 {
		t.Errorf("obsd_events_lost_total = %v, want 0", n)
	}
}

// TestRedirectSendsNoPattern: ServeMux's own redirects ("/users/42" to
// "/users/42/" for the pattern "/users/{id}/") and CONNECT set
// Request.Pattern to a concrete path in some versions; such a request has
// no registered pattern and must not make a route of its path: it gets the
// fallback route, in metrics and spans alike.
func TestRedirectSendsNoPattern(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range spineVariants[1:] { // Go 1.21 has no such patterns
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), nil)
			recv := e2e.StartReceiver(t)
			o := e2e.StartObsd(t, obsdBin, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}, "--pid", itoa(srv.PID()))
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
			client := &http.Client{Timeout: 10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			const gets, connects = 30, 10
			for i := 0; i < gets+connects; i++ {
				m := "GET"
				if i >= gets {
					m = "CONNECT"
				}
				req, _ := http.NewRequest(m, fmt.Sprintf("http://%s/users/%d", srv.First, i), nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				// 301 until Go 1.25, 307 since.
				if resp.StatusCode != http.StatusMovedPermanently && resp.StatusCode != http.StatusTemporaryRedirect {
					t.Fatalf("%s /users/%d answered %d, want a redirect", m, i, resp.StatusCode)
				}
			}
			scrape := o.WaitScrape(t, 10*time.Second, "the redirects", func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= gets+connects
			})
			routes := map[string]float64{}
			for k, n := range series(e2e.Families(t, scrape), srv.PID()) {
				if k[1] != "301" && k[1] != "307" {
					t.Errorf("unexpected series %v = %v", k, n)
				}
				routes[k[2]] += n
			}
			var total float64
			for r, n := range routes {
				total += n
				if regexp.MustCompile(`\d`).MatchString(r) {
					t.Errorf("route %q = %v made of a request's path", r, n)
				}
			}
			if total != gets+connects || len(routes) != 1 {
				t.Errorf("routes %v, want all %d redirects under one route", routes, gets+connects)
			}
			// Spans carry the metrics' route, marked as a fallback: no
			// pattern routed these requests.
			for _, s := range recv.WaitSpans(t, gets+connects, 15*time.Second) {
				r, src := s.Attr("http.route"), s.Attr("obsd.route.source")
				if routes[r] == 0 || src != "fallback" {
					t.Errorf("span %q has http.route %q from %q, want the metrics' route (%v) from the fallback", s.GetName(), r, src, routes)
				}
			}
		})
	}
}

// TestTLSScheme: spans of HTTP/1.1 requests over TLS say url.scheme https.
func TestTLSScheme(t *testing.T) {
	e2e.RequireRoot(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil, "-tls")
	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, builds.Obsd(t), []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}, "--pid", itoa(srv.PID()))
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	const n = 7
	for i := 0; i < n; i++ {
		resp, err := h1.Get("https://" + srv.First + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	spans := recv.WaitSpans(t, n, 15*time.Second)
	for _, s := range spans {
		if got := s.Attr("url.scheme"); got != "https" {
			t.Errorf("span %q: url.scheme %q, want https", s.GetName(), got)
		}
	}
	if len(spans) != n {
		t.Errorf("%d spans, want %d", len(spans), n)
	}
}

// runCounts returns the run count of each program attached to pid, by its
// name's first 15 characters (as the kernel keeps them).
func runCounts(t *testing.T, pid int) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.UprobeMultiType {
			continue
		}
		if p, ok := info.UprobeMulti().Pid(); !ok || int(p) != pid {
			continue
		}
		prog, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			continue
		}
		pi, err := prog.Info()
		st, serr := prog.Stats()
		prog.Close()
		if err != nil || serr != nil {
			t.Fatalf("program of link %d: %v %v", info.ID, err, serr)
		}
		name := pi.Name // in full from BTF when cilium/ebpf can, else cut by the kernel
		out[name[:min(len(name), 15)]] += st.RunCount
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestKeepAliveTwoHits: the ends added for requests that never finish cost
// the keep-alive path nothing: exactly two probe runs per request, and one
// more per connection, at its close.
func TestKeepAliveTwoHits(t *testing.T) {
	e2e.RequireRoot(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enabling BPF run counts: %v", err)
	}
	defer stats.Close()
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	o := e2e.StartObsd(t, builds.Obsd(t), nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	before := runCounts(t, srv.PID())
	const n = 500
	c, br, _ := rawRequest(t, srv.First, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
	for i := 1; i < n; i++ {
		io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	mid := runCounts(t, srv.PID())
	c.Close()
	want := map[string]uint64{"http_server_sta": n, "http_server_end": n}
	got := map[string]uint64{}
	for name, runs := range mid {
		if d := runs - before[name]; d != 0 {
			got[name] = d
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("probe runs for %d keep-alive requests: %v, want %v", n, got, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runCounts(t, srv.PID())["http_server_clo"]-before["http_server_clo"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the connection's close ran the close probe %d times, want 1",
				runCounts(t, srv.PID())["http_server_clo"]-before["http_server_clo"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
