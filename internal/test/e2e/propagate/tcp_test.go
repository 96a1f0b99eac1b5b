package propagate

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	dto "github.com/prometheus/client_model/go"

	bpftcpctx "github.com/obsd-dev/obsd/bpf/tcpctx"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// The edge's trace context: request i carries trace edgeTrace(i) under
// span edgeParent.
const edgeParent = "00f067aa0ba902b7"

func edgeTrace(i int) string { return fmt.Sprintf("4bf92f3577b34da6a3ce929d%08x", i) }

func hexID(b []byte) string { return hex.EncodeToString(b) }

// TestTCPAcrossNamespaces: service A (tracechain, network namespace A)
// serves each edge request by calling service B (httpserver, namespace B)
// over a veth pair; obsd instruments both with --propagate=tcp, and no
// header carries context from A to B. Every B server span must be the
// child of A's client span for the same edge request, in the edge's
// trace, starting no earlier than its parent: one at a time (one
// keep-alive connection, reused), then 50 at a time (1,000 requests); a request the edge
// marked not sampled leaves no span anywhere (B follows the flag that
// crossed). Then obsd instruments A alone: the option still goes out, and
// an uninstrumented B's answers are byte-identical to those it gave before
// obsd ran. A traceparent header A sends wins over the connection's
// context. With one obsd per service (as on two nodes), calls link, and
// once A's obsd stops B's spans are new traces, not children of the last
// context that arrived. A's contexts on a connection it opened before obsd
// (adopted when obsd registers A) are deleted when A exits. Once with DWARF, once stripped and PIE (offsets and function
// addresses from the table and .gopclntab), A built by the oldest Go, and
// once over HTTPS (HTTP/1.1: the context rides under TLS).
func TestTCPAcrossNamespaces(t *testing.T) {
	e2e.RequireRoot(t)
	for _, tc := range []struct {
		name string
		a, b e2e.Variant
		tls  bool // A calls B over HTTPS, HTTP/1.1
	}{
		{"current", e2e.Variant{Name: "current"}, e2e.Variant{Name: "current"}, false},
		{"stripped-pie", e2e.Variant{Name: "go1.21-stripped-pie", Toolchain: "go1.21.13", Stripped: true, PIE: true},
			e2e.Variant{Name: "stripped-pie", Stripped: true, PIE: true}, false},
		{"tls", e2e.Variant{Name: "current"}, e2e.Variant{Name: "current"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { tcpAcross(t, tc.a, tc.b, tc.tls) })
	}
}

func tcpAcross(t *testing.T, aV, bV e2e.Variant, useTLS bool) {
	ipCmd := e2e.RequireTool(t, "ip")
	ssCmd := e2e.RequireTool(t, "ss")
	np := e2e.NewNetPair(t)
	obsdBin := builds.Obsd(t)
	chainBin := builds.TestdataProgram(t, "tracechain", aV)
	srvBin := builds.HTTPServer(t, bV)
	inNS := func(ns, name, bin string, args ...string) *e2e.Proc {
		t.Helper()
		cmd := exec.Command(ipCmd, append([]string{"netns", "exec", ns, bin}, args...)...)
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+name)
		return e2e.StartCmd(t, cmd)
	}
	bArgs, aArgs, scheme := []string{"-addr", np.BAddr.String() + ":0"}, []string{"-addr", np.AAddr.String() + ":0"}, "http"
	if useTLS {
		bArgs, aArgs, scheme = append(bArgs, "-tls"), append(aArgs, "-insecure-http1"), "https"
	}
	b := inNS(np.B, "tcp-b", srvBin, bArgs...)
	plain := inNS(np.B, "tcp-plain", srvBin, "-addr", np.BAddr.String()+":0") // never instrumented
	edge := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: e2e.DialIn(np.A), MaxIdleConnsPerHost: 32}}
	t.Cleanup(edge.CloseIdleConnections)

	// get sends edge request i (sampled or not) to A's /call for to,
	// and returns A's answer.
	get := func(a *e2e.Proc, i int, sampled bool, to string, query string) (string, error) {
		u := fmt.Sprintf("http://%s/call?ctx=request&to=%s%s", a.First, to, query)
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			return "", err
		}
		flags := map[bool]string{true: "01", false: "00"}[sampled]
		req.Header.Set("Traceparent", fmt.Sprintf("00-%s-%s-%s", edgeTrace(i), edgeParent, flags))
		resp, err := edge.Do(req)
		if err != nil {
			return "", err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("A answered %d: %s", resp.StatusCode, body)
		}
		return string(body), err
	}
	dumpPaths := []string{"/hello", "/empty", "/items/7", "/nothing-here"}
	dumps := func(a *e2e.Proc) map[string]string {
		t.Helper()
		out := map[string]string{}
		for i, p := range dumpPaths {
			body, err := get(a, 9000+i, true, "http://"+plain.First+p, "&dump=1")
			if err != nil {
				t.Fatalf("%s through A: %v", p, err)
			}
			out[p] = body
		}
		return out
	}
	// What the uninstrumented server answers with no obsd anywhere, through
	// an A that is never instrumented either.
	a0 := inNS(np.A, "tcp-a0", chainBin, "-addr", np.AAddr.String()+":0")
	baseline := dumps(a0)
	a0.Cmd.Process.Kill()

	a := inNS(np.A, "tcp-a", chainBin, aArgs...)
	// A connection A opens before obsd registers it: adopted then (on a
	// kernel that cannot, ForgetSender deletes its entries at A's exit).
	pre := inNS(np.B, "tcp-pre", srvBin, "-addr", np.BAddr.String()+":0") // never instrumented
	if _, err := get(a, 8000, true, "http://"+pre.First+"/hello", ""); err != nil {
		t.Fatal(err)
	}
	recv := e2e.StartReceiver(t)
	env := []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
	o := e2e.StartObsd(t, obsdBin, env, "--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(b.PID()),
		"--propagate=tcp", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
	o.WaitScrape(t, 10*time.Second, "A and B instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
	})

	const seq, conc, workers, unsampled = 50, 1000, 50, 20
	bURL := func(i int) string { return fmt.Sprintf("%s://%s/items/%d", scheme, b.First, i) }
	for i := range seq {
		if _, err := get(a, i, true, bURL(i), ""); err != nil {
			t.Fatal(err)
		}
	}
	// One at a time, A's client kept one connection to B for all of them.
	port := b.First[strings.LastIndex(b.First, ":")+1:]
	out, err := exec.Command(ipCmd, "netns", "exec", np.B, ssCmd, "-Htn", "state", "established", "( sport = :"+port+" )").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	if n := len(strings.Fields(string(out))) / 4; n != 1 {
		t.Errorf("B has %d established connections after %d sequential calls, want 1 (keep-alive):\n%s", n, seq, out)
	}
	// A traceparent header names the caller exactly: it wins over the
	// connection's context (which is still taken: the requests after it
	// link to their own).
	const withHeader = 10
	hdrTrace := func(i int) string { return fmt.Sprintf("0af7651916cd43dd8448eb21%08x", i) }
	const hdrSpan = "b7ad6b7169203331"
	for i := 500; i < 500+withHeader; i++ {
		if _, err := get(a, i, true, bURL(i), "&tp=00-"+hdrTrace(i)+"-"+hdrSpan+"-01"); err != nil {
			t.Fatal(err)
		}
	}
	concurrently(t, workers, seqIDs(seqIDs(nil, 1000, conc), 3000, unsampled), func(i int) error {
		_, err := get(a, i, i < 3000, bURL(i), "")
		return err
	})

	// Three spans per sampled edge request: A's server and client, B's server.
	want := 3 * (seq + withHeader + conc)
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d (3 per sampled request, none for the unsampled)", len(spans), want)
	}
	byTrace := map[string]*trio{}
	for _, s := range spans {
		tr := hexID(s.GetTraceId())
		if byTrace[tr] == nil {
			byTrace[tr] = &trio{}
		}
		x := byTrace[tr]
		switch {
		case s.Resource["service.name"] == "tcp-a" && s.GetKind().String() == "SPAN_KIND_SERVER":
			x.aServer = append(x.aServer, s)
		case s.Resource["service.name"] == "tcp-a" && s.GetKind().String() == "SPAN_KIND_CLIENT":
			x.aClient = append(x.aClient, s)
		case s.Resource["service.name"] == "tcp-b" && s.GetKind().String() == "SPAN_KIND_SERVER":
			x.bServer = append(x.bServer, s)
		default:
			t.Errorf("unexpected span %s of %s, kind %v", s.GetName(), s.Resource["service.name"], s.GetKind())
		}
	}
	bad := 0
	check := func(i int) {
		x := byTrace[edgeTrace(i)]
		if x == nil || len(x.aServer) != 1 || len(x.aClient) != 1 || len(x.bServer) != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("request %d: spans in its trace %+v, want one A server, one A client, one B server", i, x)
			}
			return
		}
		as, ac, bs := x.aServer[0], x.aClient[0], x.bServer[0]
		switch {
		case hexID(as.GetParentSpanId()) != edgeParent:
			t.Errorf("request %d: A's server span under %s, want the edge's %s", i, hexID(as.GetParentSpanId()), edgeParent)
		case hexID(ac.GetParentSpanId()) != hexID(as.GetSpanId()):
			t.Errorf("request %d: A's client span under %s, want A's server span %s", i, hexID(ac.GetParentSpanId()), hexID(as.GetSpanId()))
		case hexID(bs.GetParentSpanId()) != hexID(ac.GetSpanId()):
			bad++
			if bad <= 5 {
				t.Errorf("request %d: B's server span under %q, want A's client span %s", i, hexID(bs.GetParentSpanId()), hexID(ac.GetSpanId()))
			}
		case bs.Attr("url.path") != fmt.Sprintf("/items/%d", i):
			t.Errorf("request %d: B's span in its trace is for %s", i, bs.Attr("url.path"))
		case bs.GetStartTimeUnixNano() < ac.GetStartTimeUnixNano() || ac.GetStartTimeUnixNano() < as.GetStartTimeUnixNano():
			t.Errorf("request %d: a span starts before its parent: A server %d, A client %d, B server %d", i,
				as.GetStartTimeUnixNano(), ac.GetStartTimeUnixNano(), bs.GetStartTimeUnixNano())
		}
	}
	for i := range seq {
		check(i)
	}
	for i := 1000; i < 1000+conc; i++ {
		check(i)
	}
	if bad > 0 {
		t.Errorf("%d of %d requests not linked A -> B exactly", bad, seq+conc)
	}
	for i := 500; i < 500+withHeader; i++ {
		x, h := byTrace[edgeTrace(i)], byTrace[hdrTrace(i)]
		if x == nil || h == nil || len(x.aServer) != 1 || len(x.aClient) != 1 || len(x.bServer) != 0 || len(h.bServer) != 1 {
			t.Errorf("request %d with a traceparent header from A: spans (A server, A client, B server) %s in the edge's trace, %s in the header's; want 1 1 0, then 0 0 1",
				i, x.counts(), h.counts())
			continue
		}
		if got := hexID(h.bServer[0].GetParentSpanId()); got != hdrSpan {
			t.Errorf("request %d: B's span under %s, want the header's %s", i, got, hdrSpan)
		}
	}
	for i := 3000; i < 3000+unsampled; i++ {
		if x := byTrace[edgeTrace(i)]; x != nil {
			t.Errorf("request %d was not sampled at the edge, yet has spans %+v", i, x)
		}
	}
	fams := e2e.Families(t, o.Scrape(t))
	sent := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "sent"})
	received := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "received"})
	calls := float64(seq + withHeader + conc + unsampled)
	t.Logf("options sent %v, received %v for %v calls", sent, received, calls)
	if sent < calls || received != sent {
		t.Errorf("options sent %v, received %v: want at least one per call, all received", sent, received)
	}
	for _, name := range []string{"obsd_tcp_context_lost_total", "obsd_tcp_context_anomalies_total", "obsd_tcp_context_registration_errors_total"} {
		if n := e2e.Sum(fams, name, nil); n != 0 {
			t.Errorf("%s = %v, want 0", name, n)
		}
	}
	for _, m := range fams["obsd_probe_anomalies_total"].GetMetric() {
		if l := e2e.Labels(m); strings.HasPrefix(l["reason"], "tcp_context") && e2e.Value(m) != 0 {
			t.Errorf("obsd_probe_anomalies_total%v = %v", l, e2e.Value(m))
		}
	}
	o.Stop(t)
	if !useTLS && aV.Name == "current" {
		separateNodes(t, obsdBin, a, b, bURL, get)
	}

	// obsd on A alone: B's namespace parses nothing; the option still goes
	// out, and the server ignores it.
	o = e2e.StartObsd(t, obsdBin, env, "--pid", strconv.Itoa(a.PID()), "--propagate=tcp", "--traces", "otlp")
	o.WaitScrape(t, 10*time.Second, "A instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	got := dumps(a)
	if !reflect.DeepEqual(got, baseline) {
		t.Errorf("the uninstrumented server answered differently with the option on its requests:\n got %q\nwant %q", got, baseline)
	}
	fams = e2e.Families(t, o.Scrape(t))
	sent = e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "sent"})
	received = e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "received"})
	if sent < float64(len(dumpPaths)) || received != 0 {
		t.Errorf("options sent %v, received %v to the uninstrumented server: want at least %d sent, none parsed", sent, received, len(dumpPaths))
	}

	// The connection opened before obsd: its context is set; it goes when
	// A exits.
	if _, err := get(a, 8001, true, "http://"+pre.First+"/hello", ""); err != nil {
		t.Fatal(err)
	}
	if n := tcpOutEntries(t, uint32(a.PID())); n < 1 {
		t.Fatalf("%d outgoing contexts of A after a call on its old connection, want at least 1", n)
	}
	a.Cmd.Process.Kill()
	o.WaitScrape(t, 10*time.Second, "A gone", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 0
	})
	deadline := time.Now().Add(5 * time.Second)
	for n := tcpOutEntries(t, uint32(a.PID())); n != 0; n = tcpOutEntries(t, uint32(a.PID())) {
		if time.Now().After(deadline) {
			t.Fatalf("%d outgoing contexts of A left after it exited", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// trio is the spans of one trace, by service and kind.
type trio struct{ aServer, aClient, bServer []e2e.Span }

// counts is "aServer aClient bServer" counts; "0 0 0" for nil.
func (x *trio) counts() string {
	if x == nil {
		return "0 0 0"
	}
	return fmt.Sprintf("%d %d %d", len(x.aServer), len(x.aClient), len(x.bServer))
}

// separateNodes: A and B each under their own obsd, as on two nodes. The
// calls link; once A's obsd stops, A's requests on the same keep-alive
// connection carry no context, and B's spans for them are new traces, not
// children of the last context that arrived.
func separateNodes(t *testing.T, obsdBin string, a, b *e2e.Proc, bURL func(int) string,
	get func(*e2e.Proc, int, bool, string, string) (string, error)) {
	recv := e2e.StartReceiver(t)
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
	var obsds []*e2e.Obsd
	for _, p := range []*e2e.Proc{b, a} {
		o := e2e.StartObsd(t, obsdBin, env, "--pid", strconv.Itoa(p.PID()), "--propagate=tcp", "--traces", "otlp",
			"--keep-slow=0", "--keep-errors=false")
		o.WaitScrape(t, 10*time.Second, "instrumented", func(f map[string]*dto.MetricFamily) bool {
			return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
		})
		obsds = append(obsds, o)
	}
	const n = 20
	send := func(from int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if _, err := get(a, i, true, bURL(i), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(6000)
	recv.WaitSpans(t, 3*n, 15*time.Second)
	obsds[1].Stop(t) // A's
	send(7000)
	recv.WaitSpans(t, 4*n, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	clientOf := map[string]string{} // A's client span ID by the path it called
	var bSpans []e2e.Span
	for _, s := range recv.Spans() {
		switch {
		case s.GetKind().String() == "SPAN_KIND_CLIENT":
			full := s.Attr("url.full")
			clientOf[full[strings.LastIndex(full, "/items/"):]] = hexID(s.GetSpanId())
		case s.Resource["service.name"] == "tcp-b":
			bSpans = append(bSpans, s)
		}
	}
	if len(bSpans) != 2*n {
		t.Fatalf("%d spans of B, want %d", len(bSpans), 2*n)
	}
	for _, s := range bSpans {
		path := s.Attr("url.path")
		i, _ := strconv.Atoi(strings.TrimPrefix(path, "/items/"))
		parent := hexID(s.GetParentSpanId())
		switch {
		case i < 7000 && parent != clientOf[path]:
			t.Errorf("%s: B's span under %q, want A's client span %q (two obsds)", path, parent, clientOf[path])
		case i >= 7000 && parent != "":
			t.Errorf("%s, after A's obsd stopped: B's span under %s, want a new trace", path, parent)
		}
	}
	obsds[0].Stop(t)
}

// tcpOutEntries counts the entries of tgid in every obsd_tcp_out map on the
// host (other tests' maps hold other processes' entries).
func tcpOutEntries(t *testing.T, tgid uint32) int {
	t.Helper()
	n := 0
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			break // ENOENT: no more maps
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := m.Info(); err == nil && info.Name == "obsd_tcp_out" {
			var (
				k bpftcpctx.Key
				v bpftcpctx.Out
			)
			for it := m.Iterate(); it.Next(&k, &v); {
				if v.Tgid == tgid {
					n++
				}
			}
		}
		m.Close()
	}
	return n
}
