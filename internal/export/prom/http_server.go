// Package prom exports observed requests as Prometheus metrics named after
// the OpenTelemetry semantic conventions.
package prom

import (
	"strconv"
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

// HTTPServer holds the http_server_* families.
type HTTPServer struct {
	duration *prometheus.HistogramVec
	active   *prometheus.Desc
	overflow *prometheus.Desc
	activeFn func() ([]Active, error)
	routes   *routes

	// observers caches the child of duration per label combination: the
	// reader calls Observe once per request, and resolving a child from six
	// label values costs more than the rest of the request's processing.
	// Every part of the key is bounded (methods normalised, patterns fixed
	// by the program, fallback routes capped), and Forget prunes it.
	mu        sync.Mutex
	observers map[obsKey]prometheus.Observer
}

type obsKey struct {
	instance string
	method   string
	status   int
	// pattern is the raw ServeMux pattern; route is set only without one.
	pattern, route string
}

// NewHTTPServer creates the families; activeFn is read at scrape time.
func NewHTTPServer(activeFn func() ([]Active, error)) *HTTPServer {
	labels := append([]string{"http_request_method", "http_response_status_code", "http_route"}, export.ServiceLabels...)
	return &HTTPServer{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Duration of HTTP server requests, from the handler's start to the end of the response.",
			Buckets: DurationBuckets,
		}, labels),
		active: prometheus.NewDesc("http_server_active_requests",
			"Number of HTTP server requests in flight.",
			append([]string{"http_request_method"}, export.ServiceLabels...), nil),
		overflow: prometheus.NewDesc("obsd_route_overflow_total",
			"Unrouted requests labelled "+OverflowRoute+" because the process exceeded the distinct fallback routes limit.",
			export.ServiceLabels, nil),
		activeFn:  activeFn,
		routes:    newRoutes(),
		observers: map[obsKey]prometheus.Observer{},
	}
}

// Observe records one request. When sc is sampled, its trace ID becomes the
// bucket's exemplar, so a slow bucket leads to a trace.
func (h *HTTPServer) Observe(svc export.Service, r probe.Request, sc trace.SpanContext) {
	sec := time.Duration(r.EndNS - r.StartNS).Seconds()
	k := obsKey{instance: svc.InstanceID, method: export.Method(r.Method), status: r.Status, pattern: r.Pattern}
	if r.Pattern == "" {
		k.route = h.routes.route(svc, r)
	}
	h.mu.Lock()
	o, ok := h.observers[k]
	if !ok {
		route := k.route
		if k.pattern != "" {
			// ServeMux validates patterns; an unparsable one still gets a
			// bounded label.
			if route = export.PatternRoute(k.pattern); route == "" {
				route = OverflowRoute
			}
		}
		o = h.duration.WithLabelValues(k.method, strconv.Itoa(k.status), route, svc.Name, svc.InstanceID, svc.Host)
		h.observers[k] = o
	}
	h.mu.Unlock()
	if sc.IsSampled() {
		o.(prometheus.ExemplarObserver).ObserveWithExemplar(sec, prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()})
		return
	}
	o.Observe(sec)
}

// Forget drops an exited process's series.
func (h *HTTPServer) Forget(svc export.Service) {
	h.mu.Lock()
	for k := range h.observers {
		if k.instance == svc.InstanceID {
			delete(h.observers, k)
		}
	}
	h.duration.DeletePartialMatch(prometheus.Labels{"service_instance_id": svc.InstanceID})
	h.mu.Unlock()
	h.routes.forget(svc.InstanceID)
}

func (h *HTTPServer) Describe(ch chan<- *prometheus.Desc) {
	h.duration.Describe(ch)
	ch <- h.active
	ch <- h.overflow
}

func (h *HTTPServer) Collect(ch chan<- prometheus.Metric) {
	h.duration.Collect(ch)
	h.routes.mu.Lock()
	for _, oc := range h.routes.overflow {
		ch <- prometheus.MustNewConstMetric(h.overflow, prometheus.CounterValue, float64(oc.n), oc.svc.LabelValues()...)
	}
	h.routes.mu.Unlock()
	if h.activeFn == nil {
		return
	}
	act, err := h.activeFn()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(h.active, err)
		return
	}
	// Methods outside the standard set fold into _OTHER, so sum first.
	type key struct{ name, instance, host, method string }
	sums := map[key]int64{}
	for _, a := range act {
		sums[key{a.Service.Name, a.Service.InstanceID, a.Service.Host, export.Method(a.Method)}] += a.N
	}
	for k, n := range sums {
		ch <- prometheus.MustNewConstMetric(h.active, prometheus.GaugeValue, float64(n), k.method, k.name, k.instance, k.host)
	}
}
