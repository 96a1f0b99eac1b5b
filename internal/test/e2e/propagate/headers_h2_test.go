package propagate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestHeadersHTTP2AndGRPC is issue 11's combined test over HTTP/2 and gRPC,
// with --propagate=headers alone (no TCP option), so every link across
// services is a traceparent header obsd added to a request in the kernel's
// copy of it:
//
//   - HTTP/2 without TLS: the edge calls A (tracechain -h2c, obsd), whose
//     handler calls B (httpserver -h2c, obsd) and C (sdkservice: package
//     manual's tracing, the OpenTelemetry SDK) over HTTP/2 connections
//     with prior knowledge, one at a time and 10 at a time (streams of one
//     connection);
//   - gRPC: the edge calls A2 (grpcapp, obsd), which calls C's otelgrpc
//     server (EmptyCall, or one message of a FullDuplexCall), and A3
//     (grpcapp, obsd), which calls B2 (grpcapp, obsd), one at a time and
//     20 at a time (grpc-go's writer batches streams' HEADERS frames).
//
// Every sampled edge request is one trace with every parent link right and
// no span before its parent; C, instrumented by obsd too, has only its SDK
// span; edge requests marked not sampled leave no span anywhere (C's
// parent-based sampler read the flag obsd sent); every request obsd's
// clients sent got a header, none skipped.
func TestHeadersHTTP2AndGRPC(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	chainBin := builds.TestdataProgram(t, "tracechain", e2e.Variant{Name: "current"})
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	grpcBin := builds.Program(t, e2e.Program{Name: "grpcapp", Src: filepath.Join(e2e.RepoRoot(), "testdata", "grpc"),
		Require: []string{"google.golang.org/grpc v1.85.0"}})
	sdkBin := builds.Get(t, "sdkservice", func(out string) error {
		return e2e.GoBuild(filepath.Join(e2e.RepoRoot(), "manual"), nil, "-o", out, "./internal/sdkservice")
	})
	recv := e2e.StartReceiver(t)
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
	svc := func(name string) []string { return []string{"OTEL_SERVICE_NAME=" + name} }
	c := e2e.Start(t, sdkBin, append(svc("h2-c"), append(otlp, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_TRACES_SAMPLER=parentbased_always_on")...))
	cAddrs := strings.Fields(c.First)
	if len(cAddrs) != 2 {
		t.Fatalf("sdkservice printed %q, want two addresses", c.First)
	}
	b := e2e.Start(t, srvBin, svc("h2-b"), "-addr", "127.0.0.1:0", "-h2c")
	a := e2e.Start(t, chainBin, svc("h2-a"), "-addr", "127.0.0.1:0", "-h2c")
	listening := func(p *e2e.Proc) string { return strings.TrimPrefix(p.First, "listening ") }
	b2 := e2e.Start(t, grpcBin, svc("grpc-b2"), "-listen", "127.0.0.1:0")
	a2 := e2e.Start(t, grpcBin, svc("grpc-a2"), "-listen", "127.0.0.1:0", "-forward", cAddrs[1])
	a3 := e2e.Start(t, grpcBin, svc("grpc-a3"), "-listen", "127.0.0.1:0", "-forward", listening(b2))
	procs := []*e2e.Proc{a, b, c, a2, a3, b2}
	args := []string{"--propagate=headers", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false"}
	for _, p := range procs {
		args = append(args, "--pid", strconv.Itoa(p.PID()))
	}
	o := e2e.StartObsd(t, obsdBin, otlp, args...)
	o.WaitScrape(t, 60*time.Second, "every service instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == float64(len(procs))
	})

	tp := func(i int, sampled bool) string {
		return fmt.Sprintf("00-%s-%s-%s", edgeTrace(i), edgeParent, map[bool]string{true: "01", false: "00"}[sampled])
	}
	edge := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(edge.CloseIdleConnections)
	get := func(i int, sampled bool) error {
		u := fmt.Sprintf("http://%s/call?ctx=request&to=http://%s/items/%d&also=http://%s/hello", a.First, b.First, i, cAddrs[0])
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Traceparent", tp(i, sampled))
		resp, err := edge.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("request %d: A answered %d: %s", i, resp.StatusCode, body)
		}
		return nil
	}
	dial := func(addr string) testpb.TestServiceClient {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return testpb.NewTestServiceClient(cc)
	}
	toC, toB2 := dial(listening(a2)), dial(listening(a3))
	call := func(cl testpb.TestServiceClient, i int, sampled, stream bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tp(i, sampled))
		body := "forward"
		if stream {
			body = "forward-stream"
		}
		if _, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(body)}}); err != nil {
			return fmt.Errorf("edge call %d: %w", i, err)
		}
		return nil
	}

	// IDs: HTTP/2 sampled 0-119, unsampled 500-509; gRPC to C 1000-1129
	// (1000-1004 streams), to B2 2000-2119; unsampled 3000-3009 (C),
	// 4000-4009 (B2).
	const h2Seq, h2Conc, gSeq, gConc, streams, unsampled = 20, 100, 20, 100, 5, 10
	for i := range h2Seq {
		if err := get(i, true); err != nil {
			t.Fatal(err)
		}
	}
	concurrently(t, 10, seqIDs(seqIDs(nil, h2Seq, h2Conc), 500, unsampled), func(i int) error { return get(i, i < 500) })
	for i := 1000; i < 1000+streams; i++ {
		if err := call(toC, i, true, true); err != nil {
			t.Fatal(err)
		}
	}
	for i := range gSeq {
		if err := call(toC, 1000+streams+i, true, false); err != nil {
			t.Fatal(err)
		}
		if err := call(toB2, 2000+i, true, false); err != nil {
			t.Fatal(err)
		}
	}
	concurrently(t, 20, seqIDs(seqIDs(seqIDs(seqIDs(nil, 1000+streams+gSeq, gConc), 2000+gSeq, gConc), 3000, unsampled), 4000, unsampled),
		func(i int) error {
			cl := toC
			if i >= 2000 && i < 3000 || i >= 4000 {
				cl = toB2
			}
			return call(cl, i, i < 3000, false)
		})

	h2Sampled, gSampled := h2Seq+h2Conc, streams+2*(gSeq+gConc)
	want := 5*h2Sampled + 3*gSampled
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d", len(spans), want)
	}
	byTrace := spansByTrace(spans)
	bad := 0
	fail := func(i int, format string, args ...any) {
		bad++
		if bad <= 10 {
			t.Errorf("request %d: "+format, append([]any{i}, args...)...)
		}
	}
	id := func(s e2e.Span) string { return hexID(s.GetSpanId()) }
	parent := func(s e2e.Span) string { return hexID(s.GetParentSpanId()) }
	// under checks that child's parent is p and it starts no earlier.
	under := func(i int, child, p e2e.Span, what string) {
		if parent(child) != id(p) {
			fail(i, "%s under %s, want %s", what, parent(child), id(p))
		} else if child.GetStartTimeUnixNano() < p.GetStartTimeUnixNano() {
			fail(i, "%s starts before its parent", what)
		}
	}
	for i := range h2Sampled {
		x := byTrace[edgeTrace(i)]
		as, ac, bs, cs := x[kind{"h2-a", "SERVER"}], x[kind{"h2-a", "CLIENT"}], x[kind{"h2-b", "SERVER"}], x[kind{"h2-c", "SERVER"}]
		if len(as) != 1 || len(ac) != 2 || len(bs) != 1 || len(cs) != 1 || len(x) != 4 {
			fail(i, "spans (A server, A client, B server, C server, kinds) %d %d %d %d %d, want 1 2 1 1 4", len(as), len(ac), len(bs), len(cs), len(x))
			continue
		}
		toB, toC := ac[0], ac[1]
		if toB.Attr("server.port") == strings.Split(cAddrs[0], ":")[1] {
			toB, toC = toC, toB
		}
		if parent(as[0]) != edgeParent {
			fail(i, "A's server span under %s, want the edge's", parent(as[0]))
		}
		under(i, toB, as[0], "A's client span to B")
		under(i, toC, as[0], "A's client span to C")
		under(i, bs[0], toB, "B's span")
		under(i, cs[0], toC, "C's SDK span")
		if got := bs[0].Attr("url.path"); got != fmt.Sprintf("/items/%d", i) {
			fail(i, "B's span is for %s", got)
		}
		if v := bs[0].Attr("network.protocol.version"); v != "2" {
			fail(i, "B's span says HTTP/%s, want 2", v)
		}
	}
	checkGRPC := func(i int, a, callee string) {
		x := byTrace[edgeTrace(i)]
		as, ac, cs := x[kind{a, "SERVER"}], x[kind{a, "CLIENT"}], x[kind{callee, "SERVER"}]
		if len(as) != 1 || len(ac) != 1 || len(cs) != 1 || len(x) != 3 {
			fail(i, "spans (%s server, client, %s server, kinds) %d %d %d %d, want 1 1 1 3", a, callee, len(as), len(ac), len(cs), len(x))
			return
		}
		if parent(as[0]) != edgeParent {
			fail(i, "%s's server span under %s, want the edge's", a, parent(as[0]))
		}
		under(i, ac[0], as[0], a+"'s client span")
		under(i, cs[0], ac[0], callee+"'s span")
	}
	for i := 1000; i < 1000+streams+gSeq+gConc; i++ {
		checkGRPC(i, "grpc-a2", "h2-c")
	}
	for i := 2000; i < 2000+gSeq+gConc; i++ {
		checkGRPC(i, "grpc-a3", "grpc-b2")
	}
	for _, from := range []int{500, 3000, 4000} {
		for i := from; i < from+unsampled; i++ {
			if x := byTrace[edgeTrace(i)]; x != nil {
				t.Errorf("request %d was not sampled at the edge, yet has spans %v", i, x)
			}
		}
	}

	fams := e2e.Families(t, o.Scrape(t))
	sentBy := 2*(h2Sampled+unsampled) + gSampled + 2*unsampled
	if n := e2e.Sum(fams, "obsd_trace_headers_injected_total", nil); n != float64(sentBy) {
		t.Errorf("obsd_trace_headers_injected_total = %v, want %d (every request A, A2 and A3 sent)", n, sentBy)
	}
	for _, m := range fams["obsd_trace_headers_skipped_total"].GetMetric() {
		if e2e.Value(m) != 0 {
			t.Errorf("obsd_trace_headers_skipped_total%v = %v, want 0", e2e.Labels(m), e2e.Value(m))
		}
	}
	if n := e2e.Sum(fams, "obsd_tcp_context_anomalies_total", map[string]string{"reason": "http2_frames_lost"}); n != 0 {
		t.Errorf("obsd lost track of %v HTTP/2 connections' frames", n)
	}
	if n := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "sent"}); n != 0 {
		t.Errorf("%v TCP options sent with --propagate=headers alone, want 0", n)
	}
	o.Stop(t)
}

// TestHeadersOldGRPCClient: grpc-go before v1.82.1 has no stream site obsd
// follows (README), so its calls go out without a traceparent, and not
// silently: each is counted as http2_stream_without_context. The edge
// calls A (grpc-go v1.68.1, obsd), which calls C (the SDK, otelgrpc): A's
// spans join the edge's trace, C's each start a trace of their own.
func TestHeadersOldGRPCClient(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	// The build grpcclient's tests make of the same version (shared cache).
	oldBin := builds.Program(t, e2e.Program{Name: "grpcapp", Src: filepath.Join(e2e.RepoRoot(), "testdata", "grpc"),
		Toolchain: "go1.22.12", Require: []string{"google.golang.org/grpc v1.68.1"}})
	sdkBin := builds.Get(t, "sdkservice", func(out string) error {
		return e2e.GoBuild(filepath.Join(e2e.RepoRoot(), "manual"), nil, "-o", out, "./internal/sdkservice")
	})
	recv := e2e.StartReceiver(t)
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
	c := e2e.Start(t, sdkBin, append([]string{"OTEL_SERVICE_NAME=old-c", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_TRACES_SAMPLER=parentbased_always_on"}, otlp...))
	cAddrs := strings.Fields(c.First)
	if len(cAddrs) != 2 {
		t.Fatalf("sdkservice printed %q, want two addresses", c.First)
	}
	a := e2e.Start(t, oldBin, []string{"OTEL_SERVICE_NAME=old-a"}, "-listen", "127.0.0.1:0", "-forward", cAddrs[1])
	o := e2e.StartObsd(t, obsdBin, otlp, "--propagate=headers", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false",
		"--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(c.PID()))
	o.WaitScrape(t, 60*time.Second, "both services instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
	})
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(a.First, "listening "), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cl := testpb.NewTestServiceClient(cc)
	const n = 30
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", edgeTrace(i), edgeParent))
		_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("forward")}})
		cancel()
		if err != nil {
			t.Fatalf("edge call %d: %v", i, err)
		}
	}
	recv.WaitSpans(t, 3*n, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	spans := recv.Spans()
	if len(spans) != 3*n {
		t.Errorf("received %d spans, want %d", len(spans), 3*n)
	}
	byTrace := spansByTrace(spans)
	for i := range n {
		x := byTrace[edgeTrace(i)]
		if len(x[kind{"old-a", "SERVER"}]) != 1 || len(x[kind{"old-a", "CLIENT"}]) != 1 || len(x) != 2 {
			t.Errorf("call %d: the edge's trace holds %v, want A's server and client span alone", i, x)
		}
	}
	roots := 0
	for _, x := range byTrace {
		if cs := x[kind{"old-c", "SERVER"}]; len(cs) == 1 && len(x) == 1 && len(cs[0].GetParentSpanId()) == 0 {
			roots++
		}
	}
	if roots != n {
		t.Errorf("C made %d root spans alone in their traces, want %d (one per call, none joined)", roots, n)
	}
	fams := e2e.Families(t, o.Scrape(t))
	if got := e2e.Sum(fams, "obsd_trace_headers_skipped_total", map[string]string{"reason": "http2_stream_without_context"}); got != n {
		t.Errorf("skipped{http2_stream_without_context} = %v, want %d (every call A made)", got, n)
	}
	if got := e2e.Sum(fams, "obsd_trace_headers_injected_total", nil); got != 0 {
		t.Errorf("obsd_trace_headers_injected_total = %v, want 0", got)
	}
	o.Stop(t)
}
