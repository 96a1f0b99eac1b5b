package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
)

// rpcClient is the signal of probe.KindRPCClient: one
// rpc_client_call_duration_seconds observation and one CLIENT span per
// gRPC client call attempt, both with the same bounded labels.
type rpcClient struct {
	bounds *export.RPCBounds
	prom   *prom.RPCClient
	spans  *otelexport.Exporter
}

func newRPCClient(a *Agent) *rpcClient {
	bounds := export.NewRPCBounds(a.log)
	r := &rpcClient{bounds: bounds, prom: prom.NewRPCClient(bounds), spans: a.spans}
	kernel := a.kernelOf(probe.KindRPCClient)
	r.prom.SetKernel(func() ([]prom.RPCClientKernel, error) {
		ks, err := kernel()
		out := make([]prom.RPCClientKernel, 0, len(ks))
		for _, k := range ks {
			if c, ok := k.Series.(client.Call); ok {
				out = append(out, prom.RPCClientKernel{Service: k.Service, RPCLabels: r.labels(k.Service, c, k.New), Buckets: k.Buckets, SumNS: k.SumNS})
			}
		}
		return out, err
	})
	return r
}

func (r *rpcClient) observe(svc export.Service, spans bool, ev probe.Event) {
	c, ok := ev.(client.Call)
	if !ok {
		return
	}
	l := r.labels(svc, c, 1)
	var sc trace.SpanContext
	if spans {
		sc = r.spans.RPCClientSpan(svc, c, l)
	}
	r.prom.Observe(svc, l, time.Duration(c.EndNS-c.StartNS), sc)
}

// labels are c's, bounded per process; c stands for n attempts (an
// overflow counts n: see prom.Kernel.New).
func (r *rpcClient) labels(svc export.Service, c client.Call, n uint64) export.RPCLabels {
	return r.bounds.ClientLabels(svc, c.Method, c.MethodTruncated, c.Authority, c.AuthorityTruncated, c.Code, n)
}

// Describe and Collect make the signal its own families' Collector.
func (r *rpcClient) Describe(ch chan<- *prometheus.Desc) { r.prom.Describe(ch) }
func (r *rpcClient) Collect(ch chan<- prometheus.Metric) { r.prom.Collect(ch) }

func (r *rpcClient) forget(svc export.Service) {
	r.prom.Forget(svc)
	r.bounds.Forget(svc.InstanceID)
}
