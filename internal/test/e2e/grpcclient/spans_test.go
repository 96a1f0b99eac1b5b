package grpcclient

import (
	"strconv"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestClientSpans: with spans on (every call sampled), a real OTLP receiver
// gets exactly one CLIENT span per call the client made, with the method,
// status code and server as the client saw them, and span status Error for
// every code but OK.
func TestClientSpans(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	bin := grpcApp(t, versions[len(versions)-1])
	srv := e2e.Start(t, bin, nil, "-listen", "127.0.0.1:0")
	addr := strings.TrimPrefix(srv.First, "listening ")
	host, port, _ := strings.Cut(addr, ":")

	cl := startClient(t, bin, addr, 1, "OTEL_SERVICE_NAME=caller")
	recv := e2e.StartReceiver(t)
	e2e.StartObsd(t, obsdBin, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"},
		"--pid", strconv.Itoa(cl.proc.PID()))
	waitLinks(t, cl.proc.PID())
	want := cl.run(t)
	total := 0
	for _, codes := range want {
		for _, n := range codes {
			total += n
		}
	}
	spans := recv.WaitSpans(t, total, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	spans = recv.Spans()
	if len(spans) != total {
		t.Fatalf("%d spans, want %d (one per call)", len(spans), total)
	}
	got := tally{}
	for _, s := range spans {
		if s.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("span %q of kind %v, want CLIENT", s.GetName(), s.GetKind())
		}
		if s.Resource["service.name"] != "caller" {
			t.Errorf("span %q of service %q", s.GetName(), s.Resource["service.name"])
		}
		if s.Attr("rpc.system.name") != "grpc" || s.Attr("server.address") != host || s.Attr("server.port") != port {
			t.Errorf("span %q: rpc.system.name %q, server %q:%q, want grpc, %s", s.GetName(),
				s.Attr("rpc.system.name"), s.Attr("server.address"), s.Attr("server.port"), addr)
		}
		if s.GetName() != s.Attr("rpc.method") {
			t.Errorf("span named %q for rpc.method %q", s.GetName(), s.Attr("rpc.method"))
		}
		code := s.Attr("rpc.response.status_code")
		if isErr := s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr != (code != "OK") {
			t.Errorf("span %q with code %s has status %v", s.GetName(), code, s.GetStatus().GetCode())
		}
		if s.GetEndTimeUnixNano() <= s.GetStartTimeUnixNano() {
			t.Errorf("span %q does not last: %d to %d", s.GetName(), s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano())
		}
		m := "/" + s.Attr("rpc.method")
		if got[m] == nil {
			got[m] = map[string]int{}
		}
		got[m][code]++
	}
	spec := tally{}
	for m, codes := range want {
		spec[m] = map[string]int{}
		for c, n := range codes {
			spec[m][specCodes[c]] = n
		}
	}
	if !sameTally(got, spec) {
		t.Errorf("spans per method and code\n%v\nthe client's\n%v", got, spec)
	}
}
