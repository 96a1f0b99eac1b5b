package nethttp

import (
	"encoding/json"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestCollectorUnreachable: with the OTLP collector down, metrics keep
// counting exactly, failed spans are counted, readiness says why, and obsd
// keeps running and stops cleanly.
func TestCollectorUnreachable(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	closed := freePort(t) // nothing listens there
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:" + itoa(closed),
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_EXPORTER_OTLP_TIMEOUT=300",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", itoa(srv.PID()))
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	get(t, "http://"+srv.First+"/hello", 25)
	o.WaitScrape(t, 15*time.Second, "25 requests and 25 failed spans", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) == 25 && e2e.Sum(f, "obsd_span_export_errors_total", nil) == 25
	})
	code, body := o.Get(t, "/readyz")
	var rep struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if code != 503 || rep.Status != "failure" || rep.Checks["trace_exporter"] == "ok" || rep.Checks["bpf"] != "ok" {
		t.Errorf("/readyz = %d %s, want 503 naming the trace exporter only", code, body)
	}
	if code, body := o.Get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s; a collector outage must not make obsd unhealthy", code, body)
	}
	o.Stop(t)
}
