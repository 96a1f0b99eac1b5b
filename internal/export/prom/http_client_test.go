package prom

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

func observeClient(h *HTTPClient, svc export.Service, r client.Request) {
	addr, port := h.Address(svc, r, 1)
	h.Observe(svc, r, export.NewHTTPClientLabels(r, addr, port), trace.SpanContext{})
}

func TestHTTPClientObserve(t *testing.T) {
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h", PID: 1}
	h := NewHTTPClient(nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	ok := client.Request{Method: "GET", Scheme: "https", Host: "api", Status: 200, ProtoMajor: 2, Call: probe.Call{StartNS: 1_000_000, EndNS: 3_000_000}}
	refused := client.Request{Method: "POST", Scheme: "http", Host: "db:5984", Err: client.ErrConnectionRefused, Call: probe.Call{EndNS: 20_000_000}}
	for i := 0; i < 3; i++ {
		observeClient(h, svc, ok)
	}
	observeClient(h, svc, refused)
	want := `
# HELP http_client_request_duration_seconds Duration of HTTP client requests (each hop of a redirect is one), from the Transport's round trip's start to the response's headers or the error.
# TYPE http_client_request_duration_seconds histogram
`
	var b strings.Builder
	b.WriteString(want)
	series := func(labels string, le int, n int, sum string) {
		for i, bound := range DurationBuckets {
			c := 0
			if i >= le {
				c = n
			}
			fmt.Fprintf(&b, "http_client_request_duration_seconds_bucket{%s,le=\"%v\"} %d\n", labels, bound, c)
		}
		fmt.Fprintf(&b, "http_client_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, n)
		fmt.Fprintf(&b, "http_client_request_duration_seconds_sum{%s} %s\n", labels, sum)
		fmt.Fprintf(&b, "http_client_request_duration_seconds_count{%s} %d\n", labels, n)
	}
	series(`error_type="",host_name="h",http_request_method="GET",http_response_status_code="200",network_protocol_version="2",server_address="api",server_port="443",service_instance_id="h:1",service_name="a"`, 0, 3, "0.006")
	series(`error_type="connection_refused",host_name="h",http_request_method="POST",http_response_status_code="",network_protocol_version="",server_address="db",server_port="5984",service_instance_id="h:1",service_name="a"`, 2, 1, "0.02")
	if err := testutil.CollectAndCompare(h, strings.NewReader(b.String()), "http_client_request_duration_seconds"); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.CollectAndLint(h); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", err, probs)
	}
}

// TestHTTPClientAddressOverflow: past MaxServerAddresses distinct
// addresses, a process's new ones are the overflow value, counted; a host
// the probe cut short is never exported as a (wrong) name.
func TestHTTPClientAddressOverflow(t *testing.T) {
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h", PID: 1}
	other := export.Service{Name: "b", InstanceID: "h:2", Host: "h", PID: 2}
	h := NewHTTPClient(nil)
	for i := 0; i < export.MaxServerAddresses+7; i++ {
		observeClient(h, svc, client.Request{Method: "GET", Scheme: "http", Host: fmt.Sprintf("host%d", i), Status: 200, ProtoMajor: 1, ProtoMinor: 1})
	}
	observeClient(h, other, client.Request{Method: "GET", Scheme: "http", Host: "host500", Status: 200, ProtoMajor: 1, ProtoMinor: 1})
	if a, _ := h.Address(svc, client.Request{Scheme: "http", Host: "cut-short", HostTruncated: true}, 1); a != export.OverflowServerAddress {
		t.Errorf("truncated host exported as %q", a)
	}
	want := `
# HELP obsd_server_address_overflow_total HTTP client requests labelled server_address="_OTHER" because their process already had 100 distinct server addresses.
# TYPE obsd_server_address_overflow_total counter
obsd_server_address_overflow_total{host_name="h",service_instance_id="h:1",service_name="a"} 7
`
	if err := testutil.CollectAndCompare(h, strings.NewReader(want), "obsd_server_address_overflow_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h, "http_client_request_duration_seconds"); n != export.MaxServerAddresses+2 {
		t.Errorf("%d series, want %d (100 addresses, the overflow, the other process)", n, export.MaxServerAddresses+2)
	}
}
