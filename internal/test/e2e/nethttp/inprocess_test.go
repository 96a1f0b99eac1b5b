package nethttp

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// chainVariants: the oldest Go, the current one, and a stripped build
// (Request.ctx's offset from the table).
var chainVariants = []e2e.Variant{
	{Name: "go1.21", Toolchain: "go1.21.13"},
	{Name: "current"},
	{Name: "stripped", Stripped: true},
}

// edgeTrace is the trace ID the edge client sends with request i.
func edgeTrace(i int) string { return fmt.Sprintf("%s%08x", tcTrace[:24], i) }

// spanIndex groups received spans for the chain tests.
type spanIndex struct {
	byPath map[string][]e2e.Span // url.path (server) or the path of url.full (client)
}

func indexSpans(spans []e2e.Span) spanIndex {
	ix := spanIndex{byPath: map[string][]e2e.Span{}}
	for _, s := range spans {
		p := s.Attr("url.path")
		if full := s.Attr("url.full"); full != "" {
			if i := strings.Index(strings.TrimPrefix(full, "http://"), "/"); i >= 0 {
				p = "client " + strings.TrimPrefix(full, "http://")[i:]
			}
		}
		ix.byPath[p] = append(ix.byPath[p], s)
	}
	return ix
}

func hexID(b []byte) string { return hex.EncodeToString(b) }

// TestInProcessParent: service A (tracechain) serves each request by calling
// service B; obsd instruments both. A's CLIENT span is the child of A's
// SERVER span, in the edge's trace, when the call's context derives from
// the request's (r.Context(), a timeout or value wrapper, 12 value
// wrappers, a goroutine given it); it starts its own trace under context.Background() and when it runs
// after the request ended (a detached goroutine): nothing leaks across
// requests. B's SERVER span is a root (no propagation between processes
// without --propagate). Then a soak: 1,000 requests, 50 at a time, each
// client span in its own request's trace under its own server span.
func TestInProcessParent(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	b := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), []string{"OTEL_SERVICE_NAME=chain-b"})
	for _, v := range chainVariants {
		t.Run(v.Name, func(t *testing.T) {
			a := e2e.Start(t, builds.TestdataProgram(t, "tracechain", v), []string{"OTEL_SERVICE_NAME=chain-a-" + v.Name})
			recv := e2e.StartReceiver(t)
			o := e2e.StartObsd(t, obsdBin, []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
			}, "--pid", itoa(a.PID()), "--pid", itoa(b.PID()), "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(2))
			client := &http.Client{Timeout: 10 * time.Second}
			t.Cleanup(client.CloseIdleConnections)

			// send may run on other goroutines: it reports with Errorf.
			send := func(i int, kind string) {
				to := fmt.Sprintf("http://%s/items/%d", b.First, i)
				req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/call?ctx=%s&to=%s", a.First, kind, to), nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Traceparent", fmt.Sprintf("00-%s-%s-01", edgeTrace(i), tcParent))
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("%s: %v", kind, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if want := map[bool]int{true: 202, false: 200}[kind == "detached"]; resp.StatusCode != want {
					t.Errorf("%s: status %d, want %d", kind, resp.StatusCode, want)
				}
			}
			kinds := []string{"request", "timeout", "value", "deep", "goroutine", "background", "detached"}
			for i, kind := range kinds {
				send(i, kind)
			}
			if t.Failed() {
				t.FailNow()
			}
			// The detached call finishes after its response.
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := client.Get("http://" + a.First + "/calls")
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if strings.TrimSpace(string(body)) == "1" {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("the detached call did not finish")
				}
				time.Sleep(50 * time.Millisecond)
			}
			// A's /calls polls are spans too; wait for the 3 per kind.
			spans := recv.WaitSpans(t, 3*len(kinds), 15*time.Second)
			time.Sleep(300 * time.Millisecond)
			spans = recv.Spans()
			var aServers []e2e.Span
			for _, s := range spans {
				if s.Attr("url.path") == "/call" {
					aServers = append(aServers, s)
				}
			}
			ix := indexSpans(spans)
			for i, kind := range kinds {
				var srv *e2e.Span
				for j := range aServers {
					if hexID(aServers[j].GetTraceId()) == edgeTrace(i) {
						srv = &aServers[j]
					}
				}
				cl := ix.byPath[fmt.Sprintf("client /items/%d", i)]
				bs := ix.byPath[fmt.Sprintf("/items/%d", i)]
				if srv == nil || len(cl) != 1 || len(bs) != 1 {
					t.Errorf("%s: A server span found %v, %d A client spans, %d B server spans; want 1 each", kind, srv != nil, len(cl), len(bs))
					continue
				}
				if got := hexID(srv.GetParentSpanId()); got != tcParent {
					t.Errorf("%s: A server span's parent %s, want the edge's %s", kind, got, tcParent)
				}
				ct, cp := hexID(cl[0].GetTraceId()), hexID(cl[0].GetParentSpanId())
				switch kind {
				case "background", "detached":
					if ct == edgeTrace(i) || cp != "" {
						t.Errorf("%s: A client span in trace %s under %q, want a new root", kind, ct, cp)
					}
				default:
					if ct != edgeTrace(i) || cp != hexID(srv.GetSpanId()) {
						t.Errorf("%s: A client span in trace %s under %s, want trace %s under A's server span %s",
							kind, ct, cp, edgeTrace(i), hexID(srv.GetSpanId()))
					}
					if cl[0].GetStartTimeUnixNano() < srv.GetStartTimeUnixNano() || cl[0].GetEndTimeUnixNano() > srv.GetEndTimeUnixNano() {
						t.Errorf("%s: A client span [%d, %d] not within its parent [%d, %d]", kind,
							cl[0].GetStartTimeUnixNano(), cl[0].GetEndTimeUnixNano(), srv.GetStartTimeUnixNano(), srv.GetEndTimeUnixNano())
					}
				}
				if len(bs[0].GetParentSpanId()) != 0 {
					t.Errorf("%s: B's server span has parent %s; nothing propagates between processes here", kind, hexID(bs[0].GetParentSpanId()))
				}
			}
			if t.Failed() {
				return
			}

			// Soak: every client span must sit in its own request's trace,
			// under its own request's server span.
			const soak, conc = 1000, 50
			base := 1 << 20
			var wg sync.WaitGroup
			work := make(chan int)
			for w := 0; w < conc; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range work {
						send(i, "request")
					}
				}()
			}
			for i := base; i < base+soak; i++ {
				work <- i
			}
			close(work)
			wg.Wait()
			before := len(spans)
			spans = recv.WaitSpans(t, before+3*soak, 30*time.Second)
			serverOf := map[string]e2e.Span{} // trace ID -> A's server span
			for _, s := range spans {
				if s.Attr("url.path") == "/call" {
					serverOf[hexID(s.GetTraceId())] = s
				}
			}
			ix = indexSpans(spans)
			bad := 0
			for i := base; i < base+soak; i++ {
				srv, ok := serverOf[edgeTrace(i)]
				cl := ix.byPath[fmt.Sprintf("client /items/%d", i)]
				if !ok || len(cl) != 1 || hexID(cl[0].GetTraceId()) != edgeTrace(i) || hexID(cl[0].GetParentSpanId()) != hexID(srv.GetSpanId()) {
					bad++
					if bad <= 5 {
						t.Errorf("soak request %d: server span %v, client spans %d, want one client span under the request's own server span", i, ok, len(cl))
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d soak requests linked wrongly", bad, soak)
			}
		})
	}
}
