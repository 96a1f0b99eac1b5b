package nethttp

import (
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestManualTracingNotDuplicated: a service that traces itself with
// manual.SetupTracing (it links the OTel SDK) gets obsd's metrics but no
// spans from obsd, so no request is traced twice.
func TestManualTracingNotDuplicated(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	svcBin := builds.Get(t, "manual-service", func(out string) error {
		return e2e.GoBuild(filepath.Join(e2e.RepoRoot(), "manual"), nil, "-o", out, "./examples/service")
	})
	appRecv := e2e.StartReceiver(t)
	svc := e2e.Start(t, svcBin, []string{
		"OTEL_SERVICE_NAME=manual-svc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + appRecv.Endpoint,
		// manual/ follows the specification's default, http/protobuf;
		// this receiver speaks OTLP/gRPC.
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_TRACES_SAMPLER=always_on",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "-addr", "127.0.0.1:0")

	obsdRecv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + obsdRecv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", itoa(svc.PID()))
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
	get(t, "http://"+svc.First+"/hello", 9)
	o.WaitScrape(t, 10*time.Second, "9 requests", func(f map[string]*dto.MetricFamily) bool {
		// The example routes through an outer mux ("/") and otelhttp, which
		// copies the request, so the outer pattern is the route obsd sees.
		return e2e.Sum(f, "http_server_request_duration_seconds", map[string]string{
			"service_name": "manual-svc", "http_route": "/"}) == 9
	})
	appRecv.WaitSpans(t, 9, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // several of obsd's batch intervals
	if n := len(obsdRecv.Spans()); n != 0 {
		t.Errorf("obsd exported %d spans for a service that traces itself, want 0", n)
	}
	o.Stop(t)
}
