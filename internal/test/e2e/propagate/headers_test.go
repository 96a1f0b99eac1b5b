package propagate

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// recorder is a bare HTTP/1.1 server that keeps the exact bytes of each
// request head it receives (GETs: no body), by request target: the truth
// of what a caller sent, read by no HTTP library.
type recorder struct {
	addr  string
	mu    sync.Mutex
	heads map[string][]string
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &recorder{addr: ln.Addr().String(), heads: map[string][]string{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *recorder) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			head.WriteString(line)
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		h := head.String()
		target := strings.Fields(h)[1]
		r.mu.Lock()
		r.heads[target] = append(r.heads[target], h)
		r.mu.Unlock()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"); err != nil {
			return
		}
	}
}

func (r *recorder) head(target string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.heads[target]...)
}

// TestHeadersAcrossServices: the edge calls service A (tracechain, under
// obsd, --propagate=headers), which serves each request by calling
// service B (httpserver, under obsd) and then service C (manual/'s example
// service, which traces itself with the OpenTelemetry SDK: obsd counts it
// but makes no spans for it). No TCP option is written: only the
// traceparent header obsd adds to A's requests carries the context, under
// lockdown. For each sampled edge request, one at a time and then 20 at a
// time: five spans in the edge's trace (A's server span under the edge,
// A's two client spans under it, B's server span under A's client span for
// B, C's SDK span under A's client span for C), none starting before its
// parent, and no other span for C. Edge requests marked not sampled leave
// no span anywhere (B's obsd and C's SDK follow the flag that crossed).
// Requests to a bare recorder arrive byte-identical to those an
// uninstrumented A sends, but for one traceparent line before the blank
// line, naming A's client span; a request A already gives a traceparent
// arrives with that one only. A's connection to B is opened before obsd
// starts (adopted).
func TestHeadersAcrossServices(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	chainBin := builds.TestdataProgram(t, "tracechain", e2e.Variant{Name: "current"})
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	svcBin := builds.Get(t, "manual-service", func(out string) error {
		return e2e.GoBuild(filepath.Join(e2e.RepoRoot(), "manual"), nil, "-o", out, "./examples/service")
	})
	recv := e2e.StartReceiver(t)
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
	rec := startRecorder(t)
	b := e2e.Start(t, srvBin, []string{"OTEL_SERVICE_NAME=hdr-b"}, "-addr", "127.0.0.1:0")
	c := e2e.Start(t, svcBin, append([]string{"OTEL_SERVICE_NAME=hdr-c",
		// manual/ follows the specification's default, http/protobuf;
		// this receiver speaks OTLP/gRPC.
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_TRACES_SAMPLER=parentbased_always_on"}, otlp...), "-addr", "127.0.0.1:0")
	edge := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(edge.CloseIdleConnections)
	get := func(a *e2e.Proc, i int, sampled bool, query string) error {
		req, err := http.NewRequest("GET", "http://"+a.First+"/call?ctx=request&"+query, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Traceparent", fmt.Sprintf("00-%s-%s-%s", edgeTrace(i), edgeParent, map[bool]string{true: "01", false: "00"}[sampled]))
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
	const raws = 5
	rawTo := func(i int) string { return fmt.Sprintf("to=http://%s/raw/%d", rec.addr, i) }
	// What A sends with no obsd anywhere.
	a0 := e2e.Start(t, chainBin, []string{"OTEL_SERVICE_NAME=hdr-a0"}, "-addr", "127.0.0.1:0")
	for i := range raws {
		if err := get(a0, 9000+i, true, rawTo(i)); err != nil {
			t.Fatal(err)
		}
	}
	baseline := map[int]string{}
	for i := range raws {
		h := rec.head(fmt.Sprintf("/raw/%d", i))
		if len(h) != 1 {
			t.Fatalf("the recorder has %d heads for /raw/%d, want 1", len(h), i)
		}
		baseline[i] = h[0]
	}
	a0.Cmd.Process.Kill()

	a := e2e.Start(t, chainBin, []string{"OTEL_SERVICE_NAME=hdr-a"}, "-addr", "127.0.0.1:0")
	// A's keep-alive connection to B opens before obsd: adopted when obsd
	// registers A, or the sequential requests below would not join.
	if err := get(a, 8000, true, fmt.Sprintf("to=http://%s/items/8000", b.First)); err != nil {
		t.Fatal(err)
	}
	o := e2e.StartObsd(t, obsdBin, otlp, "--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(b.PID()), "--pid", strconv.Itoa(c.PID()),
		"--propagate=headers", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
	o.WaitScrape(t, 60*time.Second, "A, B and C instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 3
	})

	for i := range raws {
		if err := get(a, 7000+i, true, rawTo(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	const ownTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := get(a, 7100, true, fmt.Sprintf("to=http://%s/raw/own&tp=%s", rec.addr, ownTP)); err != nil {
		t.Fatal(err)
	}
	const seq, conc, workers, unsampled = 30, 200, 20, 20
	bc := func(i int) string {
		return fmt.Sprintf("to=http://%s/items/%d&also=http://%s/hello", b.First, i, c.First)
	}
	for i := range seq {
		if err := get(a, i, true, bc(i)); err != nil {
			t.Fatal(err)
		}
	}
	concurrently(t, workers, seqIDs(seqIDs(nil, 1000, conc), 3000, unsampled), func(i int) error {
		return get(a, i, i < 3000, bc(i))
	})

	// Spans: A's server and client per raw request (7000+i, 7100), five
	// per sampled B+C request.
	want := 2*(raws+1) + 5*(seq+conc)
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d", len(spans), want)
	}
	byTrace := spansByTrace(spans)
	aServer, aClient, bServer, cServer := kind{"hdr-a", "SERVER"}, kind{"hdr-a", "CLIENT"}, kind{"hdr-b", "SERVER"}, kind{"hdr-c", "SERVER"}

	// The recorder's requests: the baseline plus one line, A's client span.
	for i := range raws {
		x := byTrace[edgeTrace(7000+i)]
		got := rec.head(fmt.Sprintf("/raw/%d", 100+i))
		if len(x[aClient]) != 1 || len(got) != 1 {
			t.Errorf("raw request %d: %d client spans, %d heads; want 1 and 1", i, len(x[aClient]), len(got))
			continue
		}
		line := fmt.Sprintf("traceparent: 00-%s-%s-01\r\n", edgeTrace(7000+i), hexID(x[aClient][0].GetSpanId()))
		base := strings.Replace(baseline[i], fmt.Sprintf("/raw/%d ", i), fmt.Sprintf("/raw/%d ", 100+i), 1)
		if wantHead := base[:len(base)-2] + line + "\r\n"; got[0] != wantHead {
			t.Errorf("raw request %d arrived as\n%q\nwant\n%q", i, got[0], wantHead)
		}
	}
	if got := rec.head("/raw/own"); len(got) != 1 || strings.Count(strings.ToLower(got[0]), "traceparent:") != 1 ||
		!strings.Contains(got[0], "Traceparent: "+ownTP+"\r\n") {
		t.Errorf("a request with its own traceparent arrived as %q; want that one only", got)
	}

	bad := 0
	check := func(i int) {
		x := byTrace[edgeTrace(i)]
		if len(x[aServer]) != 1 || len(x[aClient]) != 2 || len(x[bServer]) != 1 || len(x[cServer]) != 1 || len(x) != 4 {
			bad++
			if bad <= 5 {
				t.Errorf("request %d: spans in its trace by service and kind: A server %d, A client %d, B server %d, C server %d, kinds %d; want 1 2 1 1 4",
					i, len(x[aServer]), len(x[aClient]), len(x[bServer]), len(x[cServer]), len(x))
			}
			return
		}
		as, bs, cs := x[aServer][0], x[bServer][0], x[cServer][0]
		toB, toC := x[aClient][0], x[aClient][1]
		if toB.Attr("server.port") == strings.Split(c.First, ":")[1] {
			toB, toC = toC, toB
		}
		switch {
		case hexID(as.GetParentSpanId()) != edgeParent:
			t.Errorf("request %d: A's server span under %s, want the edge's %s", i, hexID(as.GetParentSpanId()), edgeParent)
		case hexID(toB.GetParentSpanId()) != hexID(as.GetSpanId()) || hexID(toC.GetParentSpanId()) != hexID(as.GetSpanId()):
			t.Errorf("request %d: A's client spans under %s and %s, want A's server span %s", i,
				hexID(toB.GetParentSpanId()), hexID(toC.GetParentSpanId()), hexID(as.GetSpanId()))
		case hexID(bs.GetParentSpanId()) != hexID(toB.GetSpanId()) || bs.Attr("url.path") != fmt.Sprintf("/items/%d", i):
			bad++
			t.Errorf("request %d: B's span (%s) under %s, want A's client span %s", i, bs.Attr("url.path"), hexID(bs.GetParentSpanId()), hexID(toB.GetSpanId()))
		case hexID(cs.GetParentSpanId()) != hexID(toC.GetSpanId()):
			bad++
			t.Errorf("request %d: C's SDK span under %s, want A's client span %s", i, hexID(cs.GetParentSpanId()), hexID(toC.GetSpanId()))
		case bs.GetStartTimeUnixNano() < toB.GetStartTimeUnixNano() || cs.GetStartTimeUnixNano() < toC.GetStartTimeUnixNano() ||
			toB.GetStartTimeUnixNano() < as.GetStartTimeUnixNano() || toC.GetStartTimeUnixNano() < as.GetStartTimeUnixNano():
			t.Errorf("request %d: a span starts before its parent", i)
		}
	}
	for i := range seq {
		check(i)
	}
	for i := 1000; i < 1000+conc; i++ {
		check(i)
	}
	for i := 3000; i < 3000+unsampled; i++ {
		if x := byTrace[edgeTrace(i)]; x != nil {
			t.Errorf("request %d was not sampled at the edge, yet has spans %v", i, x)
		}
	}

	fams := e2e.Families(t, o.Scrape(t))
	calls := raws + 2*(seq+conc+unsampled)
	if n := e2e.Sum(fams, "obsd_trace_headers_injected_total", nil); n != float64(calls) {
		t.Errorf("obsd_trace_headers_injected_total = %v, want %d", n, calls)
	}
	skips := map[string]float64{}
	for _, m := range fams["obsd_trace_headers_skipped_total"].GetMetric() {
		skips[e2e.Labels(m)["reason"]] = e2e.Value(m)
	}
	if want := map[string]float64{"already_present": 1, "not_http1": 0, "head_too_long": 0, "no_room": 0, "raced": 0, "http2_connection_unread": 0, "http2_stream_without_context": 0}; fmt.Sprint(skips) != fmt.Sprint(want) {
		t.Errorf("obsd_trace_headers_skipped_total %v, want %v", skips, want)
	}
	if n := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "sent"}); n != 0 {
		t.Errorf("%v TCP options sent with --propagate=headers alone, want 0", n)
	}
	o.Stop(t)
}

// kind is a span's service and kind ("SERVER", "CLIENT").
type kind struct{ service, kind string }

// spansByTrace groups spans by trace ID (hex), then by service and kind.
func spansByTrace(spans []e2e.Span) map[string]map[kind][]e2e.Span {
	byTrace := map[string]map[kind][]e2e.Span{}
	for _, s := range spans {
		tr := hexID(s.GetTraceId())
		if byTrace[tr] == nil {
			byTrace[tr] = map[kind][]e2e.Span{}
		}
		k := kind{s.Resource["service.name"], strings.TrimPrefix(s.GetKind().String(), "SPAN_KIND_")}
		byTrace[tr][k] = append(byTrace[tr][k], s)
	}
	return byTrace
}
