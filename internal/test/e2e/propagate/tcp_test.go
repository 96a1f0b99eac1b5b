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
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

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
// obsd ran. Once with DWARF, once stripped and PIE (offsets and function
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
	get := func(a *e2e.Proc, i int, sampled bool, to string, dump bool) (string, error) {
		u := fmt.Sprintf("http://%s/call?ctx=request&to=%s", a.First, to)
		if dump {
			u += "&dump=1"
		}
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
			body, err := get(a, 9000+i, true, "http://"+plain.First+p, true)
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
		if _, err := get(a, i, true, bURL(i), false); err != nil {
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
	var wg sync.WaitGroup
	work := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range work {
				if _, err := get(a, i, i < 3000, bURL(i), false); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := 1000; i < 1000+conc; i++ {
		work <- i
	}
	for i := 3000; i < 3000+unsampled; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Three spans per sampled edge request: A's server and client, B's server.
	want := 3 * (seq + conc)
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d (3 per sampled request, none for the unsampled)", len(spans), want)
	}
	type trio struct{ aServer, aClient, bServer []e2e.Span }
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
	for i := 3000; i < 3000+unsampled; i++ {
		if x := byTrace[edgeTrace(i)]; x != nil {
			t.Errorf("request %d was not sampled at the edge, yet has spans %+v", i, x)
		}
	}
	fams := e2e.Families(t, o.Scrape(t))
	sent := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "sent"})
	received := e2e.Sum(fams, "obsd_tcp_context_options_total", map[string]string{"direction": "received"})
	t.Logf("options sent %v, received %v for %d calls", sent, received, seq+conc+unsampled)
	if sent < seq+conc+unsampled || received != sent {
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
}
