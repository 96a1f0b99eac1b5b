package prom

import (
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/internal/export"
)

// HTTPClient holds the http_client_* families: one duration observation per
// round trip the probe saw (every hop of a redirected request), from
// records (Observe) and from the series the probe counts in the kernel
// (SetKernel), merged.
type HTTPClient struct {
	duration  *prometheus.Desc
	overflow  *prometheus.Desc
	addresses *export.Bounded
	// kernel, if set, reads the series counted in the kernel at scrape time.
	kernel func() ([]HTTPClientKernel, error)

	mu     sync.Mutex
	series map[httpClientKey]*histogram
}

type httpClientKey struct {
	instance string
	labels   export.HTTPClientLabels
}

// HTTPClientKernel is one series of round trips counted in the kernel,
// its labels derived as Observe's; Buckets and SumNS as KernelSeries'.
type HTTPClientKernel struct {
	Service export.Service
	Labels  export.HTTPClientLabels
	Buckets []uint64
	SumNS   uint64
}

// SetKernel makes Collect add the series fn reads (at scrape time) to the
// observed ones.
func (h *HTTPClient) SetKernel(fn func() ([]HTTPClientKernel, error)) { h.kernel = fn }

// NewHTTPClient creates the families; log (nil: slog.Default) gets the
// once-per-process warning of a server_address overflow.
func NewHTTPClient(log *slog.Logger) *HTTPClient {
	labels := append([]string{"http_request_method", "http_response_status_code", "error_type",
		"server_address", "server_port", "network_protocol_version"}, export.ServiceLabels...)
	return &HTTPClient{
		duration: prometheus.NewDesc("http_client_request_duration_seconds",
			"Duration of HTTP client requests (each hop of a redirect is one), from the Transport's round trip's start to the response's headers or the error.", labels, nil),
		overflow: prometheus.NewDesc("obsd_server_address_overflow_total",
			"HTTP client requests labelled server_address=\""+export.OverflowServerAddress+"\" because their process already had "+
				strconv.Itoa(export.MaxServerAddresses)+" distinct server addresses.",
			export.ServiceLabels, nil),
		addresses: export.NewBounded("server_address", export.MaxServerAddresses, export.OverflowServerAddress, log),
		series:    map[httpClientKey]*histogram{},
	}
}

// Address returns the server_address and server_port labels of r, the
// address bounded per process (a truncated host is the overflow value,
// never a wrong name). r stands for n requests: 1 observed alone, or what
// a series counted in the kernel counted since it was last labelled (an
// overflow counts n).
func (h *HTTPClient) Address(svc export.Service, r client.Request, n uint64) (address, port string) {
	address, port = export.ServerTarget(r.Scheme, r.Host)
	if r.HostTruncated {
		return export.OverflowServerAddress, port
	}
	address = export.Clean(address, export.MaxValueLen, false)
	address, _ = h.addresses.Set(svc).AdmitN(address, n)
	return address, port
}

// Observe records one round trip under l (from Newexport.HTTPClientLabels); a
// sampled sc becomes the bucket's exemplar.
func (h *HTTPClient) Observe(svc export.Service, r client.Request, l export.HTTPClientLabels, sc trace.SpanContext) {
	sec := time.Duration(r.EndNS - r.StartNS).Seconds()
	b := sort.SearchFloat64s(DurationBuckets, sec)
	var ex *prometheus.Exemplar
	if sc.IsSampled() {
		ex = &prometheus.Exemplar{Value: sec, Timestamp: time.Now(), Labels: prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}}
	}
	k := httpClientKey{svc.InstanceID, l}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.series[k]
	if s == nil {
		s = newHistogram(svc.InstanceID, httpClientLabels(svc, l))
		h.series[k] = s
	}
	s.counts[b]++
	s.sum += sec
	if ex != nil {
		s.exemplars[b] = ex
	}
}

// Forget drops an exited process's series and its address set.
func (h *HTTPClient) Forget(svc export.Service) {
	h.mu.Lock()
	for k := range h.series {
		if k.instance == svc.InstanceID {
			delete(h.series, k)
		}
	}
	h.mu.Unlock()
	h.addresses.Forget(svc.InstanceID)
}

func (h *HTTPClient) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.duration
	ch <- h.overflow
}

func (h *HTTPClient) Collect(ch chan<- prometheus.Metric) {
	var kernel []KernelSeries
	var kerr error
	if h.kernel != nil {
		var ks []HTTPClientKernel
		ks, kerr = h.kernel()
		for _, k := range ks {
			kernel = append(kernel, KernelSeries{Instance: k.Service.InstanceID, Labels: httpClientLabels(k.Service, k.Labels),
				Buckets: k.Buckets, SumNS: k.SumNS})
		}
	}
	for _, o := range h.addresses.Overflows() {
		ch <- prometheus.MustNewConstMetric(h.overflow, prometheus.CounterValue, float64(o.N), o.Service.LabelValues()...)
	}
	h.mu.Lock()
	hs, err := withKernel(h.series, kernel)
	h.mu.Unlock()
	if err = errors.Join(kerr, err); err != nil {
		ch <- prometheus.NewInvalidMetric(h.duration, err)
	}
	for _, s := range hs {
		ch <- s.metric(h.duration)
	}
}

// httpClientLabels are the label values of a series, in the family's order.
func httpClientLabels(svc export.Service, l export.HTTPClientLabels) []string {
	return append([]string{l.Method, l.Status, l.ErrorType, l.Address, l.Port, l.Protocol}, svc.LabelValues()...)
}
