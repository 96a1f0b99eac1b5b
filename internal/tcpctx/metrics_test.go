package tcpctx

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeCounters struct {
	n   Counters
	err error
}

func (f *fakeCounters) Counters() (Counters, error) { return f.n, f.err }

func TestCollector(t *testing.T) {
	src := &fakeCounters{n: Counters{Written: 7, Parsed: 5, LostNoSpace: 2, Malformed: 1}}
	var logs bytes.Buffer
	c := NewCollector(src, slog.New(slog.NewTextHandler(&logs, nil)))
	want := `
# HELP obsd_tcp_context_anomalies_total Connections or segments the TCP context program could not handle, by reason.
# TYPE obsd_tcp_context_anomalies_total counter
obsd_tcp_context_anomalies_total{reason="callbacks_refused"} 0
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
	if got := strings.Count(logs.String(), "\n"); got != 2 {
		t.Fatalf("want the two non-zero reasons logged once each, got:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "reason=no_option_space") || !strings.Contains(logs.String(), "reason=malformed_option") {
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
