package prom

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/internal/export"
)

// TestRPCClientObserve: observations land in the semconv buckets of their
// series (le semantics), one series per label set and process, and Forget
// drops a process's series; the output passes the linter.
func TestRPCClientObserve(t *testing.T) {
	bounds := export.NewRPCBounds(nil)
	c := NewRPCClient(bounds)
	svc := export.Service{Name: "api", InstanceID: "h:1", Host: "h"}
	ok := bounds.ClientLabels(svc, "/pkg.Svc/Get", false, "10.0.0.1:443", false, 0, 1)
	late := bounds.ClientLabels(svc, "/pkg.Svc/Get", false, "10.0.0.1:443", false, 4, 1)
	c.Observe(svc, ok, 5*time.Millisecond, trace.SpanContext{}) // on the 0.005 bound
	c.Observe(svc, ok, 20*time.Millisecond, trace.SpanContext{})
	c.Observe(svc, late, 11*time.Second, trace.SpanContext{})
	want := `# HELP rpc_client_call_duration_seconds Duration of outgoing gRPC calls (each attempt), from picking a transport to the call's end.
# TYPE rpc_client_call_duration_seconds histogram
` + series(`rpc_method="pkg.Svc/Get",rpc_response_status_code="DEADLINE_EXCEEDED",rpc_system_name="grpc",server_address="10.0.0.1",server_port="443",service_instance_id="h:1",service_name="api"`,
		[]uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 11) +
		series(`rpc_method="pkg.Svc/Get",rpc_response_status_code="OK",rpc_system_name="grpc",server_address="10.0.0.1",server_port="443",service_instance_id="h:1",service_name="api"`,
			[]uint64{1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, (5*time.Millisecond).Seconds()+(20*time.Millisecond).Seconds())
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "rpc_client_call_duration_seconds"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	c.Forget(svc)
	if n := testutil.CollectAndCount(c, "rpc_client_call_duration_seconds"); n != 0 {
		t.Errorf("%d series after Forget, want 0", n)
	}
}

// series renders one histogram in the text format with host_name="h"
// (labels sorted, as the encoder writes them).
func series(labels string, cum []uint64, sum float64) string {
	labels = strings.Replace(labels, "rpc_method=", `host_name="h",rpc_method=`, 1)
	var b strings.Builder
	for i, bound := range DurationBuckets {
		b.WriteString("rpc_client_call_duration_seconds_bucket{" + labels + `,le="` + trimFloat(bound) + `"} ` + itoa(cum[i]) + "\n")
	}
	b.WriteString("rpc_client_call_duration_seconds_bucket{" + labels + `,le="+Inf"} ` + itoa(cum[len(cum)-1]) + "\n")
	b.WriteString("rpc_client_call_duration_seconds_sum{" + labels + "} " + trimFloat(sum) + "\n")
	b.WriteString("rpc_client_call_duration_seconds_count{" + labels + "} " + itoa(cum[len(cum)-1]) + "\n")
	return b.String()
}

func itoa(n uint64) string       { return strconv.FormatUint(n, 10) }
func trimFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
