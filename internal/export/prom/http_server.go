// Package prom exports observed requests as Prometheus metrics named after
// the OpenTelemetry semantic conventions.
package prom

import (
	"strconv"
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
		activeFn: activeFn,
		routes:   newRoutes(),
	}
}

// Observe records one request. When sc is sampled, its trace ID becomes the
// bucket's exemplar, so a slow bucket leads to a trace.
func (h *HTTPServer) Observe(svc export.Service, r probe.Request, sc trace.SpanContext) {
	sec := time.Duration(r.EndNS - r.StartNS).Seconds()
	o := h.duration.WithLabelValues(
		export.Method(r.Method), strconv.Itoa(r.Status), h.routes.route(svc, r),
		svc.Name, svc.InstanceID, svc.Host)
	if sc.IsSampled() {
		o.(prometheus.ExemplarObserver).ObserveWithExemplar(sec, prometheus.Labels{
			"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()})
		return
	}
	o.Observe(sec)
}

// Forget drops an exited process's series.
func (h *HTTPServer) Forget(svc export.Service) {
	h.duration.DeletePartialMatch(prometheus.Labels{"service_instance_id": svc.InstanceID})
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
	for _, a := range act {
		ch <- prometheus.MustNewConstMetric(h.active, prometheus.GaugeValue, float64(a.N),
			append([]string{a.Method}, a.Service.LabelValues()...)...)
	}
}
