package nethttp

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// traceVariants cover both Go map layouts the probe walks for the headers
// (runtime.hmap up to 1.23, swiss tables from 1.24), the newest release,
// and a stripped build (map offsets from the offsets table).
var traceVariants = []e2e.Variant{
	{Name: "go1.21", Toolchain: "go1.21.13"},
	{Name: "go1.23", Toolchain: "go1.23.12"},
	{Name: "go1.24", Toolchain: "go1.24.9"},
	{Name: "go1.27", Toolchain: "go1.27.3"},
	{Name: "stripped", Stripped: true},
}

// traceCase is one request of TestIncomingTraceContext and what its span
// must be. The client, not obsd, knows what it sent.
type traceCase struct {
	name   string
	header []string // traceparent values sent, one header line each
	state  string   // tracestate sent
	extra  int      // extra headers, to grow the header map past one group
	// want: "parent" joins the sent trace, "root" starts a new one,
	// "none" makes no span (the parent said not sampled).
	want    string
	invalid bool // counted as traceparent_invalid
}

const (
	tcTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	tcParent = "00f067aa0ba902b7"
)

func traceparent(i int, flags string) string {
	// A distinct trace per request: the last 4 hex digits carry i.
	return fmt.Sprintf("00-%s%04x-%s-%s", tcTrace[:28], i, tcParent, flags)
}

func traceCases() []traceCase {
	return []traceCase{
		{name: "sampled, few headers", want: "parent", state: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{name: "sampled, 12 more headers", want: "parent", extra: 12},
		{name: "sampled, 40 more headers", want: "parent", extra: 40, state: "vendor=x"},
		{name: "not sampled", want: "none"},
		{name: "not sampled, 20 more headers", want: "none", extra: 20},
		{name: "no traceparent", want: "root"},
		{name: "upper-case hex", want: "root", invalid: true},
		{name: "repeated", want: "root", invalid: true},
		{name: "version ff", want: "root", invalid: true},
		{name: "too long for version 00", want: "root", invalid: true},
		{name: "all-zero trace ID", want: "root", invalid: true},
		{name: "future version, longer", want: "parent"},
	}
}

// values returns the traceparent lines case c sends as request i.
func (c traceCase) values(i int) []string {
	switch c.name {
	case "not sampled", "not sampled, 20 more headers":
		return []string{traceparent(i, "00")}
	case "no traceparent":
		return nil
	case "upper-case hex":
		return []string{strings.ToUpper(traceparent(i, "01"))}
	case "repeated":
		return []string{traceparent(i, "01"), traceparent(i+1000, "01")}
	case "version ff":
		return []string{"ff" + traceparent(i, "01")[2:]}
	case "too long for version 00":
		return []string{traceparent(i, "01") + "-x"}
	case "all-zero trace ID":
		return []string{"00-" + strings.Repeat("0", 32) + "-" + tcParent + "-01"}
	case "future version, longer":
		return []string{"cc" + traceparent(i, "01")[2:] + "-what-the-future-holds"}
	}
	return []string{traceparent(i, "01")}
}

// TestIncomingTraceContext: a SERVER span whose request carries a W3C
// traceparent joins that trace (same trace ID, parent = the caller's span,
// tracestate kept), over HTTP/1.1 and HTTP/2, on both Go map layouts and a
// stripped binary; a parent's sampled=0 is honoured (parentbased sampler,
// the default); malformed or repeated values start a new root and are
// counted; requests with many headers are read as well as those with few.
func TestIncomingTraceContext(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range traceVariants {
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), []string{"OTEL_SERVICE_NAME=tc-" + v.Name}, "-tls")
			recv := e2e.StartReceiver(t)
			o := e2e.StartObsd(t, obsdBin, []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
			}, "--pid", itoa(srv.PID()), "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
			o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

			tlsCfg := &tls.Config{InsecureSkipVerify: true}
			clients := map[string]*http.Client{
				"HTTP/2.0": {Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second},
				"HTTP/1.1": {Transport: &http.Transport{TLSClientConfig: tlsCfg.Clone(),
					TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, Timeout: 10 * time.Second},
			}
			type sent struct {
				c     traceCase
				value []string
				proto string
			}
			byPath := map[string]sent{}
			wantSpans, wantInvalid := 0, 0
			i := 0
			for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
				cl := clients[proto]
				t.Cleanup(cl.CloseIdleConnections)
				for _, c := range traceCases() {
					i++
					path := fmt.Sprintf("/items/%d", i)
					req, err := http.NewRequest("GET", "https://"+srv.First+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					vals := c.values(i)
					if len(vals) > 0 {
						req.Header["Traceparent"] = vals
					}
					if c.state != "" {
						req.Header.Set("Tracestate", c.state)
					}
					for j := 0; j < c.extra; j++ {
						req.Header.Set(fmt.Sprintf("X-Extra-%d", j), "v")
					}
					resp, err := cl.Do(req)
					if err != nil {
						t.Fatalf("%s %s: %v", proto, c.name, err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.Proto != proto || resp.StatusCode != 200 {
						t.Fatalf("%s %s: %s %d", proto, c.name, resp.Proto, resp.StatusCode)
					}
					byPath[path] = sent{c: c, value: vals, proto: proto}
					if c.want != "none" {
						wantSpans++
					}
					if c.invalid {
						wantInvalid++
					}
				}
			}

			spans := recv.WaitSpans(t, wantSpans, 15*time.Second)
			// Time for a span that should not exist to arrive too.
			time.Sleep(500 * time.Millisecond)
			spans = recv.Spans()
			seen := map[string]bool{}
			for _, s := range spans {
				path := s.Attr("url.path")
				snt, ok := byPath[path]
				if !ok {
					t.Errorf("span for %q, which no request of this test had", path)
					continue
				}
				what := snt.proto + " " + snt.c.name
				if seen[path] {
					t.Errorf("%s: more than one span", what)
				}
				seen[path] = true
				tid, parent := hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetParentSpanId())
				switch snt.c.want {
				case "none":
					t.Errorf("%s: exported, but the caller said not sampled", what)
				case "parent":
					want := snt.value[0][3:35]
					if tid != want || parent != tcParent || s.GetTraceState() != snt.c.state {
						t.Errorf("%s: trace %s parent %s tracestate %q, want trace %s parent %s tracestate %q",
							what, tid, parent, s.GetTraceState(), want, tcParent, snt.c.state)
					}
				case "root":
					if parent != "" || strings.HasPrefix(tid, tcTrace[:28]) || s.GetTraceState() != "" {
						t.Errorf("%s: trace %s parent %q tracestate %q, want a new root", what, tid, parent, s.GetTraceState())
					}
				}
				if got := s.Attr("network.protocol.version"); (got == "2") != (snt.proto == "HTTP/2.0") {
					t.Errorf("%s: network.protocol.version %q", what, got)
				}
			}
			for path, snt := range byPath {
				if snt.c.want != "none" && !seen[path] {
					t.Errorf("%s %s: no span", snt.proto, snt.c.name)
				}
			}
			fams := e2e.Families(t, o.Scrape(t))
			if got := e2e.Sum(fams, "obsd_probe_anomalies_total", map[string]string{"reason": "traceparent_invalid"}); got != float64(wantInvalid) {
				t.Errorf("traceparent_invalid anomalies = %v, want %d", got, wantInvalid)
			}
			if got := e2e.Sum(fams, "obsd_probe_anomalies_total", map[string]string{"reason": "trace_context_unread"}); got != 0 {
				t.Errorf("trace_context_unread anomalies = %v, want 0", got)
			}
			if got := requestCount(fams, srv.PID()); got != float64(len(byPath)) {
				t.Errorf("requests counted %v, want the client's %d", got, len(byPath))
			}
		})
	}
}
