package manual_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/obsd-dev/obsd/manual/internal/otlptest"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestSamplerFromEnv(t *testing.T) {
	tests := []struct {
		name, arg string
		want      string // Description, or the error's text
		wantErr   bool
	}{
		{"", "", "ParentBased{root:TraceIDRatioBased{0.01}", false},
		{"always_on", "", "AlwaysOnSampler", false},
		{"always_off", "", "AlwaysOffSampler", false},
		{"traceidratio", "0.25", "TraceIDRatioBased{0.25}", false},
		{"traceidratio", "", "TraceIDRatioBased{1}", false},
		{"parentbased_traceidratio", "0.5", "ParentBased{root:TraceIDRatioBased{0.5}", false},
		{"parentbased_always_on", "", "ParentBased{root:AlwaysOnSampler", false},
		{"parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler", false},
		{" Always_On ", "", "AlwaysOnSampler", false},
		{"traceidratio", "half", `parsing OTEL_TRACES_SAMPLER_ARG="half"`, true},
		{"traceidratio", "1.5", "ratio outside [0, 1]", true},
		{"jaeger_remote", "", `OTEL_TRACES_SAMPLER="jaeger_remote": unsupported sampler`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.arg, func(t *testing.T) {
			s, err := manual.SamplerFromEnv(tt.name, tt.arg, manual.DefaultSampleRatio)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s.Description(), tt.want) {
				t.Errorf("sampler %s, want %s", s.Description(), tt.want)
			}
		})
	}
}

func TestSetupTracingRejectsBadSamplerEnv(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	if _, err := manual.SetupTracing(context.Background(), manual.TracingOpts{Exporter: tracetest.NewInMemoryExporter()}); err == nil ||
		!strings.Contains(err.Error(), "unsupported sampler") {
		t.Errorf("SetupTracing: %v", err)
	}
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	if _, err := manual.SetupTracing(context.Background(), manual.TracingOpts{SampleRatio: new(2.0)}); err == nil {
		t.Error("sample ratio 2 accepted")
	}
}

// TestDefaultSamplerIsOnePercentParentBased checks the sampler that
// SetupTracing installs when nothing configures one.
func TestDefaultSamplerIsOnePercentParentBased(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "")
	exp := tracetest.NewInMemoryExporter()
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	tr := otel.Tracer("test")

	const roots = 5000
	sampled := 0
	for range roots {
		_, span := tr.Start(context.Background(), "root")
		if span.SpanContext().IsSampled() {
			sampled++
		}
		span.End()
	}
	// Expect 50; the bounds are many standard deviations wide.
	if sampled < 15 || sampled > 110 {
		t.Errorf("%d of %d root spans sampled, want about 1%%", sampled, roots)
	}

	parent := func(flags trace.TraceFlags) context.Context {
		return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: true,
		}))
	}
	for range 100 {
		_, s := tr.Start(parent(trace.FlagsSampled), "child")
		if !s.SpanContext().IsSampled() {
			t.Fatal("child of a sampled remote parent was not sampled")
		}
		s.End()
		_, s = tr.Start(parent(0), "child")
		if s.SpanContext().IsSampled() {
			t.Fatal("child of an unsampled remote parent was sampled")
		}
		s.End()
	}
}

// TestTracingThroughOTLP runs a client and a server instrumented by this
// package and checks that both spans reach a real OTLP/gRPC receiver in
// one trace, with the resource the package promises.
func TestTracingThroughOTLP(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(proto, func(t *testing.T) { testTracingThroughOTLP(t, proto) })
	}
}

func testTracingThroughOTLP(t *testing.T, proto string) {
	rcv := otlptest.Start(t)
	if proto == "http/protobuf" {
		rcv = otlptest.StartHTTP(t)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Addr)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "checkout")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	t.Setenv("POD_NAME", "checkout-7d9f")
	t.Setenv("POD_NAMESPACE", "shop")

	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{ServiceName: "ignored-env-wins"})
	if err != nil {
		t.Fatal(err)
	}

	var sawTrace bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		sawTrace = manual.HasTrace(r.Context())
	})
	srv := httptest.NewServer(manual.TraceHandler(mux, "server"))
	defer srv.Close()

	client := &http.Client{Transport: manual.TraceTransport(nil), Timeout: 5 * time.Second}
	ctx, parent := otel.Tracer("test").Start(context.Background(), "caller")
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/orders/42", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	parent.End()
	if !sawTrace {
		t.Error("handler saw no trace in its context")
	}

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil { // flushes
		t.Fatalf("shutdown: %v", err)
	}
	spans, ok := rcv.WaitFor(5*time.Second, func(s []otlptest.Span) bool { return len(s) >= 3 })
	if !ok {
		t.Fatalf("received %d spans, want 3", len(spans))
	}
	byKind := map[int32]otlptest.Span{}
	for _, s := range spans {
		byKind[s.Kind] = s
		if s.TraceID != parent.SpanContext().TraceID().String() {
			t.Errorf("span %q in trace %s, want %s", s.Name, s.TraceID, parent.SpanContext().TraceID())
		}
	}
	const kindServer, kindClient = 2, 3
	server, client2 := byKind[kindServer], byKind[kindClient]
	if server.ParentSpanID == "" || server.ParentSpanID != client2.SpanID {
		t.Errorf("server span's parent %q, want the client span %q", server.ParentSpanID, client2.SpanID)
	}
	if server.Name != "GET /orders/{id}" {
		t.Errorf("server span named %q, want the route", server.Name)
	}
	res := server.Resource
	for k, want := range map[string]string{
		"service.name":           "checkout",
		"deployment.environment": "test",
		"k8s.pod.name":           "checkout-7d9f",
		"k8s.namespace.name":     "shop",
		manual.MarkerAttribute:   "true",
	} {
		if res[k] != want {
			t.Errorf("resource %s = %q, want %q", k, res[k], want)
		}
	}
	if res["host.name"] == "" {
		t.Error("resource lacks host.name")
	}
}

func TestSDKDisabledInstallsNothing(t *testing.T) {
	before := otel.GetTracerProvider()
	t.Setenv("OTEL_SDK_DISABLED", "true")
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	if otel.GetTracerProvider() != before {
		t.Error("tracer provider replaced although OTEL_SDK_DISABLED=true")
	}
}

func TestHasTraceAndTraceID(t *testing.T) {
	if manual.HasTrace(context.Background()) || manual.TraceID(context.Background()) != "" {
		t.Error("background context reported a trace")
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	// Unsampled still counts: the context flows, and downstream calls
	// carry it.
	if !manual.HasTrace(ctx) || manual.TraceID(ctx) != span.SpanContext().TraceID().String() {
		t.Errorf("HasTrace %v TraceID %q", manual.HasTrace(ctx), manual.TraceID(ctx))
	}
}
