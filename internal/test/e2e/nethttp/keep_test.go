package nethttp

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestKeepSlowAndErrors: with head sampling at 0 (always_off), a request
// that turned out slow (--keep-slow) or failed (5xx, --keep-errors) is still
// exported, saying why; fast and 4xx requests are not; metrics count every
// request. Every exemplar on the duration histogram names a trace the
// collector received: a click from a bucket always finds its trace.
func TestKeepSlowAndErrors(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), []string{"OTEL_SERVICE_NAME=keep"})
	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_TRACES_SAMPLER=always_off",
	}, "--pid", itoa(srv.PID()), "--traces", "otlp", "--keep-slow=250ms", "--keep-errors")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	cases := []struct {
		path string
		n    int
		kept string // obsd.kept_reason, "" for not exported
	}{
		{"/hello", 5, ""},
		{"/sleep?ms=20", 2, ""},
		{"/status/404", 2, ""},
		{"/sleep?ms=400", 3, "slow"},
		{"/status/503", 2, "error"},
		{"/status/500", 1, "error"},
	}
	c := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	want := map[string]int{} // url.path + kept reason -> spans
	total, kept := 0, 0
	for _, tc := range cases {
		for i := 0; i < tc.n; i++ {
			resp, err := c.Get("http://" + srv.First + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			total++
			if tc.kept != "" {
				u, _, _ := strings.Cut(tc.path, "?") // url.path has no query
				want[u+" "+tc.kept]++
				kept++
			}
		}
	}
	recv.WaitSpans(t, kept, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // for spans that should not come
	got := map[string]int{}
	traces := map[string]bool{}
	for _, s := range recv.Spans() {
		got[s.Attr("url.path")+" "+s.Attr("obsd.kept_reason")]++
		traces[hex.EncodeToString(s.GetTraceId())] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("spans by (url.path, obsd.kept_reason) = %v, want %v", got, want)
	}
	fams := e2e.Families(t, o.Scrape(t))
	if n := requestCount(fams, srv.PID()); n != float64(total) {
		t.Errorf("requests counted %v, want the client's %d", n, total)
	}

	// Exemplars, from the OpenMetrics exposition.
	code, body := o.Get(t, "/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	re := regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*\} \S+ # \{[^}]*trace_id="([0-9a-f]{32})"`)
	ex := re.FindAllStringSubmatch(string(body), -1)
	for _, m := range ex {
		if !traces[m[1]] {
			t.Errorf("exemplar trace_id %s is not a trace the collector received", m[1])
		}
	}
	if len(ex) == 0 {
		t.Errorf("no exemplars on http_server_request_duration_seconds; want one per bucket a kept span fell in")
	}
}
