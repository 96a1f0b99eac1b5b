package prom

import (
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/internal/export"
)

// RPCClientBuckets are the semconv buckets of rpc.client.call.duration
// (the same as HTTP's).
var RPCClientBuckets = DurationBuckets

// RPCClient holds rpc_client_call_duration_seconds: one observation per
// attempt of a gRPC client call, labelled rpc_system_name="grpc",
// rpc_method, rpc_response_status_code, server_address, server_port and
// the service labels; and obsd_rpc_client_label_overflow_total.
type RPCClient struct {
	duration *prometheus.Desc
	overflow *prometheus.Desc
	bounds   *export.RPCBounds

	// kernel, if set, reads the series counted in the kernel at scrape time.
	kernel func() ([]RPCClientKernel, error)

	mu     sync.Mutex
	series map[rpcClientKey]*histogram
}

// RPCClientKernel is one series of attempts counted in the kernel, its
// labels bounded as Observe's; Buckets and SumNS as KernelSeries'.
type RPCClientKernel struct {
	Service export.Service
	export.RPCLabels
	Buckets []uint64
	SumNS   uint64
}

// SetKernel makes Collect add the series fn reads (at scrape time) to the
// observed ones.
func (c *RPCClient) SetKernel(fn func() ([]RPCClientKernel, error)) { c.kernel = fn }

type rpcClientKey struct {
	instance string
	export.RPCLabels
}

// NewRPCClient creates the families; bounds, which the caller also uses
// for the labels it passes to Observe, reports the overflows (nil: none).
func NewRPCClient(bounds *export.RPCBounds) *RPCClient {
	labels := append([]string{"rpc_system_name", "rpc_method", "rpc_response_status_code", "server_address", "server_port"},
		export.ServiceLabels...)
	return &RPCClient{
		duration: prometheus.NewDesc("rpc_client_call_duration_seconds",
			"Duration of outgoing gRPC calls (each attempt), from picking a transport to the call's end.", labels, nil),
		overflow: prometheus.NewDesc("obsd_rpc_client_label_overflow_total",
			"gRPC client calls whose label value was replaced by \""+export.OtherMethod+
				"\" because their process already had the most distinct values of that label.",
			append([]string{"label"}, export.ServiceLabels...), nil),
		bounds: bounds,
		series: map[rpcClientKey]*histogram{},
	}
}

// Observe records one call of svc that lasted d, under l (bounded by the
// RPCBounds given to NewRPCClient). When sc is sampled, its trace ID
// becomes the bucket's exemplar.
func (c *RPCClient) Observe(svc export.Service, l export.RPCLabels, d time.Duration, sc trace.SpanContext) {
	sec := d.Seconds()
	b := sort.SearchFloat64s(RPCClientBuckets, sec)
	var ex *prometheus.Exemplar
	if sc.IsSampled() {
		ex = &prometheus.Exemplar{Value: sec, Timestamp: time.Now(), Labels: prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}}
	}
	k := rpcClientKey{instance: svc.InstanceID, RPCLabels: l}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.series[k]
	if s == nil {
		s = newHistogram(svc.InstanceID, rpcClientLabels(svc, l))
		c.series[k] = s
	}
	s.counts[b]++
	s.sum += sec
	if ex != nil {
		s.exemplars[b] = ex
	}
}

// Forget drops an exited process's series.
func (c *RPCClient) Forget(svc export.Service) {
	c.mu.Lock()
	for k := range c.series {
		if k.instance == svc.InstanceID {
			delete(c.series, k)
		}
	}
	c.mu.Unlock()
}

func (c *RPCClient) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.duration
	ch <- c.overflow
}

func (c *RPCClient) Collect(ch chan<- prometheus.Metric) {
	var kernel []KernelSeries
	var kerr error
	if c.kernel != nil {
		var ks []RPCClientKernel
		ks, kerr = c.kernel()
		for _, k := range ks {
			kernel = append(kernel, KernelSeries{Instance: k.Service.InstanceID, Labels: rpcClientLabels(k.Service, k.RPCLabels),
				Buckets: k.Buckets, SumNS: k.SumNS})
		}
	}
	c.mu.Lock()
	hs, err := withKernel(c.series, kernel)
	c.mu.Unlock()
	if err = errors.Join(kerr, err); err != nil {
		ch <- prometheus.NewInvalidMetric(c.duration, err)
	}
	for _, h := range hs {
		ch <- h.metric(c.duration)
	}
	if c.bounds == nil {
		return
	}
	for _, o := range c.bounds.Overflows() {
		ch <- prometheus.MustNewConstMetric(c.overflow, prometheus.CounterValue, float64(o.N),
			append([]string{o.Label}, o.Service.LabelValues()...)...)
	}
}

// rpcClientLabels are the label values of a series, in the family's order.
func rpcClientLabels(svc export.Service, l export.RPCLabels) []string {
	return append([]string{"grpc", l.Method, l.Code, l.Address, l.Port}, svc.LabelValues()...)
}
