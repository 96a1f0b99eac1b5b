package manual

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"
)

// Constant labels that NewRegistry puts on every series, named as obsd
// names them so that the application's series and obsd's join.
const (
	LabelServiceName = "service_name"
	LabelHost        = "host_name"
)

// RegistryOpts configures NewRegistry. The zero value is ready to use.
type RegistryOpts struct {
	// ServiceName is the service_name label. OTEL_SERVICE_NAME overrides
	// it (as in SetupTracing, so metrics and traces agree); empty means the
	// executable's base name.
	ServiceName string
	// Host is the host label. Empty means os.Hostname() (the pod name in
	// Kubernetes).
	Host string
	// Runtime configures the RuntimeCollector registered with the
	// registry; its zero value samples MemStats every 10 s and GCStats
	// every 30 s.
	Runtime RuntimeOpts
	// NoRuntimeCollector leaves the RuntimeCollector out; the Go and
	// process collectors are always registered.
	NoRuntimeCollector bool
}

// Registry is a fresh Prometheus registry (never the global default one)
// whose Register puts constant service_name and host labels on every series.
// It already holds client_golang's Go and process collectors and, unless
// disabled, a RuntimeCollector. It implements prometheus.Registerer and
// prometheus.Gatherer.
type Registry struct {
	reg     *prometheus.Registry
	wrapped prometheus.Registerer
	runtime *RuntimeCollector
	labels  prometheus.Labels
}

// NewRegistry returns a Registry with the Go, process and runtime
// collectors registered. Call Close to stop the runtime sampler.
func NewRegistry(opts RegistryOpts) (*Registry, error) {
	service := serviceName(opts.ServiceName)
	host := opts.Host
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("creating registry: reading hostname: %w", err)
		}
		host = h
	}
	labels := prometheus.Labels{LabelServiceName: service, LabelHost: host}
	r := &Registry{reg: prometheus.NewRegistry(), labels: labels}
	r.wrapped = prometheus.WrapRegistererWith(labels, r.reg)

	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if !opts.NoRuntimeCollector {
		rc, err := NewRuntimeCollector(opts.Runtime)
		if err != nil {
			return nil, fmt.Errorf("creating registry: %w", err)
		}
		r.runtime = rc
		cs = append(cs, rc)
	}
	for _, c := range cs {
		if err := r.wrapped.Register(c); err != nil {
			r.Close()
			return nil, fmt.Errorf("creating registry: registering collector: %w", err)
		}
	}
	return r, nil
}

func executableName() string {
	exe, err := os.Executable()
	if err != nil {
		return "unknown_service"
	}
	return filepath.Base(exe)
}

// Register registers c with the constant labels added.
func (r *Registry) Register(c prometheus.Collector) error { return r.wrapped.Register(c) }

// MustRegister registers cs with the constant labels added and panics on
// error, for start-up code.
func (r *Registry) MustRegister(cs ...prometheus.Collector) { r.wrapped.MustRegister(cs...) }

// Unregister removes c.
func (r *Registry) Unregister(c prometheus.Collector) bool { return r.wrapped.Unregister(c) }

// Gather implements prometheus.Gatherer.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) { return r.reg.Gather() }

// Labels returns a copy of the constant labels.
func (r *Registry) Labels() prometheus.Labels {
	out := make(prometheus.Labels, len(r.labels))
	for k, v := range r.labels {
		out[k] = v
	}
	return out
}

// Runtime returns the registered RuntimeCollector, or nil when disabled.
// Its HeapCheck is a liveness check that reuses the sampled MemStats.
func (r *Registry) Runtime() *RuntimeCollector { return r.runtime }

// Close stops the runtime sampler.
func (r *Registry) Close() error {
	if r.runtime != nil {
		r.runtime.Close()
	}
	return nil
}

// Handler serves the metrics of g: promhttp.HandlerFor with OpenMetrics
// enabled (exemplars exist only in OpenMetrics; Prometheus asks for it when
// exemplar storage is on, other scrapers keep getting the text format) and
// ContinueOnError, so one failing collector costs its series, not the
// scrape. When g is also a prometheus.Registerer (a *Registry is), the
// handler's own promhttp_metric_handler_* series are registered on it.
//
// Pass your registry: promhttp.Handler() serves the global default registry
// and silently misses everything registered on yours.
func Handler(g prometheus.Gatherer) http.Handler {
	opts := promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          slogPrinter{slog.Default()},
		Timeout:           10 * time.Second,
	}
	reg, isReg := g.(prometheus.Registerer)
	if isReg {
		opts.Registry = reg
	}
	h := promhttp.HandlerFor(g, opts)
	if isReg {
		h = promhttp.InstrumentMetricHandler(reg, h)
	}
	return h
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("serving metrics", "error", fmt.Sprint(v...)) }

// HTTPMetricsOpts configures NewHTTPMetrics. The zero value is ready to use.
type HTTPMetricsOpts struct {
	// Buckets of the duration histogram in seconds. Nil means
	// prometheus.DefBuckets (5 ms to 10 s).
	Buckets []float64
	// Route returns the route label of a request after its handler ran.
	// Nil means the pattern that http.ServeMux matched, without its
	// method ("/users/{id}"), or "unmatched". Never return the raw path:
	// every distinct URL would become a series.
	Route func(r *http.Request) string
}

// HTTPMetrics records the RED metrics of an HTTP server:
//
//	http_requests_total{method,status_code}                 counter
//	http_request_duration_seconds{method,route,status_code} histogram
//
// Both carry an exemplar with trace_id and span_id when the request's span
// is sampled.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	route    func(*http.Request) string
}

// NewHTTPMetrics creates the metrics and registers them on reg.
func NewHTTPMetrics(reg prometheus.Registerer, opts HTTPMetricsOpts) (*HTTPMetrics, error) {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests served, by method and status code.",
		}, []string{"method", "status_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time from the request reaching the handler to the handler returning, in seconds.",
			Buckets: opts.Buckets,
		}, []string{"method", "route", "status_code"}),
		route: opts.Route,
	}
	if m.route == nil {
		m.route = patternRoute
	}
	if err := reg.Register(m.requests); err != nil {
		return nil, fmt.Errorf("registering http_requests_total: %w", err)
	}
	if err := reg.Register(m.duration); err != nil {
		reg.Unregister(m.requests)
		return nil, fmt.Errorf("registering http_request_duration_seconds: %w", err)
	}
	return m, nil
}

// patternRoute turns ServeMux's "GET example.com/items/{id}" into
// "example.com/items/{id}": the method is a label of its own.
func patternRoute(r *http.Request) string {
	p := r.Pattern
	if p == "" {
		return "unmatched"
	}
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = strings.TrimLeft(p[i+1:], " \t")
	}
	return p
}

// Middleware records every request that passes through it. Put it inside
// TraceHandler (TraceHandler(m.Middleware(mux), ...)) so the span exists
// when the exemplar is taken, and outside the ServeMux so the matched
// pattern is known.
func (m *HTTPMetrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec, ww := wrapWriter(w)
		defer func() {
			if p := recover(); p != nil {
				// net/http answers a panicking handler by closing the
				// connection; count it as the 500 it is, then let it go on.
				if !rec.wrote {
					rec.status, rec.wrote = http.StatusInternalServerError, true
				}
				m.observe(r, rec.code(), time.Since(start))
				panic(p)
			}
		}()
		next.ServeHTTP(ww, r)
		m.observe(r, rec.code(), time.Since(start))
	})
}

func (m *HTTPMetrics) observe(r *http.Request, code int, d time.Duration) {
	method := normalMethod(r.Method)
	status := strconv.Itoa(code)
	cnt := m.requests.WithLabelValues(method, status)
	obs := m.duration.WithLabelValues(method, m.route(r), status)
	if sc := trace.SpanContextFromContext(r.Context()); sc.IsSampled() {
		ex := prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}
		cnt.(prometheus.ExemplarAdder).AddWithExemplar(1, ex)
		obs.(prometheus.ExemplarObserver).ObserveWithExemplar(d.Seconds(), ex)
		return
	}
	cnt.Inc()
	obs.Observe(d.Seconds())
}

// normalMethod bounds the method label: a client can send any token as a
// method, and each would otherwise become a series.
func normalMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	default:
		return "OTHER"
	}
}
