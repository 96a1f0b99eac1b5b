package propagate

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestTCPHTTP2: service A (tracechain, namespace A) calls service B
// (httpserver over TLS, namespace B) over one HTTP/2 connection, opened
// before obsd starts; obsd instruments both with --propagate=tcp and no
// header carries context from A to B. One request at a time, every B
// server span is the child of A's client span of the same edge request (B's
// span says which by its path), in the edge's trace; 20 at a time, streams
// share the connection's segments: each of B's spans is either so joined
// or a new trace, never another request's child, and the roots are exactly
// the streams obsd counted as tcp_context_other_stream. net/http's HTTP/2
// on both ends (A built by Go 1.21, stripped and PIE, for the bundled h2
// client and the offsets table), then A built by Go 1.27 (net/http/internal/
// http2's client) and B on x/net's HTTP/2 server.
func TestTCPHTTP2(t *testing.T) {
	e2e.RequireRoot(t)
	for _, tc := range []struct {
		name string
		a    e2e.Variant
		b    func(t *testing.T) string
	}{
		{"std", e2e.Variant{Name: "go1.21-stripped-pie", Toolchain: "go1.21.13", Stripped: true, PIE: true},
			func(t *testing.T) string { return builds.HTTPServer(t, e2e.Variant{Name: "current"}) }},
		{"go1.27-client-xnet-server", e2e.Variant{Name: "go1.27", Toolchain: "go1.27.3"}, func(t *testing.T) string {
			return builds.Program(t, e2e.Program{Name: "httpserver-xnet", Src: filepath.Join(e2e.RepoRoot(), "testdata", "httpserver"),
				Tags: []string{"h2c"}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tcpHTTP2(t, builds.TestdataProgram(t, "tracechain", tc.a), tc.b(t)) })
	}
}

func tcpHTTP2(t *testing.T, chainBin, srvBin string) {
	ipCmd := e2e.RequireTool(t, "ip")
	np := e2e.NewNetPair(t)
	obsdBin := builds.Obsd(t)
	inNS := func(ns, name, bin string, args ...string) *e2e.Proc {
		t.Helper()
		cmd := exec.Command(ipCmd, append([]string{"netns", "exec", ns, bin}, args...)...)
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+name)
		return e2e.StartCmd(t, cmd)
	}
	b := inNS(np.B, "h2-b", srvBin, "-addr", np.BAddr.String()+":0", "-tls")
	a := inNS(np.A, "h2-a", chainBin, "-addr", np.AAddr.String()+":0", "-insecure-h2")
	edge := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: e2e.DialIn(np.A), MaxIdleConnsPerHost: 32}}
	t.Cleanup(edge.CloseIdleConnections)
	// get sends edge request i (sampled) to A's /call for B's /items/i.
	get := func(i int) error {
		u := fmt.Sprintf("http://%s/call?ctx=request&to=https://%s/items/%d", a.First, b.First, i)
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Traceparent", fmt.Sprintf("00-%s-%s-01", edgeTrace(i), edgeParent))
		resp, err := edge.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("edge request %d: A answered %d: %s", i, resp.StatusCode, body)
		}
		return nil
	}
	// A's connection to B opens before obsd runs.
	if err := get(99999); err != nil {
		t.Fatal(err)
	}

	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(b.PID()),
		"--propagate=tcp", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
	o.WaitScrape(t, 20*time.Second, "A and B instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
	})

	const seq, conc, workers = 40, 400, 20
	for i := range seq {
		if err := get(i); err != nil {
			t.Fatal(err)
		}
	}
	otherBefore := otherStream(t, o)
	concurrently(t, workers, seqIDs(nil, 1000, conc), func(i int) error {
		return get(i)
	})

	want := 3 * (seq + conc)
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d (A server, A client, B server per edge request)", len(spans), want)
	}
	byTrace := map[string]*trio{}
	bByPath := map[string]e2e.Span{}
	for _, s := range spans {
		tr := hexID(s.GetTraceId())
		if byTrace[tr] == nil {
			byTrace[tr] = &trio{}
		}
		x := byTrace[tr]
		kind := s.GetKind().String()
		switch svc := s.Resource["service.name"]; {
		case svc == "h2-a" && kind == "SPAN_KIND_SERVER":
			x.aServer = append(x.aServer, s)
		case svc == "h2-a" && kind == "SPAN_KIND_CLIENT":
			x.aClient = append(x.aClient, s)
		case svc == "h2-b" && kind == "SPAN_KIND_SERVER":
			if v := s.Attr("network.protocol.version"); v != "2" {
				t.Errorf("B's span for %s: protocol version %q, want HTTP/2", s.Attr("url.path"), v)
			}
			bByPath[s.Attr("url.path")] = s
		default:
			t.Errorf("unexpected span %s of %s, kind %v", s.GetName(), svc, kind)
		}
	}
	// joined says whether edge request i's B span is A's client span's
	// child; anything but that or a new trace fails the test.
	joined := func(i int) bool {
		x := byTrace[edgeTrace(i)]
		bs, ok := bByPath[fmt.Sprintf("/items/%d", i)]
		if x == nil || len(x.aServer) != 1 || len(x.aClient) != 1 || !ok {
			t.Errorf("edge request %d: A's spans (server, client) %s in its trace, B's span found %v", i, x.counts(), ok)
			return false
		}
		as, ac := x.aServer[0], x.aClient[0]
		switch {
		case hexID(ac.GetParentSpanId()) != hexID(as.GetSpanId()):
			t.Errorf("edge request %d: A's client span not under A's server span", i)
		case len(bs.GetParentSpanId()) == 0:
			return false
		case hexID(bs.GetTraceId()) != edgeTrace(i) || hexID(bs.GetParentSpanId()) != hexID(ac.GetSpanId()):
			t.Errorf("edge request %d: B's span in trace %s under %s, want trace %s under A's client span %s",
				i, hexID(bs.GetTraceId()), hexID(bs.GetParentSpanId()), edgeTrace(i), hexID(ac.GetSpanId()))
		case bs.GetStartTimeUnixNano() < ac.GetStartTimeUnixNano():
			t.Errorf("edge request %d: B's span starts before its parent", i)
		default:
			return true
		}
		return false
	}
	for i := range seq {
		if !joined(i) {
			t.Errorf("edge request %d, one at a time: B's span not joined to A's client span", i)
		}
	}
	n := 0
	for i := 1000; i < 1000+conc; i++ {
		if joined(i) {
			n++
		}
	}
	other := otherStream(t, o) - otherBefore
	t.Logf("%d requests at a time: %d of %d joined, %v counted as another stream's", workers, n, conc, other)
	if float64(conc-n) != other {
		t.Errorf("of %d concurrent requests %d joined; the other %d should be counted, %v were", conc, n, conc-n, other)
	}
	if n == 0 {
		t.Errorf("none of %d concurrent requests joined", conc)
	}
}
