package prom

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/internal/export"
)

// RPCDurationBuckets are the semconv buckets of rpc.server.call.duration
// (stable RPC conventions, the same as HTTP's), in seconds.
var RPCDurationBuckets = DurationBuckets

// RPCServer holds rpc_server_call_duration_seconds: one observation per
// gRPC server call, labelled rpc_system_name="grpc", rpc_method (bounded
// per process by the export.Bounded the caller also labels spans with) and
// rpc_response_status_code (the code's name).
type RPCServer struct {
	duration *prometheus.Desc
	overflow *prometheus.Desc
	methods  *export.Bounded

	// kernel, if set, reads the series counted in the kernel at scrape time.
	kernel func() ([]RPCKernel, error)

	mu     sync.Mutex
	series map[string]*histogram // by label values
}

// RPCKernel is one series of calls counted in the kernel: Method already
// bounded as ObserveRPC's, Code the status code's name; Buckets and SumNS
// as KernelSeries'.
type RPCKernel struct {
	Service      export.Service
	Method, Code string
	Buckets      []uint64
	SumNS        uint64
}

// SetKernel makes Collect add the series fn reads (at scrape time) to the
// observed ones.
func (r *RPCServer) SetKernel(fn func() ([]RPCKernel, error)) { r.kernel = fn }

// NewRPCServer creates the family; methods bounds rpc_method per process
// and its overflows are exported as obsd_rpc_method_overflow_total.
func NewRPCServer(methods *export.Bounded) *RPCServer {
	labels := append([]string{"rpc_system_name", "rpc_method", "rpc_response_status_code"}, export.ServiceLabels...)
	return &RPCServer{
		duration: prometheus.NewDesc("rpc_server_call_duration_seconds",
			"Duration of RPC server calls, from the call's dispatch to its status being written.", labels, nil),
		overflow: prometheus.NewDesc("obsd_rpc_method_overflow_total",
			"RPC calls labelled rpc_method=\""+export.OtherMethod+"\" because their process already had "+strconv.Itoa(export.MaxRPCMethods)+" distinct methods.",
			export.ServiceLabels, nil),
		methods: methods,
		series:  map[string]*histogram{},
	}
}

// ObserveRPC records one call of method (already bounded) that ended with
// the status code name code and lasted d. A sampled sc becomes the bucket's
// exemplar.
func (r *RPCServer) ObserveRPC(svc export.Service, system, method, code string, d time.Duration, sc trace.SpanContext) {
	sec := d.Seconds()
	labels := append([]string{system, method, code}, svc.LabelValues()...)
	key := strings.Join(labels, "\xff")
	b := sort.SearchFloat64s(RPCDurationBuckets, sec)
	var ex *prometheus.Exemplar
	if sc.IsSampled() {
		ex = &prometheus.Exemplar{Value: sec, Timestamp: time.Now(), Labels: prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.series[key]
	if s == nil {
		s = newHistogram(svc.InstanceID, labels)
		r.series[key] = s
	}
	s.counts[b]++
	s.sum += sec
	if ex != nil {
		s.exemplars[b] = ex
	}
}

// Forget drops an exited process's series.
func (r *RPCServer) Forget(svc export.Service) {
	r.mu.Lock()
	for k, s := range r.series {
		if s.instance == svc.InstanceID {
			delete(r.series, k)
		}
	}
	r.mu.Unlock()
	r.methods.Forget(svc.InstanceID)
}

func (r *RPCServer) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.duration
	ch <- r.overflow
}

func (r *RPCServer) Collect(ch chan<- prometheus.Metric) {
	var kernel []KernelSeries
	var kerr error
	if r.kernel != nil {
		var ks []RPCKernel
		ks, kerr = r.kernel()
		for _, k := range ks {
			kernel = append(kernel, KernelSeries{Instance: k.Service.InstanceID,
				Labels: append([]string{"grpc", k.Method, k.Code}, k.Service.LabelValues()...), Buckets: k.Buckets, SumNS: k.SumNS})
		}
	}
	r.mu.Lock()
	hs, err := withKernel(r.series, kernel)
	r.mu.Unlock()
	if err = errors.Join(kerr, err); err != nil {
		ch <- prometheus.NewInvalidMetric(r.duration, err)
	}
	for _, s := range hs {
		ch <- s.metric(r.duration)
	}
	for _, o := range r.methods.Overflows() {
		ch <- prometheus.MustNewConstMetric(r.overflow, prometheus.CounterValue, float64(o.N), o.Service.LabelValues()...)
	}
}

// metric is the histogram as a const metric with its exemplars.
func (s *histogram) metric(desc *prometheus.Desc) prometheus.Metric {
	var total uint64
	cum := make(map[float64]uint64, len(DurationBuckets))
	for i, bound := range DurationBuckets {
		total += s.counts[i]
		cum[bound] = total
	}
	total += s.counts[len(DurationBuckets)]
	m := prometheus.MustNewConstHistogram(desc, total, s.sum, cum, s.labels...)
	var exs []prometheus.Exemplar
	for _, ex := range s.exemplars {
		if ex != nil {
			exs = append(exs, *ex)
		}
	}
	if len(exs) > 0 {
		if mx, err := prometheus.NewMetricWithExemplars(m, exs...); err == nil {
			m = mx
		}
	}
	return m
}
