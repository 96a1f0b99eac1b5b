package manual_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// readmeLayout builds the README's layout: an outer mux that hands "/" to
// TraceHandler(metrics(app mux)), and probes beside it.
func readmeLayout(t *testing.T, opts ...otelhttp.Option) (url string, exp *tracetest.InMemoryExporter, m *manual.HTTPMetrics, reg *manual.Registry) {
	t.Helper()
	exp = tracetest.NewInMemoryExporter()
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{ServiceName: "svc", Sampler: sdktrace.AlwaysSample(), Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(context.Background()) })
	reg = newTestRegistry(t)
	m, err = manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		t.Fatal(err)
	}
	app := http.NewServeMux()
	app.HandleFunc("GET /items/{id}", func(http.ResponseWriter, *http.Request) {})
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	t.Cleanup(func() { h.Close() })
	root := http.NewServeMux()
	h.Routes(root)
	root.Handle("GET /metrics", manual.Handler(reg))
	root.Handle("/", manual.TraceHandler(m.Middleware(app), "svc", opts...))
	srv := httptest.NewServer(root)
	t.Cleanup(srv.Close)
	return srv.URL, exp, m, reg
}

func flush(t *testing.T) {
	t.Helper()
	tp, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	if !ok {
		t.Fatal("no SDK tracer provider installed")
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func scrapeReg(t *testing.T, reg *manual.Registry) (string, string) {
	t.Helper()
	srv := httptest.NewServer(manual.Handler(reg))
	defer srv.Close()
	return scrape(t, srv.URL, false)
}

// gaugeSum is the sum of a gauge family's series in a gather of reg.
func gaugeSum(t *testing.T, reg *manual.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func TestSpanRouteIsTheMetricsRoute(t *testing.T) {
	url, exp, _, reg := readmeLayout(t)
	get(t, "GET", url+"/items/1")
	get(t, "GET", url+"/nope")
	get(t, "GET", url+"/healthz")
	get(t, "GET", url+"/metrics")
	flush(t)
	spans := exp.GetSpans()
	got := map[string]string{}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if a.Key == "http.route" {
				got[s.Name] = a.Value.AsString()
			}
		}
	}
	want := map[string]string{"GET /items/{id}": "/items/{id}", "GET /nope": "/nope"}
	if len(spans) != 2 || len(got) != 2 || got["GET /items/{id}"] != want["GET /items/{id}"] || got["GET /nope"] != want["GET /nope"] {
		t.Errorf("spans (name: http.route) %v from %d spans, want %v and no span for probes or scrapes", got, len(spans), want)
	}
	for _, s := range []string{
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",service_name="svc"} 1`,
		`http_server_request_duration_seconds_count{host_name="node-1",http_request_method="GET",http_response_status_code="404",http_route="/nope",service_name="svc"} 1`,
	} {
		if _, body := scrapeReg(t, reg); !strings.Contains(body, s+"\n") {
			t.Errorf("metrics lack %s", s)
		}
	}
}

func TestTraceHandlerTakesOtelhttpOptions(t *testing.T) {
	url, exp, _, _ := readmeLayout(t,
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/items/2" }),
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
	)
	// A caller's traceparent: a public endpoint starts a new root linked to it.
	parent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req, _ := http.NewRequest("GET", url+"/items/1", nil)
	req.Header.Set("traceparent", parent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	get(t, "GET", url+"/items/2") // filtered out
	flush(t)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1 (the filter drops /items/2)", len(spans))
	}
	s := spans[0]
	if s.SpanContext.TraceID().String() == "0af7651916cd43dd8448eb211c80319c" || len(s.Links) != 1 {
		t.Errorf("public endpoint: trace %s, %d links; want a new root linked to the caller", s.SpanContext.TraceID(), len(s.Links))
	}
}

func TestCancelledRequestIsNotA200(t *testing.T) {
	reg := newTestRegistry(t)
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // the client gives up; the handler writes nothing
	})
	srv := httptest.NewServer(m.Middleware(mux))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow", nil)
	go func() { <-entered; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("cancelled request answered")
	}
	waitFor(t, 2*time.Second, func() bool {
		c, err := testCounter(reg, "GET", "499")
		return err == nil && c == 1
	})
	if c, err := testCounter(reg, "GET", "200"); err == nil {
		t.Errorf("cancelled request counted as 200 (%v)", c)
	}
}

func TestSizesInFlightAndExtraLabels(t *testing.T) {
	reg := newTestRegistry(t)
	type tenantKey struct{}
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{
		ExtraLabels: []string{"tenant"},
		LabelValues: func(r *http.Request) []string {
			v, _ := r.Context().Value(tenantKey{}).(string)
			return []string{v}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var inside sync.WaitGroup
	inside.Add(2)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1000)
		n := 0
		for {
			k, err := r.Body.Read(buf)
			n += k
			if err != nil {
				break
			}
		}
		inside.Done()
		<-release
		w.Write([]byte(strings.Repeat("x", 3*n)))
	})
	tenant := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tenantKey{}, r.Header.Get("X-Tenant"))))
		})
	}
	srv := httptest.NewServer(tenant(m.Middleware(mux)))
	t.Cleanup(srv.Close)
	var done sync.WaitGroup
	for _, size := range []int{100, 5000} {
		done.Go(func() {
			req, _ := http.NewRequest("POST", srv.URL+"/upload", strings.NewReader(strings.Repeat("y", size)))
			req.Header.Set("X-Tenant", "acme")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			// The last chunk leaves after the middleware has recorded.
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	inside.Wait()
	if g := gaugeSum(t, reg, "http_server_active_requests"); g != 2 {
		t.Errorf("in flight %v during two requests, want 2", g)
	}
	close(release)
	done.Wait()
	if g := gaugeSum(t, reg, "http_server_active_requests"); g != 0 {
		t.Errorf("in flight %v after, want 0", g)
	}
	_, body := scrapeReg(t, reg)
	for _, s := range []string{
		`http_server_request_body_size_bytes_sum{host_name="node-1",http_request_method="POST",http_response_status_code="200",http_route="/upload",service_name="svc",tenant="acme"} 5100`,
		`http_server_response_body_size_bytes_sum{host_name="node-1",http_request_method="POST",http_response_status_code="200",http_route="/upload",service_name="svc",tenant="acme"} 15300`,
		`http_requests_total{host_name="node-1",method="POST",service_name="svc",status_code="200",tenant="acme"} 2`,
	} {
		if !strings.Contains(body, s+"\n") {
			t.Errorf("metrics lack %s in\n%s", s, grepLines(body, "http_"))
		}
	}
	if err := testutil.CollectAndCompare(m.Requests(), strings.NewReader(`
# HELP http_requests_total HTTP requests served, by method and status code.
# TYPE http_requests_total counter
http_requests_total{method="POST",status_code="200",tenant="acme"} 2
`)); err != nil {
		t.Errorf("Requests() for testutil: %v", err)
	}
	if n := testutil.CollectAndCount(m.Duration()); n != 1 {
		t.Errorf("Duration() has %d series, want 1", n)
	}
}
