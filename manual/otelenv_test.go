package manual_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/obsd-dev/obsd/manual/internal/otlptest"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"
)

// resetOtel restores the global provider and propagator after a test.
func resetOtel(t *testing.T) {
	t.Helper()
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(prop)
	})
	otel.SetTracerProvider(noop.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
}

const callerTrace = "0af7651916cd43dd8448eb211c80319c"
const callerParent = "00-" + callerTrace + "-b7ad6b7169203331-01"

// relay serves TraceHandler(h) where h calls downstream through
// TraceTransport with the request's context; it returns the traceparent
// that downstream received and the trace ID the handler saw.
func relay(t *testing.T) (traceparent, handlerTrace string) {
	t.Helper()
	got := make(chan string, 1)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("traceparent") }))
	defer down.Close()
	client := &http.Client{Transport: manual.TraceTransport(nil), Timeout: 5 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /relay", func(w http.ResponseWriter, r *http.Request) {
		handlerTrace = manual.TraceID(r.Context())
		req, _ := http.NewRequestWithContext(r.Context(), "GET", down.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	})
	srv := httptest.NewServer(manual.TraceHandler(mux, "relay"))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/relay", nil)
	req.Header.Set("traceparent", callerParent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return <-got, handlerTrace
}

func TestOTELVariablesAreHonoured(t *testing.T) {
	t.Run("OTEL_TRACES_EXPORTER=none exports nothing", func(t *testing.T) {
		resetOtel(t)
		rcv := otlptest.Start(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "none")
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Addr)
		t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
		shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
		if err != nil {
			t.Fatal(err)
		}
		_, span := otel.Tracer("t").Start(context.Background(), "x")
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The same setup without "none" does deliver (TestTracingThroughOTLP);
		// give a wrong exporter time to show itself.
		if spans, _ := rcv.WaitFor(500*time.Millisecond, func(s []otlptest.Span) bool { return len(s) > 0 }); len(spans) != 0 {
			t.Errorf("%d spans exported with OTEL_TRACES_EXPORTER=none", len(spans))
		}
	})
	t.Run("OTEL_PROPAGATORS=none does not continue the caller's trace", func(t *testing.T) {
		resetOtel(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "none")
		t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
		t.Setenv("OTEL_PROPAGATORS", "none")
		shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(context.Background())
		tp, handlerTrace := relay(t)
		if handlerTrace == "" || handlerTrace == callerTrace || tp != "" {
			t.Errorf("handler trace %q (caller %s), downstream traceparent %q; want a new trace and nothing injected", handlerTrace, callerTrace, tp)
		}
	})
	t.Run("OTEL_PROPAGATORS=b3 injects b3", func(t *testing.T) {
		resetOtel(t)
		t.Setenv("OTEL_TRACES_EXPORTER", "none")
		t.Setenv("OTEL_PROPAGATORS", "b3")
		shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(context.Background())
		if _, ok := otel.GetTextMapPropagator().(interface{ Fields() []string }); !ok || !strings.Contains(strings.Join(otel.GetTextMapPropagator().Fields(), ","), "b3") {
			t.Errorf("propagator fields %v, want b3", otel.GetTextMapPropagator().Fields())
		}
	})
	t.Run("OTEL_SDK_DISABLED=true keeps the trace whole", func(t *testing.T) {
		resetOtel(t)
		t.Setenv("OTEL_SDK_DISABLED", "true")
		shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(context.Background())
		tp, _ := relay(t)
		if !strings.Contains(tp, callerTrace) {
			t.Errorf("downstream got traceparent %q, want the caller's trace %s", tp, callerTrace)
		}
	})
	t.Run("service.name in OTEL_RESOURCE_ATTRIBUTES names metrics and spans", func(t *testing.T) {
		resetOtel(t)
		rcv := otlptest.StartHTTP(t)
		t.Setenv("OTEL_SERVICE_NAME", "")
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing%20api,team=pay")
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Addr)
		t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
		shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{ServiceName: "from-code"})
		if err != nil {
			t.Fatal(err)
		}
		reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "from-code", NoRuntimeCollector: true})
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		_, span := otel.Tracer("t").Start(context.Background(), "x")
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		spans, ok := rcv.WaitFor(5*time.Second, func(s []otlptest.Span) bool { return len(s) > 0 })
		if !ok {
			t.Fatal("no span over OTLP/HTTP, the specification's default protocol")
		}
		if got, want := spans[0].Resource["service.name"], "billing api"; got != want || reg.Labels()["service_name"] != want {
			t.Errorf("span service.name %q, metrics service_name %q, want both %q", got, reg.Labels()["service_name"], want)
		}
	})
}

func TestUnhonourableOTELValuesFailAtStart(t *testing.T) {
	for _, tt := range []struct{ key, value, want string }{
		{"OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"OTEL_PROPAGATORS", "tracecontext,carrier-pigeon", "OTEL_PROPAGATORS"},
		{"OTEL_SDK_DISABLED", "maybe", "OTEL_SDK_DISABLED"},
		{"OTEL_TRACES_SAMPLER_ARG", "1%", "OTEL_TRACES_SAMPLER_ARG"},
	} {
		t.Run(tt.key, func(t *testing.T) {
			resetOtel(t)
			t.Setenv(tt.key, tt.value)
			if tt.key == "OTEL_TRACES_SAMPLER_ARG" {
				t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
			}
			_, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s=%s: %v, want an error naming %s", tt.key, tt.value, err, tt.want)
			}
		})
	}
}

func TestOtherSignalsExportersAreReportedAsIgnored(t *testing.T) {
	resetOtel(t)
	var buf strings.Builder
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("OTEL_METRICS_EXPORTER", "otlp")
	shutdown, err := manual.SetupTracing(context.Background(), manual.TracingOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if !strings.Contains(buf.String(), "variable=OTEL_METRICS_EXPORTER") {
		t.Errorf("no warning for OTEL_METRICS_EXPORTER=otlp: %q", buf.String())
	}
}
