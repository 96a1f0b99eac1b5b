package prom

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/internal/export"
)

var rpcSvc = export.Service{Name: "greeter", InstanceID: "h:1", Host: "h", PID: 1}

// The family in full for one series: semconv buckets, +Inf, sum, count.
func TestRPCServerExposition(t *testing.T) {
	r := NewRPCServer(export.NewBounded("rpc_method", 10, export.OtherMethod, nil))
	r.ObserveRPC(rpcSvc, "grpc", "a.B/C", "NOT_FOUND", 60*time.Millisecond, trace.SpanContext{})
	r.ObserveRPC(rpcSvc, "grpc", "a.B/C", "NOT_FOUND", 20*time.Second, trace.SpanContext{})
	labels := `host_name="h",rpc_method="a.B/C",rpc_response_status_code="NOT_FOUND",rpc_system_name="grpc",service_instance_id="h:1",service_name="greeter"`
	var b strings.Builder
	b.WriteString("# HELP rpc_server_call_duration_seconds Duration of RPC server calls, from the call's dispatch to its status being written.\n")
	b.WriteString("# TYPE rpc_server_call_duration_seconds histogram\n")
	for _, le := range []string{"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"} {
		n := 1
		switch le {
		case "0.005", "0.01", "0.025", "0.05":
			n = 0
		case "+Inf":
			n = 2
		}
		fmt.Fprintf(&b, "rpc_server_call_duration_seconds_bucket{%s,le=%q} %d\n", labels, le, n)
	}
	fmt.Fprintf(&b, "rpc_server_call_duration_seconds_sum{%s} 20.06\n", labels)
	fmt.Fprintf(&b, "rpc_server_call_duration_seconds_count{%s} 2\n", labels)
	if err := testutil.CollectAndCompare(r, strings.NewReader(b.String()), "rpc_server_call_duration_seconds"); err != nil {
		t.Error(err)
	}
	if lint, err := testutil.CollectAndLint(r); err != nil || len(lint) > 0 {
		t.Errorf("lint: %v %v", lint, err)
	}
}

// Methods past the process's bound are _OTHER and counted; Forget drops
// the process's series.
func TestRPCServerBoundAndForget(t *testing.T) {
	methods := export.NewBounded("rpc_method", 1, export.OtherMethod, nil)
	r := NewRPCServer(methods)
	for _, m := range []string{"a.B/C", "a.B/C", "a.B/D", "a.B/E"} {
		v, _ := methods.Set(rpcSvc).Admit(m)
		r.ObserveRPC(rpcSvc, "grpc", v, "OK", time.Millisecond, trace.SpanContext{})
	}
	want := `
# HELP obsd_rpc_method_overflow_total RPC calls labelled rpc_method="_OTHER" because their process already had 1000 distinct methods.
# TYPE obsd_rpc_method_overflow_total counter
obsd_rpc_method_overflow_total{host_name="h",service_instance_id="h:1",service_name="greeter"} 2
`
	if err := testutil.CollectAndCompare(r, strings.NewReader(want), "obsd_rpc_method_overflow_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(r, "rpc_server_call_duration_seconds"); n != 2 {
		t.Errorf("%d series, want 2 (a.B/C and _OTHER)", n)
	}
	r.Forget(rpcSvc)
	if n := testutil.CollectAndCount(r); n != 0 {
		t.Errorf("%d series after Forget", n)
	}
}
