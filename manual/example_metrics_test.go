package manual_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// discardExporter drops spans; examples do not ship them anywhere.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func ExampleNewRegistry() {
	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop", Host: "node-1"})
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "go_goroutines" {
			for _, l := range mf.GetMetric()[0].GetLabel() {
				fmt.Printf("%s=%q ", l.GetName(), l.GetValue())
			}
		}
	}
	fmt.Println()
	// Output: host_name="node-1" service_name="shop"
}

func ExampleRegistry_Register() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop", Host: "node-1", NoRuntimeCollector: true})
	defer reg.Close()
	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "orders_total", Help: "Orders placed."})
	fmt.Println(reg.Register(orders))
	orders.Inc()
	fmt.Println(testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP orders_total Orders placed.
# TYPE orders_total counter
orders_total{host_name="node-1",service_name="shop"} 1
`), "orders_total"))
	// Output:
	// <nil>
	// <nil>
}

func ExampleRegistry_MustRegister() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{NoRuntimeCollector: true})
	defer reg.Close()
	queue := prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_depth", Help: "Jobs waiting."})
	reg.MustRegister(queue)
	fmt.Println(testutil.CollectAndCount(queue))
	// Output: 1
}

func ExampleRegistry_Unregister() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{NoRuntimeCollector: true})
	defer reg.Close()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "temporary", Help: "A gauge."})
	reg.MustRegister(g)
	fmt.Println(reg.Unregister(g), reg.Unregister(g))
	// Output: true false
}

func ExampleRegistry_Gather() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{})
	defer reg.Close()
	mfs, err := reg.Gather()
	fmt.Println(len(mfs) > 30, err)
	// Output: true <nil>
}

func ExampleRegistry_Labels() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop", Host: "node-1", NoRuntimeCollector: true})
	defer reg.Close()
	fmt.Println(reg.Labels())
	// Output: map[host_name:node-1 service_name:shop]
}

func ExampleRegistry_Runtime() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{})
	defer reg.Close()
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	h.MustAdd(manual.Liveness, "heap", reg.Runtime().HeapCheck(8<<30), manual.CheckOpts{})
	fmt.Println(h.Run(context.Background(), manual.Liveness).Status)
	// Output: ok
}

func ExampleRegistry_Close() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{})
	fmt.Println(reg.Close()) // stops the runtime sampler
	// Output: <nil>
}

func ExampleHandler() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{})
	defer reg.Close()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	manual.Handler(reg).ServeHTTP(rec, req)
	fmt.Println(rec.Code, strings.Split(rec.Header().Get("Content-Type"), ";")[0])
	// Output: 200 application/openmetrics-text
}

func ExampleNewHTTPMetrics() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop", Host: "node-1", NoRuntimeCollector: true})
	defer reg.Close()
	_, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{
		Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1}, // tighter around a 100 ms SLO
	})
	fmt.Println(err)
	// Output: <nil>
}

func ExampleHTTPMetrics_Middleware() {
	reg, _ := manual.NewRegistry(manual.RegistryOpts{ServiceName: "shop", Host: "node-1", NoRuntimeCollector: true})
	defer reg.Close()
	m, _ := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "0" {
			http.NotFound(w, r)
		}
	})
	h := m.Middleware(mux)
	for _, p := range []string{"/items/1", "/items/2", "/items/0"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	fmt.Println(testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP http_requests_total HTTP requests served, by method and status code.
# TYPE http_requests_total counter
http_requests_total{host_name="node-1",method="GET",service_name="shop",status_code="200"} 2
http_requests_total{host_name="node-1",method="GET",service_name="shop",status_code="404"} 1
`), "http_requests_total"))
	// Output: <nil>
}

func ExampleNewRuntimeCollector() {
	// NewRegistry registers one already; this is for a registry of your own.
	rc, err := manual.NewRuntimeCollector(manual.RuntimeOpts{MemStatsInterval: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(rc)
	fmt.Println(testutil.CollectAndCount(rc, "go_gc_stw_pause_window_seconds"))
	// Output: 5
}

func ExampleRuntimeCollector_HeapCheck() {
	rc, _ := manual.NewRuntimeCollector(manual.RuntimeOpts{})
	defer rc.Close()
	fmt.Println(rc.HeapCheck(1 << 40)(context.Background()))
	// Output: <nil>
}

func ExampleRuntimeCollector_Close() {
	rc, _ := manual.NewRuntimeCollector(manual.RuntimeOpts{})
	rc.Close() // sampling stops; Collect keeps serving the last sample
	fmt.Println(testutil.CollectAndCount(rc))
	// Output: 11
}

func ExampleRuntimeCollector_Collect() {
	rc, _ := manual.NewRuntimeCollector(manual.RuntimeOpts{})
	defer rc.Close()
	ch := make(chan prometheus.Metric, 20)
	rc.Collect(ch) // reads the cached sample only: no stop-the-world here
	fmt.Println(len(ch))
	// Output: 11
}

func ExampleRuntimeCollector_Describe() {
	rc, _ := manual.NewRuntimeCollector(manual.RuntimeOpts{})
	defer rc.Close()
	ch := make(chan *prometheus.Desc, 10)
	rc.Describe(ch)
	fmt.Println(len(ch))
	// Output: 6
}

func ExampleSetupTracing() {
	// In production pass no Exporter: spans go where OTEL_TRACES_EXPORTER
	// and OTEL_EXPORTER_OTLP_* say (default OTLP http/protobuf to
	// https://localhost:4318; http:// for a plaintext collector).
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{
		ServiceName: "shop",
		Exporter:    discardExporter{},
	})
	if err != nil {
		panic(err)
	}
	defer shutdown(context.Background())
	fmt.Println("tracing ready")
	// Output: tracing ready
}

func ExampleSamplerFromEnv() {
	s, _ := manual.SamplerFromEnv("", "", manual.DefaultSampleRatio)
	fmt.Println(s.Description())
	s, _ = manual.SamplerFromEnv("parentbased_traceidratio", "0.1", manual.DefaultSampleRatio)
	fmt.Println(s.Description())
	_, err := manual.SamplerFromEnv("traceidratio", "ten", manual.DefaultSampleRatio)
	fmt.Println(err)
	// Output:
	// ParentBased{root:TraceIDRatioBased{0.01},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}
	// ParentBased{root:TraceIDRatioBased{0.1},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}
	// parsing OTEL_TRACES_SAMPLER_ARG="ten": strconv.ParseFloat: parsing "ten": invalid syntax
}

func ExampleTraceHandler() {
	shutdown, _ := manual.SetupTracing(context.Background(), manual.TracingOpts{Sampler: sdktrace.AlwaysSample(), Exporter: discardExporter{}})
	defer shutdown(context.Background())
	h := manual.TraceHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("trace present:", manual.HasTrace(r.Context()))
	}), "api")
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.ServeHTTP(httptest.NewRecorder(), req)
	// Output: trace present: true
}

func ExampleTraceTransport() {
	shutdown, _ := manual.SetupTracing(context.Background(), manual.TracingOpts{Sampler: sdktrace.AlwaysSample(), Exporter: discardExporter{}})
	defer shutdown(context.Background())
	downstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("traceparent sent:", r.Header.Get("traceparent") != "")
	}))
	defer downstream.Close()
	client := &http.Client{Transport: manual.TraceTransport(nil), Timeout: 5 * time.Second}
	// In a handler use r.Context(); never context.Background().
	req, _ := http.NewRequestWithContext(context.Background(), "GET", downstream.URL, nil)
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	// Output: traceparent sent: true
}

func ExampleHasTrace() {
	fmt.Println(manual.HasTrace(context.Background()))
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab}, SpanID: trace.SpanID{1}})
	fmt.Println(manual.HasTrace(trace.ContextWithSpanContext(context.Background(), sc)))
	// Output:
	// false
	// true
}

func ExampleTraceID() {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab}, SpanID: trace.SpanID{1}})
	fmt.Println(manual.TraceID(trace.ContextWithSpanContext(context.Background(), sc)))
	// Output: ab000000000000000000000000000000
}
