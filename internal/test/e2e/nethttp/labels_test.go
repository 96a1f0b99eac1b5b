package nethttp

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// Every label value that comes from request data passes one bounded path per
// process (issue 8 §1, issue 12 §3), and every string obsd exports is valid
// UTF-8 with its cuts marked (issue 8 §6). Expected values come from the
// client's own tally and the rules in README.md, and are compared with the
// scrape parsed by an independent parser and with what a real OTLP receiver
// got.

// Limits as README.md documents them, restated here rather than imported so
// that a change in obsd's constants fails these tests.
const (
	maxRoutes  = 100
	learnAfter = 20
	cutMark    = "…"
)

var routeVariants = []e2e.Variant{
	{Name: "go1.21", Toolchain: "go1.21.13"},
	{Name: "go1.22", Toolchain: "go1.22.12"},
	{Name: "go1.23", Toolchain: "go1.23.12"},
	{Name: "go1.24", Toolchain: "go1.24.9"},
	{Name: "go1.25", Toolchain: "go1.25.14"},
	{Name: "current"}, // the Go running the tests (1.26)
	{Name: "go1.27", Toolchain: "go1.27.3"},
}

// goMinor is the target's Go minor version (26 for the current toolchain).
func goMinor(t *testing.T, v e2e.Variant) int {
	t.Helper()
	if v.Toolchain == "" {
		return 26
	}
	m := regexp.MustCompile(`^go1\.(\d+)`).FindStringSubmatch(v.Toolchain)
	n, _ := strconv.Atoi(m[1])
	return n
}

// seriesKey is one http_server_request_duration_seconds series of a process.
type seriesKey struct{ method, status, route string }

// routeCounts reads the request counts of one process by series.
func routeCounts(fams map[string]*dto.MetricFamily, pid int) map[seriesKey]float64 {
	out := map[seriesKey]float64{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != instance(pid) {
			continue
		}
		out[seriesKey{l["http_request_method"], l["http_response_status_code"], l["http_route"]}] += e2e.Value(m)
	}
	return out
}

func distinctRoutes(c map[seriesKey]float64) map[string]bool {
	out := map[string]bool{}
	for k := range c {
		out[k.route] = true
	}
	return out
}

func overflowTotal(fams map[string]*dto.MetricFamily, pid int) float64 {
	return e2e.Sum(fams, "obsd_route_overflow_total", map[string]string{"service_instance_id": instance(pid)})
}

// tally is the client's own count of answered requests by the series they
// must be counted under.
type tally struct {
	mu sync.Mutex
	m  map[seriesKey]float64
	n  int
}

func (t *tally) add(method string, status int, route string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[seriesKey]float64{}
	}
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
	default:
		method = "_OTHER"
	}
	t.m[seriesKey{method, strconv.Itoa(status), route}]++
	t.n++
}

// noRedirects answers with ServeMux's own redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// getPath sends GET path (escaped as a URL path) and returns the status.
func getPath(t *testing.T, addr, path string) int {
	t.Helper()
	u := url.URL{Scheme: "http", Host: addr, Path: path}
	resp, err := noRedirects.Get(u.String())
	if err != nil {
		t.Fatalf("GET %q: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// raw sends one request with the request line exactly as given (any bytes,
// any method) on its own connection and returns the status.
func raw(t *testing.T, addr, method, target string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// slug is the i-th of distinct word-like path segments ("ab-smith").
func slug(i int) string {
	var b []byte
	for {
		b = append(b, byte('a'+i%26))
		i /= 26
		if i == 0 {
			break
		}
	}
	return string(b) + "-smith"
}

// startTraced starts the server and an obsd exporting every request's span
// to a fresh receiver, and waits until the server is instrumented.
func startTraced(t *testing.T, v e2e.Variant, env []string) (*e2e.Proc, *e2e.Obsd, *e2e.Receiver) {
	t.Helper()
	srv := e2e.Start(t, builds.HTTPServer(t, v), env)
	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, builds.Obsd(t), []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", strconv.Itoa(srv.PID()))
	o.WaitScrape(t, 10*time.Second, "the server to be instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	return srv, o, recv
}

// waitCounted waits until obsd counted n requests of pid and returns the
// parsed scrape, taken after a pause so that extra counts would show.
func waitCounted(t *testing.T, o *e2e.Obsd, pid, n int) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	o.WaitScrape(t, 20*time.Second, fmt.Sprintf("%d requests", n), func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, pid) >= float64(n)
	})
	time.Sleep(300 * time.Millisecond)
	s := o.Scrape(t)
	fams := e2e.Families(t, s)
	if got := requestCount(fams, pid); got != float64(n) {
		t.Errorf("obsd counted %v requests, the client got %d answers", got, n)
	}
	return s, fams
}

// checkSpanRoutes: the receiver got one span per request, and the spans by
// (method, status, http.route) are the metrics' series.
func checkSpanRoutes(t *testing.T, recv *e2e.Receiver, n int, metrics map[seriesKey]float64) {
	t.Helper()
	spans := recv.WaitSpans(t, n, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	spans = recv.Spans()
	if len(spans) != n {
		t.Errorf("receiver got %d spans, the client got %d answers", len(spans), n)
	}
	got := map[seriesKey]float64{}
	for _, s := range spans {
		got[seriesKey{s.Attr("http.request.method"), s.Attr("http.response.status_code"), s.Attr("http.route")}]++
	}
	if !reflect.DeepEqual(got, metrics) {
		t.Errorf("spans by (method, status, http.route) differ from the metrics:\n spans   %v\n metrics %v", got, metrics)
	}
}

// TestRoutesBounded sends many distinct paths through every source of routes
// (a pattern, ServeMux's own redirect of /users/{id}/ requested as
// /users/42, CONNECT, the fallback) on every supported Go version: each gets
// its right route, the distinct routes stay within the limit once a process
// exceeds it, the overflow is counted exactly, routes known before keep
// their labels, and spans carry the metrics' routes.
func TestRoutesBounded(t *testing.T) {
	e2e.RequireRoot(t)
	for _, v := range routeVariants {
		t.Run(v.Name, func(t *testing.T) {
			minor := goMinor(t, v)
			srv, o, recv := startTraced(t, v, []string{"OTEL_SERVICE_NAME=routes-" + v.Name})
			addr := srv.First
			var want tally

			// A pattern, 30 distinct paths.
			items := "/items/{id}"
			if minor < 22 {
				items = "/items/{param}" // no patterns: the fallback
			}
			for i := range 30 {
				want.add("GET", getPath(t, addr, "/items/"+strconv.Itoa(i)), items)
			}
			// ServeMux's own redirect, 150 distinct paths. Go 1.22 leaves
			// Request.pat nil; from 1.23 Request.Pattern is set (1.23-1.25:
			// to the target).
			for i := range 150 {
				want.add("GET", getPath(t, addr, "/users/"+strconv.Itoa(i)),
					"/users/{param}")
			}
			// CONNECT with a path: the same redirect, in every version with
			// patterns (Request.Pattern from 1.23).
			for i := range 30 {
				want.add("CONNECT", raw(t, addr, "CONNECT", "/users/"+strconv.Itoa(1000+i)),
					"/users/{param}")
			}
			// The fallback: a position learns to be a parameter.
			for i := range 40 {
				route := "/zz/" + slug(i)
				if i >= learnAfter {
					route = "/zz/{param}"
				}
				want.add("GET", getPath(t, addr, "/zz/"+slug(i)), route)
			}
			_, fams := waitCounted(t, o, srv.PID(), want.n)
			got := routeCounts(fams, srv.PID())
			if !reflect.DeepEqual(got, want.m) {
				t.Errorf("series before the limit:\n got  %v\n want %v", got, want.m)
			}

			// Past the limit: 400 new routes /ov/a/b.
			before := routeCounts(fams, srv.PID())
			known := distinctRoutes(before)
			delete(known, "/*")
			admitted := max(0, min(400, maxRoutes-len(known)))
			overflowBefore := overflowTotal(fams, srv.PID())
			for i := range 400 {
				getPath(t, addr, "/ov/"+slug(i/20)+"/"+slug(i%20))
			}
			// Known routes keep their labels after the limit.
			knownKeys := []seriesKey{{"GET", "200", items}, {"GET", "404", "/zz/" + slug(0)}}
			for range 3 {
				for _, k := range knownKeys {
					getPath(t, addr, strings.Replace(strings.Replace(k.route, "{id}", "7", 1), "{param}", "7", 1))
				}
			}
			total := want.n + 400 + 3*len(knownKeys)
			scrape, fams := waitCounted(t, o, srv.PID(), total)
			e2e.Promtool(t, scrape)
			got = routeCounts(fams, srv.PID())
			routes := distinctRoutes(got)
			delete(routes, "/*")
			if len(routes) > maxRoutes {
				t.Errorf("%d distinct routes, want at most %d: %v", len(routes), maxRoutes, routes)
			}
			ov := 0.0
			for k, n := range got {
				if strings.HasPrefix(k.route, "/ov/") {
					ov += n
				}
			}
			if ov != float64(admitted) {
				t.Errorf("%v requests under /ov/ routes, want %d (the limit less %d routes known before)", ov, admitted, len(known))
			}
			overflowed := got[seriesKey{"GET", "404", "/*"}] - before[seriesKey{"GET", "404", "/*"}]
			if overflowed != float64(400-admitted) {
				t.Errorf("%v new requests labelled /*, want %d", overflowed, 400-admitted)
			}
			if n := overflowTotal(fams, srv.PID()) - overflowBefore; n != float64(400-admitted) {
				t.Errorf("obsd_route_overflow_total grew by %v, want %d", n, 400-admitted)
			}
			for _, k := range knownKeys {
				if got[k] != before[k]+3 {
					t.Errorf("known route %v counted %v, want %v", k, got[k], before[k]+3)
				}
			}
			if n := strings.Count(o.Log.String(), "too many distinct label values"); n != 1 {
				t.Errorf("the overflow was logged %d times, want once", n)
			}
			checkSpanRoutes(t, recv, total, got)
		})
	}
}

// TestUnroutedPathsLearned: 10,000 distinct unrouted paths (slugs, UUIDs,
// hashes, numbers) stay within the limit; the first words of a position are
// routes until the position learns to be a parameter; a route known before
// the limit (/healthz) keeps its label; the overflow is counted and logged
// once; spans carry the metrics' routes.
func TestUnroutedPathsLearned(t *testing.T) {
	e2e.RequireRoot(t)
	srv, o, recv := startTraced(t, e2e.Variant{Name: "current"}, []string{"OTEL_SERVICE_NAME=unrouted"})
	addr := srv.First
	var want tally
	healthz := func() {
		for range 5 {
			want.add("GET", getPath(t, addr, "/healthz"), "/healthz")
		}
	}
	healthz()

	type job struct {
		path, route string // route "" for the first words of /people
	}
	var jobs []job
	for i := range 2500 {
		jobs = append(jobs,
			job{"/people/" + slug(i), ""},
			job{fmt.Sprintf("/orders/%08x-%04x-4%03x-8%03x-%012x", i*7919, i%65536, i%4096, (i*3)%4096, i*104729), "/orders/{param}"},
			job{fmt.Sprintf("/blobs/%040x", uint64(i)*0x9E3779B97F4A7C15), "/blobs/{param}"},
			job{fmt.Sprintf("/n/%d/edit", i), "/n/{param}/edit"},
		)
	}
	people := map[string]float64{} // people route -> count, from the scrape
	ch := make(chan job)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				resp, err := client.Get("http://" + addr + j.path)
				if err != nil {
					t.Errorf("GET %s: %v", j.path, err)
					continue
				}
				resp.Body.Close()
				if j.route != "" {
					want.add("GET", resp.StatusCode, j.route)
				} else {
					want.add("GET", resp.StatusCode, "people")
				}
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	healthz()
	_, fams := waitCounted(t, o, srv.PID(), want.n)
	got := routeCounts(fams, srv.PID())
	// Which 20 slugs became routes depends on the order of arrival; how
	// many, and that each names one request, does not.
	literal := regexp.MustCompile(`^/people/[a-z]+-smith$`)
	for k, n := range got {
		if literal.MatchString(k.route) {
			people[k.route] = n
			got[seriesKey{k.method, k.status, "people"}] += n
			delete(got, k)
		}
	}
	want.m[seriesKey{"GET", "404", "people"}] -= 2500 - learnAfter
	want.m[seriesKey{"GET", "404", "/people/{param}"}] = 2500 - learnAfter
	if len(people) != learnAfter {
		t.Errorf("%d literal /people/ routes, want %d", len(people), learnAfter)
	}
	for r, n := range people {
		if n != 1 {
			t.Errorf("%s counted %v times, want 1", r, n)
		}
	}
	if !reflect.DeepEqual(got, want.m) {
		t.Errorf("series after 10,000 distinct paths:\n got  %v\n want %v", got, want.m)
	}
	if n := overflowTotal(fams, srv.PID()); n != 0 {
		t.Errorf("obsd_route_overflow_total = %v before the limit, want 0", n)
	}

	// Now past the limit: 400 new routes; /healthz keeps its label.
	known := len(distinctRoutes(routeCounts(fams, srv.PID())))
	admitted := maxRoutes - known
	for i := range 400 {
		getPath(t, addr, "/ov/"+slug(i/20)+"/"+slug(i%20))
	}
	healthz()
	total := want.n + 400
	scrape, fams := waitCounted(t, o, srv.PID(), total)
	e2e.Promtool(t, scrape)
	got = routeCounts(fams, srv.PID())
	if n := got[seriesKey{"GET", "404", "/healthz"}]; n != 15 {
		t.Errorf("/healthz counted %v, want 15 under its own route", n)
	}
	if n := got[seriesKey{"GET", "404", "/*"}]; n != float64(400-admitted) {
		t.Errorf("%v requests labelled /*, want %d", n, 400-admitted)
	}
	if n := overflowTotal(fams, srv.PID()); n != float64(400-admitted) {
		t.Errorf("obsd_route_overflow_total = %v, want %d", n, 400-admitted)
	}
	if r := distinctRoutes(got); len(r) != maxRoutes+1 {
		t.Errorf("%d distinct routes, want the limit %d and /*", len(r), maxRoutes)
	}
	if n := strings.Count(o.Log.String(), "too many distinct label values"); n != 1 {
		t.Errorf("the overflow was logged %d times, want once", n)
	}
	checkSpanRoutes(t, recv, total, got)
}

// TestStringsExported puts multi-byte characters and invalid bytes in every
// field obsd exports (method, path, pattern, service name and resource
// attributes from the target's environment) among ordinary requests: the
// receiver gets every span, every string is valid UTF-8, each cut is on a
// character boundary and marked, and the scrape parses.
func TestStringsExported(t *testing.T) {
	e2e.RequireRoot(t)
	jp := strings.Repeat("日本語", 50)               // 150 bytes
	long := "/" + strings.Repeat("日本語", 15) + "/" // testdata/httpserver's longPattern
	for _, v := range []e2e.Variant{{Name: "current"}, {Name: "go1.24", Toolchain: "go1.24.9"}} {
		t.Run(v.Name, func(t *testing.T) {
			srv, o, recv := startTraced(t, v, []string{
				"OTEL_SERVICE_NAME=shop-\xff-日本",
				"OTEL_RESOURCE_ATTRIBUTES=team=%FF%FE,note=" + url.PathEscape(strings.Repeat("長", 100)),
			})
			addr := srv.First
			var want tally
			for range 40 {
				want.add("GET", getPath(t, addr, "/hello"), "/hello")
			}
			// The probe keeps 128 bytes of the path: whole segments, then /*.
			want.add("GET", getPath(t, addr, "/"+jp), "/*")
			want.add("GET", raw(t, addr, "GET", "/bad\xff\xfe/x"), "/{param}/x")
			// A redirect whose target holds an invalid byte: the mux's own
			// answer, so the fallback.
			badRedirect := "/users/{param}"
			want.add("GET", getPath(t, addr, "/users/\xff"), badRedirect)
			want.add("VERYLONGCUSTOMMETHODNAME26", raw(t, addr, "VERYLONGCUSTOMMETHODNAME26", "/hello"), "/hello")
			want.add("GET", getPath(t, addr, long+"x"), long[:127]+cutMark)
			for range 40 {
				want.add("GET", getPath(t, addr, "/hello"), "/hello")
			}

			scrape, fams := waitCounted(t, o, srv.PID(), want.n)
			e2e.Promtool(t, scrape)
			if !utf8.Valid(scrape) {
				t.Errorf("the scrape is not UTF-8")
			}
			got := routeCounts(fams, srv.PID())
			if !reflect.DeepEqual(got, want.m) {
				t.Errorf("series:\n got  %v\n want %v", got, want.m)
			}
			for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
				if l := e2e.Labels(m); l["service_instance_id"] == instance(srv.PID()) && l["service_name"] != "shop-\uFFFD-日本" {
					t.Errorf("service_name = %q, want %q", l["service_name"], "shop-\uFFFD-日本")
				}
			}
			checkSpanRoutes(t, recv, want.n, got)

			var jpPath, method bool
			for _, s := range recv.Spans() {
				for _, kv := range s.GetAttributes() {
					if v := kv.GetValue().GetStringValue(); !utf8.ValidString(v) {
						t.Errorf("span attribute %s = %q is not UTF-8", kv.GetKey(), v)
					}
				}
				if s.Resource["service.name"] != "shop-\uFFFD-日本" || s.Resource["team"] != "\uFFFD" {
					t.Errorf("resource service.name %q, team %q; want %q, %q",
						s.Resource["service.name"], s.Resource["team"], "shop-\uFFFD-日本", "\uFFFD")
				}
				if note := s.Resource["note"]; len(note) > 256 || !strings.HasSuffix(note, cutMark) || !strings.HasPrefix(strings.Repeat("長", 100), strings.TrimSuffix(note, cutMark)) {
					t.Errorf("resource note = %q (%d bytes), want a prefix of the value, cut within 256 bytes and marked", note, len(note))
				}
				switch {
				case strings.HasPrefix(s.Attr("url.path"), "/日本語"):
					jpPath = true
					// The probe keeps 128 bytes: "/" and 42 whole characters.
					if p := s.Attr("url.path"); p != "/"+jp[:126]+cutMark || s.Attr("obsd.request.truncated") != "true" {
						t.Errorf("url.path = %q, truncated %q; want %q, true", p, s.Attr("obsd.request.truncated"), "/"+jp[:126]+cutMark)
					}
				case s.Attr("http.request.method") == "_OTHER":
					method = true
					if m := s.Attr("http.request.method_original"); m != "VERYLONGCUSTOMME"+cutMark {
						t.Errorf("http.request.method_original = %q, want %q", m, "VERYLONGCUSTOMME"+cutMark)
					}
				}
			}
			if !jpPath || !method {
				t.Errorf("spans of the long path (%v) or the long method (%v) missing", jpPath, method)
			}
		})
	}
}

// TestStringsCountedInKernel: without spans, requests routed by a pattern
// written in the program are counted in the kernel. A long multi-byte
// pattern gets the same route as with spans (cut as the probe cuts,
// marked), and an invalid service name costs neither kernel nor record
// series.
func TestStringsCountedInKernel(t *testing.T) {
	e2e.RequireRoot(t)
	long := "/" + strings.Repeat("日本語", 15) + "/" // testdata/httpserver's longPattern
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), []string{"OTEL_SERVICE_NAME=kernel-\xff"})
	o := e2e.StartObsd(t, builds.Obsd(t), nil, "--pid", strconv.Itoa(srv.PID()))
	o.WaitScrape(t, 10*time.Second, "the server to be instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	var want tally
	for range 5 {
		want.add("GET", getPath(t, srv.First, long+"x"), long[:127]+cutMark)
		want.add("GET", getPath(t, srv.First, "/hello"), "/hello")
	}
	scrape, fams := waitCounted(t, o, srv.PID(), want.n)
	e2e.Promtool(t, scrape)
	if got := routeCounts(fams, srv.PID()); !reflect.DeepEqual(got, want.m) {
		t.Errorf("series:\n got  %v\n want %v", got, want.m)
	}
	// /hello is counted in the kernel; the probe keys only patterns of at
	// most 128 bytes, so the long one comes as records (cut, flagged).
	if n := e2e.Sum(fams, "obsd_events_total", nil); n != 5 {
		t.Errorf("obsd_events_total = %v, want 5 (the long pattern's requests)", n)
	}
	if n := e2e.Sum(fams, "http_server_request_duration_seconds", map[string]string{"service_name": "kernel-\uFFFD"}); n != float64(want.n) {
		t.Errorf("%v requests under service_name %q, want %d", n, "kernel-\uFFFD", want.n)
	}
}
