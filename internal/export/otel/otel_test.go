package otelexport

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// receiver is a real OTLP/gRPC trace endpoint that records what it gets.
type receiver struct {
	coltracepb.UnimplementedTraceServiceServer
	addr string
	// reply, when set, decides the answer to each request.
	reply func(*coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error)

	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
}

func (r *receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	if r.reply != nil {
		return r.reply(req)
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// spans flattens everything received so far, keyed by service.name.
func (r *receiver) spans() map[string][]receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]receivedSpan{}
	for _, req := range r.reqs {
		for _, rs := range req.ResourceSpans {
			res := kvMap(rs.Resource.Attributes)
			name, _ := res["service.name"].(string)
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out[name] = append(out[name], receivedSpan{res: res, scope: ss.Scope.GetName(), span: s})
				}
			}
		}
	}
	return out
}

type receivedSpan struct {
	res   map[string]any
	scope string
	span  *tracepb.Span
}

func startReceiver(t *testing.T, reply func(*coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error)) *receiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	r := &receiver{addr: lis.Addr().String(), reply: reply}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, r)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return r
}

// setOTLPEnv points the SDK at addr and clears settings the environment
// running the tests might carry.
func setOTLPEnv(t *testing.T, addr string, extra map[string]string) {
	t.Helper()
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://" + addr,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
		"OTEL_EXPORTER_OTLP_INSECURE":        "true",
		"OTEL_EXPORTER_OTLP_TIMEOUT":         "",
		"OTEL_TRACES_SAMPLER":                "",
		"OTEL_TRACES_SAMPLER_ARG":            "",
		"OTEL_RESOURCE_ATTRIBUTES":           "",
		"OTEL_SERVICE_NAME":                  "",
		"OTEL_BSP_SCHEDULE_DELAY":            "",
		"OTEL_BSP_MAX_QUEUE_SIZE":            "",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE":     "",
		observabilityEnv:                     "",
	}
	for k, v := range extra {
		env[k] = v
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func kvMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = v.BoolValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.Key] = v.DoubleValue
		default:
			m[kv.Key] = fmt.Sprintf("unexpected %T", v)
		}
	}
	return m
}

// syncBuffer is a log destination safe to read while the SDK writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newExporter(t *testing.T, o Options) (*Exporter, *prometheus.Registry, *syncBuffer) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	logs := &syncBuffer{}
	o.Registerer = reg
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := New(t.Context(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e, reg, logs
}

// counters reads the obsd_span* counters from reg.
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func shutdown(t *testing.T, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

var (
	svcA = export.Service{
		Name: "checkout", InstanceID: "node-1:1001", Host: "node-1", PID: 1001,
		Attrs: map[string]string{"team": "payments", "service.version": "1.2.3"},
	}
	svcB = export.Service{Name: "cache", InstanceID: "node-1:2002", Host: "node-1", PID: 2002}
)

func TestOTLPSpans(t *testing.T) {
	rcv := startReceiver(t, nil)
	setOTLPEnv(t, rcv.addr, map[string]string{
		// obsd's own identity must not leak onto the targets' resources.
		"OTEL_SERVICE_NAME":        "obsd",
		"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,service.name=from-attrs,team=env",
		// Long enough that only Forget and Shutdown flush.
		"OTEL_BSP_SCHEDULE_DELAY": "60000",
	})
	e, reg, _ := newExporter(t, Options{
		Mode:  ModeOTLP,
		Attrs: map[string]string{"k8s.node.name": "node-1", "team": "obsd-wide"},
	})
	if err := e.Check(t.Context()); err != nil {
		t.Fatalf("Check before any export, collector up: %v", err)
	}

	now := monoNow(t)
	wallNow := time.Now()
	reqs := []struct {
		svc   export.Service
		req   probe.Request
		ago   time.Duration // start, before now
		took  time.Duration
		name  string
		attrs map[string]any
		code  tracepb.Status_StatusCode
	}{
		{
			svc: svcA, req: probe.Request{Sampled: true, Method: "GET", Path: "/items/42", Pattern: "GET /items/{id}", Status: 200},
			ago: 40 * time.Millisecond, took: 1234567 * time.Nanosecond,
			name: "GET /items/{id}",
			attrs: map[string]any{"http.request.method": "GET", "url.scheme": "http", "url.path": "/items/42",
				"http.response.status_code": int64(200), "http.route": "/items/{id}", "obsd.route.source": "pattern"},
			code: tracepb.Status_STATUS_CODE_UNSET,
		},
		{
			svc: svcA, req: probe.Request{Sampled: true, Method: "POST", Path: "/pay", Status: 503},
			ago: 30 * time.Millisecond, took: 20 * time.Millisecond,
			name: "POST /pay",
			attrs: map[string]any{"http.request.method": "POST", "url.scheme": "http", "url.path": "/pay",
				"http.response.status_code": int64(503), "error.type": "503",
				"http.route": "/pay", "obsd.route.source": "fallback"},
			code: tracepb.Status_STATUS_CODE_ERROR,
		},
		{
			svc: svcB, req: probe.Request{Sampled: true, Method: "PURGE", Path: "/cache/k", Pattern: "/cache/", Status: 404},
			ago: 10 * time.Millisecond, took: 1,
			name: "HTTP /cache/",
			attrs: map[string]any{"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
				"url.scheme": "http", "url.path": "/cache/k", "http.response.status_code": int64(404),
				"http.route": "/cache/", "obsd.route.source": "pattern"},
			code: tracepb.Status_STATUS_CODE_UNSET,
		},
	}
	sent := map[string]trace.SpanContext{}
	for _, r := range reqs {
		r.req.Kind = probe.KindHTTPServer
		r.req.PID = uint32(r.svc.PID)
		r.req.StartNS = now - uint64(r.ago)
		r.req.EndNS = r.req.StartNS + uint64(r.took)
		sc := spanOf(e, r.svc, r.req)
		if !sc.IsValid() || !sc.IsSampled() {
			t.Fatalf("Span(%s) = %+v, want a valid sampled context", r.name, sc)
		}
		sent[r.name] = sc
	}

	// Forget flushes the exited process's spans without waiting for the
	// batch timer.
	e.Forget(svcB.PID)
	waitFor(t, "the forgotten process's span", func() bool { return len(rcv.spans()["cache"]) == 1 })
	if got := len(rcv.spans()["checkout"]); got != 0 {
		t.Fatalf("checkout spans before Shutdown = %d, want 0 (batch timer is 60 s)", got)
	}
	shutdown(t, e)

	got := rcv.spans()
	if len(got) != 2 || len(got["checkout"]) != 2 || len(got["cache"]) != 1 {
		t.Fatalf("received services %v, want checkout with 2 spans and cache with 1", got)
	}
	sdkAttrs := map[string]any{
		"telemetry.sdk.language": "go", "telemetry.sdk.name": "opentelemetry",
		"telemetry.sdk.version": sdk.Version(),
		// From obsd's OTEL_RESOURCE_ATTRIBUTES and Options.Attrs.
		"deployment.environment.name": "test", "k8s.node.name": "node-1",
	}
	wantRes := map[string]map[string]any{
		"checkout": merge(sdkAttrs, map[string]any{
			"service.name": "checkout", "service.instance.id": "node-1:1001", "host.name": "node-1",
			"process.pid": int64(1001), "team": "payments", "service.version": "1.2.3",
		}),
		"cache": merge(sdkAttrs, map[string]any{
			"service.name": "cache", "service.instance.id": "node-1:2002", "host.name": "node-1",
			"process.pid": int64(2002), "team": "obsd-wide",
		}),
	}
	byName := map[string]receivedSpan{}
	for svc, spans := range got {
		for _, s := range spans {
			if !reflect.DeepEqual(s.res, wantRes[svc]) {
				t.Errorf("resource of %s = %v\nwant %v", svc, s.res, wantRes[svc])
			}
			if s.scope != ScopeName {
				t.Errorf("scope = %q, want %q", s.scope, ScopeName)
			}
			byName[s.span.Name] = s
		}
	}
	for _, r := range reqs {
		s, ok := byName[r.name]
		if !ok {
			t.Errorf("no span named %q; got %v", r.name, byName)
			continue
		}
		sp := s.span
		if sp.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: kind = %v, want SERVER", r.name, sp.Kind)
		}
		if a := kvMap(sp.Attributes); !reflect.DeepEqual(a, r.attrs) {
			t.Errorf("%s: attributes = %v\nwant %v", r.name, a, r.attrs)
		}
		if sp.Status.GetCode() != r.code {
			t.Errorf("%s: status = %v, want %v", r.name, sp.Status.GetCode(), r.code)
		}
		if len(sp.ParentSpanId) != 0 {
			t.Errorf("%s: parent = %x, want a root span", r.name, sp.ParentSpanId)
		}
		sc := sent[r.name]
		if tid := sc.TraceID(); hex.EncodeToString(sp.TraceId) != tid.String() {
			t.Errorf("%s: trace id %x, Span returned %s", r.name, sp.TraceId, tid)
		}
		// The duration is exact: both ends go through the same offset.
		if d := sp.EndTimeUnixNano - sp.StartTimeUnixNano; d != uint64(r.took) {
			t.Errorf("%s: duration = %d ns, want %d", r.name, d, uint64(r.took))
		}
		wantStart := wallNow.Add(-r.ago)
		if off := time.Unix(0, int64(sp.StartTimeUnixNano)).Sub(wantStart); off < -3*time.Millisecond || off > 3*time.Millisecond {
			t.Errorf("%s: start is %v off the expected wall time", r.name, off)
		}
	}
	wantCounts := map[string]float64{
		"obsd_spans_created_total": 3, "obsd_spans_exported_total": 3,
		"obsd_span_export_errors_total": 0, "obsd_spans_dropped_total": 0,
	}
	if c := counters(t, reg); !reflect.DeepEqual(c, wantCounts) {
		t.Errorf("counters = %v, want %v", c, wantCounts)
	}
	// After Shutdown spans are ignored, not panics.
	if sc := spanOf(e, svcA, probe.Request{Sampled: true, Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now}); sc.IsValid() {
		t.Errorf("Span after Shutdown = %+v, want empty", sc)
	}
	if err := e.Shutdown(t.Context()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func merge(a, b map[string]any) map[string]any {
	m := map[string]any{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

func TestOTLPPartialSuccess(t *testing.T) {
	rcv := startReceiver(t, func(*coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
		return &coltracepb.ExportTraceServiceResponse{PartialSuccess: &coltracepb.ExportTracePartialSuccess{
			RejectedSpans: 1, ErrorMessage: "span too (big)",
		}}, nil
	})
	setOTLPEnv(t, rcv.addr, map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "60000"})
	e, reg, logs := newExporter(t, Options{Mode: ModeOTLP})
	now := monoNow(t)
	for range 2 {
		spanOf(e, svcA, probe.Request{Sampled: true, Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now + 1000})
	}
	shutdown(t, e)
	want := map[string]float64{
		"obsd_spans_created_total": 2, "obsd_spans_exported_total": 1,
		"obsd_span_export_errors_total": 1, "obsd_spans_dropped_total": 0,
	}
	if c := counters(t, reg); !reflect.DeepEqual(c, want) {
		t.Errorf("counters = %v, want %v", c, want)
	}
	// The collector answered, so readiness holds.
	if err := e.Check(t.Context()); err != nil {
		t.Errorf("Check after a partial success: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "span too (big)") || !strings.Contains(l, "failed_spans=1") {
		t.Errorf("logs do not report the rejection:\n%s", l)
	}
}

func TestOTLPUnreachable(t *testing.T) {
	// A port that was just free: connections are refused.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	setOTLPEnv(t, addr, map[string]string{
		"OTEL_EXPORTER_OTLP_TIMEOUT": "200",
		"OTEL_BSP_SCHEDULE_DELAY":    "10",
	})
	e, reg, logs := newExporter(t, Options{Mode: ModeOTLP})

	if err := e.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "reaching the OTLP collector") {
		t.Fatalf("Check before any export = %v, want a dial error", err)
	}
	errCount := func() float64 { return counters(t, reg)["obsd_span_export_errors_total"] }
	now := monoNow(t)
	req := probe.Request{Sampled: true, Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now + 1000}
	spanOf(e, svcA, req)
	waitFor(t, "the first failed export", func() bool { return errCount() == 1 })
	spanOf(e, svcA, req)
	spanOf(e, svcB, req)
	waitFor(t, "three failed spans", func() bool { return errCount() == 3 })

	if err := e.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "exporting spans at") {
		t.Fatalf("Check after failed exports = %v, want the export error", err)
	}
	// One line for the first failure; the next, within the minute, is only counted.
	if n := strings.Count(logs.String(), "exporting spans failed"); n != 1 {
		t.Errorf("failure lines logged = %d, want 1:\n%s", n, logs.String())
	}

	spanOf(e, svcB, req) // still queued when Shutdown starts, or in flight
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_ = e.Shutdown(ctx) // may report the deadline; must not hang
	if d := time.Since(start); d > 3500*time.Millisecond {
		t.Errorf("Shutdown took %v", d)
	}
	c := counters(t, reg)
	if c["obsd_spans_created_total"] != 4 || c["obsd_spans_exported_total"] != 0 ||
		c["obsd_span_export_errors_total"]+c["obsd_spans_dropped_total"] != 4 {
		t.Errorf("counters = %v, want 4 created, 0 exported, 4 failed", c)
	}
}

// TestDroppedSpansCounted fills a one-span queue while the collector
// stalls and checks that every span is accounted for as exported or
// dropped. It also guards the SDK names dropped.go relies on.
func TestDroppedSpansCounted(t *testing.T) {
	release := make(chan struct{})
	rcv := startReceiver(t, func(*coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
		<-release
		return &coltracepb.ExportTraceServiceResponse{}, nil
	})
	setOTLPEnv(t, rcv.addr, map[string]string{
		"OTEL_BSP_MAX_QUEUE_SIZE":        "1",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
		observabilityEnv:                 "true",
	})
	e, reg, _ := newExporter(t, Options{Mode: ModeOTLP})
	// Global state, as main would set it; restored for the other tests.
	otel.SetMeterProvider(e.MeterProvider())
	t.Cleanup(func() { otel.SetMeterProvider(noop.NewMeterProvider()) })

	const n = 50
	now := monoNow(t)
	for range n {
		spanOf(e, svcA, probe.Request{Sampled: true, Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now + 1000})
	}
	// At most one span is in the stalled export and one in the queue.
	if d := counters(t, reg)["obsd_spans_dropped_total"]; d < n-2 {
		t.Errorf("dropped = %v while the collector stalls, want at least %d", d, n-2)
	}
	close(release)
	shutdown(t, e)
	c := counters(t, reg)
	if c["obsd_spans_exported_total"]+c["obsd_spans_dropped_total"] != n || c["obsd_span_export_errors_total"] != 0 {
		t.Errorf("counters = %v, want exported + dropped = %d", c, n)
	}
	if got := len(rcv.spans()["checkout"]); float64(got) != c["obsd_spans_exported_total"] {
		t.Errorf("collector got %d spans, exported counter says %v", got, c["obsd_spans_exported_total"])
	}
}

func TestStdout(t *testing.T) {
	setOTLPEnv(t, "127.0.0.1:1", nil)
	var out bytes.Buffer
	e, reg, _ := newExporter(t, Options{Mode: ModeStdout, Stdout: &out})
	if err := e.Check(t.Context()); err != nil {
		t.Errorf("Check in stdout mode: %v", err)
	}
	now := monoNow(t)
	spanOf(e, svcA, probe.Request{Sampled: true, Method: "GET", Path: "/items/1", Pattern: "/items/{id}", Status: 200, StartNS: now, EndNS: now + 5000})
	spanOf(e, svcB, probe.Request{Sampled: true, Method: "DELETE", Path: "/k", Status: 500, StartNS: now, EndNS: now + 5000})
	shutdown(t, e)

	type kv struct {
		Key   string
		Value struct{ Value any }
	}
	var got []string
	dec := json.NewDecoder(&out)
	for {
		var s struct {
			Name       string
			SpanKind   int
			Attributes []kv
			Resource   []kv
			Status     struct{ Code string }
		}
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("stdout output is not a JSON stream: %v\n%s", err, out.String())
		}
		svc := ""
		for _, a := range s.Resource {
			if a.Key == "service.name" {
				svc = fmt.Sprint(a.Value.Value)
			}
		}
		if s.SpanKind != int(trace.SpanKindServer) {
			t.Errorf("%s: kind %d, want server", s.Name, s.SpanKind)
		}
		got = append(got, svc+" "+s.Name+" "+s.Status.Code+" "+strconv.Itoa(len(s.Attributes)))
	}
	want := []string{"checkout GET /items/{id} Unset 6", "cache DELETE /k Error 7"}
	if len(got) != 2 || !(reflect.DeepEqual(got, want) || reflect.DeepEqual(got, []string{want[1], want[0]})) {
		t.Errorf("stdout spans = %q, want %q in any order", got, want)
	}
	if c := counters(t, reg); c["obsd_spans_exported_total"] != 2 {
		t.Errorf("counters = %v, want 2 exported", c)
	}
}

// TestSpanContextFromProbe: the span carries the IDs, parent, tracestate
// and sampling the probe decided, whatever OTEL_TRACES_SAMPLER says to the
// SDK (the probe applied it), and a span kept for being slow or failing says
// why.
func TestSpanContextFromProbe(t *testing.T) {
	const (
		high, low    = 0x0af7651916cd43dd, 0x8448eb211c80319c
		span, parent = 0x00f067aa0ba902b7, 0xb7ad6b7169203331
		wantTraceID  = "0af7651916cd43dd8448eb211c80319c"
		wantSpanID   = "00f067aa0ba902b7"
		wantParentID = "b7ad6b7169203331"
		goodState    = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
		invalidState = "not a=valid==state"
		noParent     = "0000000000000000"
	)
	tests := []struct {
		name                  string
		trace                 probe.Trace
		wantParent, wantState string
		wantKept              string
	}{
		{name: "root", trace: probe.Trace{TraceIDHigh: high, SpanID: span}, wantParent: noParent},
		{name: "remote parent", trace: probe.Trace{TraceIDHigh: high, SpanID: span, ParentSpanID: parent, Remote: true, ParentSampled: true, TraceState: goodState},
			wantParent: wantParentID, wantState: goodState},
		{name: "invalid tracestate dropped", trace: probe.Trace{TraceIDHigh: high, SpanID: span, ParentSpanID: parent, Remote: true, TraceState: invalidState},
			wantParent: wantParentID},
		{name: "kept slow", trace: probe.Trace{TraceIDHigh: high, SpanID: span, ParentSpanID: parent, Remote: true, KeptSlow: true},
			wantParent: wantParentID, wantKept: "slow"},
		{name: "kept slow and failing", trace: probe.Trace{TraceIDHigh: high, SpanID: span, KeptSlow: true, KeptError: true},
			wantParent: noParent, wantKept: "slow,error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// always_off: the SDK's own sampler would drop everything.
			setOTLPEnv(t, "127.0.0.1:1", map[string]string{"OTEL_TRACES_SAMPLER": "always_off"})
			var out bytes.Buffer
			e, _, _ := newExporter(t, Options{Mode: ModeStdout, Stdout: &out})
			now := monoNow(t)
			sc := spanOf(e, svcA, probe.Request{Sampled: true, TraceIDLow: low, Trace: tt.trace,
				Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now})
			if !sc.IsSampled() || sc.TraceID().String() != wantTraceID || sc.SpanID().String() != wantSpanID {
				t.Errorf("Span = %+v, want sampled, trace %s, span %s", sc, wantTraceID, wantSpanID)
			}
			shutdown(t, e)
			var got struct {
				SpanContext struct{ TraceID, SpanID, TraceState string }
				Parent      struct {
					TraceID, SpanID string
					Remote          bool
				}
				Attributes []struct {
					Key   string
					Value struct{ Value any }
				}
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("stdout %q: %v", out.String(), err)
			}
			if got.SpanContext.TraceID != wantTraceID || got.SpanContext.SpanID != wantSpanID ||
				got.Parent.SpanID != tt.wantParent || got.SpanContext.TraceState != tt.wantState {
				t.Errorf("exported %+v, want trace %s span %s parent %s tracestate %q", got, wantTraceID, wantSpanID, tt.wantParent, tt.wantState)
			}
			if tt.wantParent != noParent && (got.Parent.TraceID != wantTraceID || !got.Parent.Remote) {
				t.Errorf("parent %+v, want remote in trace %s", got.Parent, wantTraceID)
			}
			kept := ""
			for _, a := range got.Attributes {
				if a.Key == KeptReasonKey {
					kept, _ = a.Value.Value.(string)
				}
			}
			if kept != tt.wantKept {
				t.Errorf("%s = %q, want %q", KeptReasonKey, kept, tt.wantKept)
			}
		})
	}
}

// TestUnsampledRequestMakesNoSpan: the probe's sampling decision stands; a
// request it did not sample reaches the exporter only for its metrics.
func TestUnsampledRequestMakesNoSpan(t *testing.T) {
	setOTLPEnv(t, "127.0.0.1:1", nil)
	var out bytes.Buffer
	e, reg, _ := newExporter(t, Options{Mode: ModeStdout, Stdout: &out})
	now := monoNow(t)
	if sc := spanOf(e, svcA, probe.Request{Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now}); sc.IsValid() {
		t.Errorf("Span = %+v, want none", sc)
	}
	shutdown(t, e)
	if out.Len() != 0 {
		t.Errorf("exported:\n%s", out.String())
	}
	if c := counters(t, reg); c["obsd_spans_created_total"] != 0 {
		t.Errorf("counters = %v, want 0 created", c)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		opts    Options
		wantErr string
	}{
		{name: "no registerer", opts: Options{Mode: ModeNone}, wantErr: "Registerer is nil"},
		{name: "unknown mode", opts: Options{Mode: "zipkin"}, wantErr: `unknown mode "zipkin"`},
		{name: "bad sampler", opts: Options{Mode: ModeStdout}, env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"},
			wantErr: `"sometimes" is not supported`},
		{name: "bad resource attributes", opts: Options{Mode: ModeStdout}, env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"},
			wantErr: "reading OTEL_RESOURCE_ATTRIBUTES"},
		{name: "bad endpoint", opts: Options{Mode: ModeOTLP}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"},
			wantErr: "parsing OTEL_EXPORTER_OTLP_ENDPOINT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setOTLPEnv(t, "127.0.0.1:1", tt.env)
			if tt.name != "no registerer" {
				tt.opts.Registerer = prometheus.NewRegistry()
			}
			e, err := New(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() = %v, %v; want error containing %q", e, err, tt.wantErr)
			}
		})
	}

	t.Run("same registry twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := New(t.Context(), Options{Registerer: reg}); err != nil {
			t.Fatal(err)
		}
		if _, err := New(t.Context(), Options{Registerer: reg}); err == nil ||
			!strings.Contains(err.Error(), "registering span metrics") {
			t.Fatalf("second New on one registry = %v, want a registration error", err)
		}
	})
}

func TestModeNone(t *testing.T) {
	e, reg, _ := newExporter(t, Options{}) // zero Mode is none
	now := monoNow(t)
	if sc := spanOf(e, svcA, probe.Request{Sampled: true, Method: "GET", Path: "/", Status: 200, StartNS: now, EndNS: now}); sc.IsValid() {
		t.Errorf("Span in none mode = %+v, want empty", sc)
	}
	e.Forget(svcA.PID)
	if err := e.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
	shutdown(t, e)
	want := map[string]float64{
		"obsd_spans_created_total": 0, "obsd_spans_exported_total": 0,
		"obsd_span_export_errors_total": 0, "obsd_spans_dropped_total": 0,
	}
	if c := counters(t, reg); !reflect.DeepEqual(c, want) {
		t.Errorf("counters = %v, want %v", c, want)
	}
}

func TestErrorHandler(t *testing.T) {
	logs := &syncBuffer{}
	h := ErrorHandler(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	h.Handle(countedError{errors.New("export failed")})
	h.Handle(errors.New("something else"))
	if l := logs.String(); strings.Contains(l, "export failed") || !strings.Contains(l, "something else") {
		t.Errorf("logs = %q, want only the uncounted error", l)
	}
}

func TestMain(m *testing.M) {
	// As main does: the SDK's own copies of counted export errors go to
	// Debug instead of the standard logger.
	otel.SetErrorHandler(ErrorHandler(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	os.Exit(m.Run())
}

func BenchmarkSpan(b *testing.B) {
	for _, mode := range []Mode{ModeNone, ModeStdout} {
		b.Run(string(mode), func(b *testing.B) {
			e, err := New(b.Context(), Options{Mode: mode, Stdout: io.Discard, Registerer: prometheus.NewRegistry(),
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown(context.Background())
			var ts unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
			now := uint64(ts.Nano())
			r := probe.Request{Sampled: true, Method: "GET", Path: "/items/42", Pattern: "GET /items/{id}", Status: 200, StartNS: now, EndNS: now + 1000, PID: 1001}
			b.ReportAllocs()
			for b.Loop() {
				spanOf(e, svcA, r)
			}
		})
	}
}

func TestBatchOptions(t *testing.T) {
	if n := len(batchOptions(func(string) string { return "" })); n != 1 {
		t.Errorf("no OTEL_BSP_MAX_QUEUE_SIZE: %d options, want obsd's queue size", n)
	}
	env := func(k string) string {
		if k == "OTEL_BSP_MAX_QUEUE_SIZE" {
			return "100"
		}
		return ""
	}
	if n := len(batchOptions(env)); n != 0 {
		t.Errorf("OTEL_BSP_MAX_QUEUE_SIZE set: %d options, want none so the variable wins", n)
	}
}

// spanOf makes r's span with the route the agent would pass: that of a
// fresh process.
func spanOf(e *Exporter, svc export.Service, r probe.Request) trace.SpanContext {
	return e.HTTPServerSpan(svc, r, export.NewRoutes(slog.New(slog.DiscardHandler)).Route(svc, r))
}
