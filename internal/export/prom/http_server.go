// Package prom exports observed requests as Prometheus metrics named after
// the OpenTelemetry semantic conventions.
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

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// DurationBuckets are the semconv buckets of http.server.request.duration.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Active is one in-kernel gauge reading.
type Active struct {
	Service export.Service
	Method  string
	N       int64
}

// Kernel is one duration histogram counted in the kernel, cumulative.
// Its buckets are those of DurationBuckets, plus +Inf last. New is how
// many calls it counted since the previous scrape read it: what its labels
// add to an overflow count when they overflow.
type Kernel struct {
	Service export.Service
	probe.Histogram
	New uint64
}

// HTTPServer holds the http_server_* families. Durations come from two
// sources that share series: requests observed one by one (Observe) and
// histograms the probe keeps in the kernel, read at scrape time.
type HTTPServer struct {
	duration *prometheus.Desc
	active   *prometheus.Desc
	overflow *prometheus.Desc
	activeFn func() ([]Active, error)
	kernelFn func() ([]Kernel, error)
	routes   *export.Routes

	mu sync.Mutex
	// series holds the observed histograms by label values.
	series map[string]*histogram
	// observers caches the series per raw request fields: the reader calls
	// Observe once per request, and deriving the labels costs more than the
	// rest of the request's processing. Every part of the key is bounded
	// (methods normalised, routes through the process's LabelSet), and
	// Forget prunes it.
	observers map[obsKey]*histogram
	// gauges holds every (process, method) the gauge has a series for: each
	// method a process has had a request of, counted or in flight. A series
	// reads 0 when nothing is in flight rather than vanishing, until Forget.
	gauges map[gaugeKey]export.Service
}

// gaugeKey is one http_server_active_requests series: the method is
// normalised.
type gaugeKey struct{ instance, method string }

type obsKey struct {
	instance string
	method   string
	status   int
	route    string
	protocol string
}

type histogram struct {
	instance string
	labels   []string
	counts   []uint64 // per bucket, +Inf last
	sum      float64
	// exemplars holds the latest sampled request per bucket.
	exemplars []*prometheus.Exemplar
}

func newHistogram(instance string, labels []string) *histogram {
	return &histogram{instance: instance, labels: labels,
		counts: make([]uint64, len(DurationBuckets)+1), exemplars: make([]*prometheus.Exemplar, len(DurationBuckets)+1)}
}

// NewHTTPServer creates the families; activeFn and kernelFn, either of which
// may be nil, are read at scrape time. routes, which the caller also uses
// for the routes it passes to Observe, names the kernel's patterns and
// counts obsd_route_overflow_total; nil means a Routes of its own.
func NewHTTPServer(activeFn func() ([]Active, error), kernelFn func() ([]Kernel, error), routes *export.Routes) *HTTPServer {
	if routes == nil {
		routes = export.NewRoutes(nil)
	}
	labels := append([]string{"http_request_method", "http_response_status_code", "http_route", "network_protocol_version"}, export.ServiceLabels...)
	return &HTTPServer{
		duration: prometheus.NewDesc("http_server_request_duration_seconds",
			"Duration of HTTP server requests, from the handler's start to the end of the response.", labels, nil),
		active: prometheus.NewDesc("http_server_active_requests",
			"Number of HTTP server requests in flight.",
			append([]string{"http_request_method"}, export.ServiceLabels...), nil),
		overflow: prometheus.NewDesc("obsd_route_overflow_total",
			"Requests labelled http_route=\""+export.OverflowRoute+"\" because their process already had "+
				strconv.Itoa(export.MaxRoutes)+" distinct routes.",
			export.ServiceLabels, nil),
		activeFn:  activeFn,
		kernelFn:  kernelFn,
		routes:    routes,
		series:    map[string]*histogram{},
		observers: map[obsKey]*histogram{},
		gauges:    map[gaugeKey]export.Service{},
	}
}

// labelValues of a request's series: method normalised, route bounded,
// every value valid UTF-8 (client_golang refuses anything else). protocol
// is one of the few values probe.Request.Protocol takes ("1.0", "1.1",
// "2", or "" when unknown).
func labelValues(svc export.Service, method string, status int, route, protocol string) []string {
	return append([]string{method, strconv.Itoa(status), route, protocol}, svc.LabelValues()...)
}

func seriesKey(labels []string) string { return strings.Join(labels, "\xff") }

// Observe records one request under route, which the caller got from the
// Routes given to NewHTTPServer (its span carries the same). When sc is
// sampled, its trace ID becomes the bucket's exemplar, so a slow bucket
// leads to a trace.
func (h *HTTPServer) Observe(svc export.Service, r probe.Request, route export.Route, sc trace.SpanContext) {
	sec := time.Duration(r.EndNS - r.StartNS).Seconds()
	k := obsKey{instance: svc.InstanceID, method: export.Method(r.Method), status: r.Status, route: route.Value, protocol: r.Protocol}
	// Le semantics: the first bucket whose bound is >= sec.
	b := sort.SearchFloat64s(DurationBuckets, sec)
	var ex *prometheus.Exemplar
	if sc.IsSampled() {
		ex = &prometheus.Exemplar{Value: sec, Timestamp: time.Now(), Labels: prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.observers[k]
	if !ok {
		labels := labelValues(svc, k.method, k.status, k.route, k.protocol)
		key := seriesKey(labels)
		if s = h.series[key]; s == nil {
			s = newHistogram(svc.InstanceID, labels)
			h.series[key] = s
		}
		h.observers[k] = s
		h.addGauge(svc, k.method)
	}
	s.counts[b]++
	s.sum += sec
	if ex != nil {
		s.exemplars[b] = ex
	}
}

// Forget drops an exited process's series.
func (h *HTTPServer) Forget(svc export.Service) {
	h.mu.Lock()
	for k := range h.observers {
		if k.instance == svc.InstanceID {
			delete(h.observers, k)
		}
	}
	for k, s := range h.series {
		if s.instance == svc.InstanceID {
			delete(h.series, k)
		}
	}
	for k := range h.gauges {
		if k.instance == export.Clean(svc.InstanceID, export.MaxValueLen, false) {
			delete(h.gauges, k)
		}
	}
	h.mu.Unlock()
	h.routes.Forget(svc.InstanceID)
}

// addGauge keeps an http_server_active_requests series for svc and the
// normalised method, with its label values cleaned as every other label's
// (the key must be the cleaned instance, or two keys would make one
// series). Called with h.mu held.
func (h *HTTPServer) addGauge(svc export.Service, method string) {
	svc.Name = export.Clean(svc.Name, export.MaxValueLen, false)
	svc.InstanceID = export.Clean(svc.InstanceID, export.MaxValueLen, false)
	svc.Host = export.Clean(svc.Host, export.MaxValueLen, false)
	h.gauges[gaugeKey{svc.InstanceID, method}] = svc
}

func (h *HTTPServer) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.duration
	ch <- h.active
	ch <- h.overflow
}

func (h *HTTPServer) Collect(ch chan<- prometheus.Metric) {
	h.collectDurations(ch)
	for _, o := range h.routes.Overflows() {
		ch <- prometheus.MustNewConstMetric(h.overflow, prometheus.CounterValue, float64(o.N), o.Service.LabelValues()...)
	}
	if h.activeFn == nil {
		return
	}
	act, err := h.activeFn()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(h.active, err)
		return
	}
	// Methods outside the standard set fold into _OTHER, so sum first.
	sums := map[gaugeKey]int64{}
	h.mu.Lock()
	for _, a := range act {
		k := gaugeKey{export.Clean(a.Service.InstanceID, export.MaxValueLen, false), export.Method(a.Method)}
		sums[k] += a.N
		h.addGauge(a.Service, k.method)
	}
	gauges := make(map[gaugeKey]export.Service, len(h.gauges))
	for k, svc := range h.gauges {
		gauges[k] = svc
	}
	h.mu.Unlock()
	for k, svc := range gauges {
		ch <- prometheus.MustNewConstMetric(h.active, prometheus.GaugeValue, float64(sums[k]), k.method, svc.Name, svc.InstanceID, svc.Host)
	}
}

// collectDurations merges the observed series with the kernel's: the same
// labels may come from both, and a series must appear once.
func (h *HTTPServer) collectDurations(ch chan<- prometheus.Metric) {
	var kernel []Kernel
	var kerr error
	if h.kernelFn != nil {
		kernel, kerr = h.kernelFn()
	}
	series := make([]KernelSeries, 0, len(kernel))
	for _, k := range kernel {
		method := export.Method(k.Method)
		h.mu.Lock()
		h.addGauge(k.Service, method)
		h.mu.Unlock()
		var route export.Route
		if k.Router != "" {
			route = h.routes.Router(k.Service, k.Router, k.Pattern, k.PatternTruncated, k.New)
		} else {
			route = h.routes.Pattern(k.Service, k.Pattern, k.New)
		}
		series = append(series, KernelSeries{Instance: k.Service.InstanceID,
			Labels: labelValues(k.Service, method, k.Status, route.Value, k.Protocol), Buckets: k.Buckets, SumNS: k.SumNS})
	}
	h.mu.Lock()
	hs, err := withKernel(h.series, series)
	h.mu.Unlock()
	if err = errors.Join(kerr, err); err != nil {
		ch <- prometheus.NewInvalidMetric(h.duration, err)
	}
	for _, c := range hs {
		ch <- c.metric(h.duration)
	}
}
