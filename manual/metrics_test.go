package manual_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func newTestRegistry(t *testing.T) *manual.Registry {
	t.Helper()
	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "svc", Host: "node-1"})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

func TestRegistryHasStandardFamiliesWithConstLabels(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	reg := newTestRegistry(t)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["service_name"] != "svc" || labels["host_name"] != "node-1" {
				t.Errorf("%s has labels %v, want service_name=svc host_name=node-1", mf.GetName(), labels)
			}
		}
	}
	if got["go_memstats_alloc_bytes"] {
		t.Error("go_memstats_alloc_bytes present: it clashes with go_memstats_alloc_bytes_total in OpenMetrics")
	}
	for _, name := range []string{
		"go_goroutines", "go_gc_duration_seconds", "go_gc_gogc_percent", "go_memstats_heap_alloc_bytes",
		"go_memstats_alloc_bytes_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"go_gc_stw_pause_average_seconds", "go_gc_stw_pause_window_seconds", "go_gc_window_cycles_per_second",
	} {
		if !got[name] {
			t.Errorf("family %s missing", name)
		}
	}
}

func TestServiceNameFromEnvironmentWins(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "from-code", Host: "h", NoRuntimeCollector: true})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if got := reg.Labels()["service_name"]; got != "from-env" {
		t.Errorf("service_name %q, want from-env", got)
	}
	if reg.Runtime() != nil {
		t.Error("runtime collector present though disabled")
	}
}

// newInstrumentedServer serves mux through the middleware and, outside it,
// TraceHandler with a provider using sampler; it returns the server and
// the metrics handler's URL.
func newInstrumentedServer(t *testing.T, sampler sdktrace.Sampler, mux *http.ServeMux) (app, metrics string) {
	t.Helper()
	reg := newTestRegistry(t)
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		t.Fatalf("NewHTTPMetrics: %v", err)
	}
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{
		ServiceName: "svc", Sampler: sampler, Exporter: tracetest.NewInMemoryExporter(),
	})
	if err != nil {
		t.Fatalf("SetupTracing: %v", err)
	}
	t.Cleanup(func() { shutdown(context.Background()) })
	appSrv := httptest.NewServer(manual.TraceHandler(m.Middleware(mux), "test"))
	t.Cleanup(appSrv.Close)
	metricsSrv := httptest.NewServer(manual.Handler(reg))
	t.Cleanup(metricsSrv.Close)
	return appSrv.URL, metricsSrv.URL
}

func get(t *testing.T, method, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func scrape(t *testing.T, url string, openMetrics bool) (contentType, body string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if openMetrics {
		// What Prometheus sends with exemplar storage enabled.
		req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape status %d: %s", resp.StatusCode, b)
	}
	return resp.Header.Get("Content-Type"), string(b)
}

func TestMiddlewareCountsByMethodStatusAndRoute(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "x", 500) })
	app, metrics := newInstrumentedServer(t, sdktrace.NeverSample(), mux)

	for i := range 3 {
		get(t, "GET", fmt.Sprintf("%s/items/%d", app, i))
	}
	get(t, "POST", app+"/items")
	get(t, "GET", app+"/fail")
	get(t, "BREW", app+"/fail")
	get(t, "GET", app+"/nowhere")

	_, body := scrape(t, metrics, false)
	want := []string{
		`http_requests_total{host_name="node-1",method="GET",service_name="svc",status_code="200"} 3`,
		`http_requests_total{host_name="node-1",method="POST",service_name="svc",status_code="201"} 1`,
		`http_requests_total{host_name="node-1",method="GET",service_name="svc",status_code="500"} 1`,
		`http_requests_total{host_name="node-1",method="OTHER",service_name="svc",status_code="500"} 1`,
		`http_requests_total{host_name="node-1",method="GET",service_name="svc",status_code="404"} 1`,
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",service_name="svc"} 3`,
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="POST",http_response_status_code="201",http_route="/items",service_name="svc"} 1`,
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="GET",http_response_status_code="500",http_route="/fail",service_name="svc"} 1`,
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="_OTHER",http_response_status_code="500",http_route="/fail",service_name="svc"} 1`,
		// obsd's fallback route for a request no pattern matched.
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="GET",http_response_status_code="404",http_route="/nowhere",service_name="svc"} 1`,
		// obsd's buckets: the semantic conventions' advice.
		`http_server_request_duration_seconds_bucket{host_name="node-1",http_request_method="POST",http_response_status_code="201",http_route="/items",service_name="svc",le="7.5"} 1`,
	}
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("scrape lacks %s", w)
		}
	}
	if strings.Contains(body, "# {") {
		t.Error("exemplars in the text format or for unsampled requests")
	}
}

func TestExemplarsCarrySampledTraceID(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Trace-Id", manual.TraceID(r.Context()))
	})
	app, metrics := newInstrumentedServer(t, sdktrace.AlwaysSample(), mux)
	resp := get(t, "GET", app+"/hello")
	traceID := resp.Header.Get("X-Trace-Id")
	if len(traceID) != 32 {
		t.Fatalf("handler saw trace id %q", traceID)
	}

	ct, body := scrape(t, metrics, true)
	if !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q: OpenMetrics not negotiated", ct)
	}
	counter := regexp.MustCompile(`(?m)^http_requests_total\{[^}]*status_code="200"\} 1\.0 # \{([^}]*)\} 1\.0 [0-9.e+]+$`)
	m := counter.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no counter exemplar in:\n%s", grepLines(body, "http_requests_total"))
	}
	if !strings.Contains(m[1], `trace_id="`+traceID+`"`) {
		t.Errorf("counter exemplar %s, want trace_id %s", m[1], traceID)
	}
	bucket := regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*http_route="/hello"[^}]*\} 1 # \{([^}]*)\} `)
	if m := bucket.FindStringSubmatch(body); m == nil || !strings.Contains(m[1], `trace_id="`+traceID+`"`) {
		t.Errorf("no histogram exemplar with trace_id %s in:\n%s", traceID, grepLines(body, "http_server_request_duration_seconds_bucket"))
	}

	// The plain text format has no exemplars, and must still parse.
	ct, body = scrape(t, metrics, false)
	if !strings.HasPrefix(ct, "text/plain") || strings.Contains(body, "trace_id") {
		t.Errorf("text format: Content-Type %q, exemplar present: %v", ct, strings.Contains(body, "trace_id"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestHandlerPanicIsCounted(t *testing.T) {
	reg := newTestRegistry(t)
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	srv := httptest.NewServer(m.Middleware(mux))
	t.Cleanup(srv.Close)
	if _, err := http.Get(srv.URL + "/panic"); err == nil {
		t.Fatal("a panicking handler answered")
	}
	c, err := testCounter(reg, "GET", "500")
	if err != nil || c != 1 {
		t.Errorf("http_requests_total{GET,500} = %v (%v), want 1", c, err)
	}
}

func testCounter(reg *manual.Registry, method, code string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["method"] == method && l["status_code"] == code {
				return m.GetCounter().GetValue(), nil
			}
		}
	}
	return 0, fmt.Errorf("no series")
}

func TestNewHTTPMetricsRejectsDuplicateRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{}); err != nil {
		t.Fatal(err)
	}
	if _, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{}); err == nil || !strings.Contains(err.Error(), "registering http metrics: duplicate") {
		t.Errorf("second registration: %v", err)
	}
}

func TestScrapePassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("OBSD_REQUIRE_BPF") == "1" {
			t.Fatal("promtool not found and OBSD_REQUIRE_BPF=1")
		}
		t.Skip("promtool not installed")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(http.ResponseWriter, *http.Request) {})
	app, metrics := newInstrumentedServer(t, sdktrace.AlwaysSample(), mux)
	get(t, "GET", app+"/hello")
	_, body := scrape(t, metrics, false)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
	// Lint the collectors with client_golang's linter as well.
	reg := newTestRegistry(t)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
