package tcpctx

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeCounters struct {
	n   Counters
	err error
}

func (f *fakeCounters) Counters() (Counters, error) { return f.n, f.err }

func TestCollector(t *testing.T) {
	src := &fakeCounters{n: Counters{Written: 7, Parsed: 5, LostNoSpace: 2, Malformed: 1, HeadersLost: 4}}
	var logs bytes.Buffer
	c := NewCollector(src, slog.New(slog.NewTextHandler(&logs, nil)))
	want := `
# HELP obsd_tcp_context_anomalies_total Connections or segments the TCP context program could not handle, by reason.
# TYPE obsd_tcp_context_anomalies_total counter
obsd_tcp_context_anomalies_total{reason="callbacks_refused"} 0
obsd_tcp_context_anomalies_total{reason="header_injector_refused"} 0
obsd_tcp_context_anomalies_total{reason="http2_frames_lost"} 4
obsd_tcp_context_anomalies_total{reason="malformed_option"} 1
obsd_tcp_context_anomalies_total{reason="netns_unreadable"} 0
# HELP obsd_tcp_context_lost_total Trace contexts that did not cross a TCP connection, by reason.
# TYPE obsd_tcp_context_lost_total counter
obsd_tcp_context_lost_total{reason="no_option_space"} 2
obsd_tcp_context_lost_total{reason="received_map_full"} 0
obsd_tcp_context_lost_total{reason="store_failed"} 0
# HELP obsd_tcp_context_options_total TCP segments that carried trace context in obsd's header option, by direction (sent, received).
# TYPE obsd_tcp_context_options_total counter
obsd_tcp_context_options_total{direction="received"} 5
obsd_tcp_context_options_total{direction="sent"} 7
# HELP obsd_tcp_context_read_errors_total Scrapes that could not read the TCP context program's counters.
# TYPE obsd_tcp_context_read_errors_total counter
obsd_tcp_context_read_errors_total 0
`
	for i := 0; i < 2; i++ {
		if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(logs.String(), "\n"); got != 3 {
		t.Fatalf("want the three non-zero reasons logged once each, got:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "reason=no_option_space") ||
		!strings.Contains(logs.String(), "reason=malformed_option") || !strings.Contains(logs.String(), "reason=http2_frames_lost") {
		t.Fatalf("logs:\n%s", logs.String())
	}
	src.err = errors.New("boom")
	for i := 0; i < 2; i++ {
		if n := testutil.CollectAndCount(c, "obsd_tcp_context_options_total"); n != 0 {
			t.Fatalf("on a read error, %d options series, want none", n)
		}
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP obsd_tcp_context_read_errors_total Scrapes that could not read the TCP context program's counters.
# TYPE obsd_tcp_context_read_errors_total counter
obsd_tcp_context_read_errors_total 3
`), "obsd_tcp_context_read_errors_total"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(logs.String(), "boom"); got != 1 {
		t.Fatalf("the read error logged %d times, want once:\n%s", got, logs.String())
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// TestCollectorHeaders: the header injector's series appear only when it
// is on, and a lost header (no_room) is logged once.
func TestCollectorHeaders(t *testing.T) {
	src := &fakeCounters{n: Counters{HeadersInjected: 9, HeadersPresent: 2, HeadersNotHTTP1: 3, HeadersFailed: 1, HeadersUnread: 5, HeadersNoStream: 4}}
	var logs bytes.Buffer
	c := NewCollector(src, slog.New(slog.NewTextHandler(&logs, nil)))
	if n := testutil.CollectAndCount(c, "obsd_trace_headers_injected_total", "obsd_trace_headers_skipped_total"); n != 0 {
		t.Fatalf("%d header series with the injector off, want none", n)
	}
	src.n.Headers = true
	want := `
# HELP obsd_trace_headers_injected_total Outgoing HTTP/1.x, HTTP/2 and gRPC requests (without TLS) given a traceparent header (--propagate=headers).
# TYPE obsd_trace_headers_injected_total counter
obsd_trace_headers_injected_total 9
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "obsd_trace_headers_injected_total"); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "obsd_trace_headers_skipped_total" {
			for _, m := range f.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	wantSkips := map[string]float64{"already_present": 2, "not_http1": 3, "head_too_long": 0, "no_room": 1, "raced": 0, "http2_connection_unread": 5, "http2_stream_without_context": 4}
	if fmt.Sprint(got) != fmt.Sprint(wantSkips) {
		t.Errorf("skips %v, want %v", got, wantSkips)
	}
	testutil.CollectAndCount(c)
	for _, r := range []string{"no_room", "http2_connection_unread", "http2_stream_without_context"} {
		if n := strings.Count(logs.String(), "reason="+r); n != 1 {
			t.Errorf("%s logged %d times, want once:\n%s", r, n, logs.String())
		}
	}
	if strings.Contains(logs.String(), "already_present") || strings.Contains(logs.String(), "not_http1") {
		t.Errorf("an expected skip was logged as a loss:\n%s", logs.String())
	}
}
