package prom

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

func TestHTTPServerObserve(t *testing.T) {
	svcA := export.Service{Name: "a", InstanceID: "h:1", Host: "h", PID: 1}
	svcB := export.Service{Name: "b", InstanceID: "h:2", Host: "h", PID: 2}
	active := []Active{{Service: svcA, Method: "GET", N: 3}}
	h := NewHTTPServer(func() ([]Active, error) { return active, nil }, nil, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)

	req := func(method, pattern, path string, status int) probe.Request {
		return probe.Request{Kind: probe.KindHTTPServer, Method: method, Pattern: pattern, Path: path,
			Status: status, StartNS: 1_000_000, EndNS: 3_000_000, Protocol: "1.1"}
	}
	for i := 0; i < 5; i++ {
		observe(h, svcA, req("GET", "GET /items/{id}", "/items/1", 200), trace.SpanContext{})
	}
	// The same request over HTTP/2 is a series of its own.
	h2 := req("GET", "GET /items/{id}", "/items/1", 200)
	h2.Protocol = "2"
	observe(h, svcA, h2, trace.SpanContext{})
	observe(h, svcA, h2, trace.SpanContext{})
	observe(h, svcA, req("BREW", "GET /items/{id}", "/items/1", 200), trace.SpanContext{})
	observe(h, svcA, req("GET", "", "/users/77", 404), trace.SpanContext{})
	observe(h, svcB, req("POST", "/echo", "/echo", 500), trace.SpanContext{})

	want := `
# HELP http_server_active_requests Number of HTTP server requests in flight.
# TYPE http_server_active_requests gauge
http_server_active_requests{host_name="h",http_request_method="GET",service_instance_id="h:1",service_name="a"} 3
http_server_active_requests{host_name="h",http_request_method="POST",service_instance_id="h:2",service_name="b"} 0
http_server_active_requests{host_name="h",http_request_method="_OTHER",service_instance_id="h:1",service_name="a"} 0
`
	if err := testutil.CollectAndCompare(h, strings.NewReader(want), "http_server_active_requests"); err != nil {
		t.Error(err)
	}
	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "http_server_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "host_name" {
					continue
				}
				parts = append(parts, l.GetValue())
			}
			counts[strings.Join(parts, " ")] = float64(m.GetHistogram().GetSampleCount())
			if got := m.GetHistogram().GetSampleSum(); got != float64(m.GetHistogram().GetSampleCount())*0.002 {
				t.Errorf("%v: sum %v, want 2 ms each", parts, got)
			}
		}
	}
	wantCounts := map[string]float64{
		"GET 200 /items/{id} 1.1 h:1 a":    5,
		"GET 200 /items/{id} 2 h:1 a":      2,
		"_OTHER 200 /items/{id} 1.1 h:1 a": 1,
		"GET 404 /users/{param} 1.1 h:1 a": 1,
		"POST 500 /echo 1.1 h:2 b":         1,
	}
	for k, n := range wantCounts {
		if counts[k] != n {
			t.Errorf("%s: %v, want %v (all: %v)", k, counts[k], n, counts)
		}
	}
	if len(counts) != len(wantCounts) {
		t.Errorf("series %v, want %v", counts, wantCounts)
	}

	h.Forget(svcA)
	if n := testutil.CollectAndCount(h, "http_server_request_duration_seconds"); n != 1 {
		t.Errorf("%d series after forgetting a, want 1", n)
	}
	// A forgotten instance starts afresh.
	observe(h, svcA, req("GET", "GET /items/{id}", "/items/1", 200), trace.SpanContext{})
	if n := testutil.CollectAndCount(h, "http_server_request_duration_seconds"); n != 2 {
		t.Errorf("%d series, want 2", n)
	}
}

// The gauge has a series for each method a process has seen, in flight,
// counted one by one or in the kernel; it reads 0 when nothing is in
// flight and goes only when the process is forgotten.
func TestActiveGaugeStaysAtZero(t *testing.T) {
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h", PID: 1}
	var active []Active
	var kernel []Kernel
	h := NewHTTPServer(func() ([]Active, error) { return active, nil }, func() ([]Kernel, error) { return kernel, nil }, nil)
	gauge := func(want string) {
		t.Helper()
		head := "# HELP http_server_active_requests Number of HTTP server requests in flight.\n# TYPE http_server_active_requests gauge\n"
		if want == "" {
			head = ""
		}
		if err := testutil.CollectAndCompare(h, strings.NewReader(head+want), "http_server_active_requests"); err != nil {
			t.Error(err)
		}
	}
	gauge("") // nothing seen yet
	active = []Active{{Service: svc, Method: "GET", N: 2}, {Service: svc, Method: "BREW", N: 1}, {Service: svc, Method: "PURGE", N: 1}}
	gauge(`http_server_active_requests{host_name="h",http_request_method="GET",service_instance_id="h:1",service_name="a"} 2
http_server_active_requests{host_name="h",http_request_method="_OTHER",service_instance_id="h:1",service_name="a"} 2
`)
	active = nil
	kernel = []Kernel{{Service: svc, Histogram: probe.Histogram{Method: "DELETE", Status: 204, Pattern: "/x", Buckets: make([]uint64, len(DurationBuckets)+1)}}}
	gauge(`http_server_active_requests{host_name="h",http_request_method="DELETE",service_instance_id="h:1",service_name="a"} 0
http_server_active_requests{host_name="h",http_request_method="GET",service_instance_id="h:1",service_name="a"} 0
http_server_active_requests{host_name="h",http_request_method="_OTHER",service_instance_id="h:1",service_name="a"} 0
`)
	kernel = nil
	h.Forget(svc)
	gauge("")
}

func TestHTTPServerExemplar(t *testing.T) {
	h := NewHTTPServer(nil, nil, nil)
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h"}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3},
		SpanID:     trace.SpanID{4, 5},
		TraceFlags: trace.FlagsSampled,
	})
	observe(h, svc, probe.Request{Method: "GET", Pattern: "/x", Status: 200, EndNS: 1e6}, sc)
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				if ex := b.GetExemplar(); ex != nil {
					for _, l := range ex.GetLabel() {
						if l.GetName() == "trace_id" && l.GetValue() == sc.TraceID().String() {
							found = true
						}
					}
				}
			}
		}
	}
	if !found {
		t.Error("no exemplar with the sampled span's trace_id")
	}
}

func BenchmarkObserve(b *testing.B) {
	h := NewHTTPServer(nil, nil, nil)
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h"}
	r := probe.Request{Method: "GET", Pattern: "GET /items/{id}", Path: "/items/1", Status: 200, EndNS: 1e6}
	for b.Loop() {
		observe(h, svc, r, trace.SpanContext{})
	}
}

// Series counted in the kernel and series observed one by one share labels:
// the scrape shows one series holding both.
func TestHTTPServerKernelMerge(t *testing.T) {
	svc := export.Service{Name: "a", InstanceID: "h:1", Host: "h", PID: 1}
	buckets := func(at int, n uint64) []uint64 {
		b := make([]uint64, len(DurationBuckets)+1)
		b[at] = n
		return b
	}
	kernel := []Kernel{
		// 3 requests of 2 ms and 2 of 20 s (+Inf), routed by a pattern.
		{Service: svc, Histogram: probe.Histogram{Method: "GET", Status: 200, Pattern: "GET /items/{id}", Protocol: "2", Buckets: buckets(0, 3), SumNS: 6_000_000}},
		{Service: svc, Histogram: probe.Histogram{Method: "GET", Status: 200, Pattern: "GET /items/{id}", Protocol: "2", Buckets: buckets(len(DurationBuckets), 2), SumNS: 40e9}},
		{Service: svc, Histogram: probe.Histogram{Method: "BREW", Status: 418, Pattern: "/pot", Protocol: "1.1", Buckets: buckets(1, 1), SumNS: 7_000_000}},
	}
	h := NewHTTPServer(nil, func() ([]Kernel, error) { return kernel, nil }, nil)
	observe(h, svc, probe.Request{Method: "GET", Pattern: "GET /items/{id}", Status: 200, StartNS: 0, EndNS: 2_000_000, Protocol: "2"}, trace.SpanContext{})

	want := `
# HELP http_server_request_duration_seconds Duration of HTTP server requests, from the handler's start to the end of the response.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.005"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.01"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.025"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.05"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.075"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.1"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.25"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.5"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="0.75"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="1"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="2.5"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="5"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="7.5"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="10"} 4
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a",le="+Inf"} 6
http_server_request_duration_seconds_sum{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a"} 40.008
http_server_request_duration_seconds_count{host_name="h",http_request_method="GET",http_response_status_code="200",http_route="/items/{id}",network_protocol_version="2",service_instance_id="h:1",service_name="a"} 6
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.005"} 0
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.01"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.025"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.05"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.075"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.1"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.25"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.5"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="0.75"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="1"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="2.5"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="5"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="7.5"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="10"} 1
http_server_request_duration_seconds_bucket{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a",le="+Inf"} 1
http_server_request_duration_seconds_sum{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a"} 0.007
http_server_request_duration_seconds_count{host_name="h",http_request_method="_OTHER",http_response_status_code="418",http_route="/pot",network_protocol_version="1.1",service_instance_id="h:1",service_name="a"} 1
`
	if err := testutil.CollectAndCompare(h, strings.NewReader(want), "http_server_request_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// observe records r under the route the agent would give it.
func observe(h *HTTPServer, svc export.Service, r probe.Request, sc trace.SpanContext) {
	h.Observe(svc, r, h.routes.Route(svc, r), sc)
}

// TestInvalidStringsScrape: client_golang refuses label values that are not
// UTF-8, by panicking in MustNewConst*; the target's environment and request
// data may hold any bytes. The scrape must still work and carry them cleaned.
func TestInvalidStringsScrape(t *testing.T) {
	svc := export.Service{Name: "shop-\xff", InstanceID: "h\xfe:1", Host: "h\xfd", PID: 1}
	kernel := []Kernel{{Service: svc, Histogram: probe.Histogram{Method: "GET", Status: 200,
		Pattern: "/k\xff", Buckets: make([]uint64, len(DurationBuckets)+1)}}}
	// The agent cleans each Service once (Service.Clean); the durations'
	// labels are cleaned again here, the active gauge's are not.
	h := NewHTTPServer(func() ([]Active, error) { return []Active{{Service: svc.Clean(), Method: "GET", N: 1}}, nil },
		func() ([]Kernel, error) { return kernel, nil }, nil)
	observe(h, svc, probe.Request{Method: "GET", Pattern: "/users/\xff/", Status: 301, EndNS: 1e6}, trace.SpanContext{})
	observe(h, svc, probe.Request{Method: "GET", Path: "/x/\xff", Status: 404, EndNS: 1e6}, trace.SpanContext{})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	routes := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "http_route":
					routes[l.GetValue()] = true
				case "service_name":
					if l.GetValue() != "shop-\uFFFD" {
						t.Errorf("service_name = %q", l.GetValue())
					}
				}
			}
		}
	}
	want := map[string]bool{"/users/\uFFFD/": true, "/x/{param}": true, "/k\uFFFD": true}
	if len(routes) != len(want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
	for r := range want {
		if !routes[r] {
			t.Errorf("routes %v, want %v", routes, want)
		}
	}
}
