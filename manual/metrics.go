package manual

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
		withoutFamily{collectors.NewGoCollector(), "go_memstats_alloc_bytes"},
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

// withoutFamily drops one family of a collector. The Go collector exports
// the gauge go_memstats_alloc_bytes beside the counter
// go_memstats_alloc_bytes_total; in OpenMetrics the counter's family is
// named go_memstats_alloc_bytes too, a clash that strict parsers reject.
// The gauge is MemStats.Alloc, which equals HeapAlloc, exported as
// go_memstats_heap_alloc_bytes: dropping it loses nothing.
type withoutFamily struct {
	prometheus.Collector
	name string
}

func (w withoutFamily) drop(d *prometheus.Desc) bool {
	return strings.Contains(d.String(), `fqName: "`+w.name+`"`)
}

func (w withoutFamily) Describe(ch chan<- *prometheus.Desc) {
	in := make(chan *prometheus.Desc)
	go func() { w.Collector.Describe(in); close(in) }()
	for d := range in {
		if !w.drop(d) {
			ch <- d
		}
	}
}

func (w withoutFamily) Collect(ch chan<- prometheus.Metric) {
	in := make(chan prometheus.Metric)
	go func() { w.Collector.Collect(in); close(in) }()
	for m := range in {
		if !w.drop(m.Desc()) {
			ch <- m
		}
	}
}

func executableName() string {
	exe, err := os.Executable()
	if err != nil {
		return "unknown_service"
	}
	return filepath.Base(exe)
}

// Register registers c with the constant labels added. Errors are
// client_golang's: prometheus.AlreadyRegisteredError for a collector (or
// an equal one) already there, an error for inconsistent descriptors.
func (r *Registry) Register(c prometheus.Collector) error { return r.wrapped.Register(c) }

// MustRegister registers cs with the constant labels added and panics on
// error, for start-up code.
func (r *Registry) MustRegister(cs ...prometheus.Collector) { r.wrapped.MustRegister(cs...) }

// Unregister removes c and reports whether it was registered.
func (r *Registry) Unregister(c prometheus.Collector) bool { return r.wrapped.Unregister(c) }

// Gather implements prometheus.Gatherer: every family, sorted, each series
// with the constant labels. Its error gathers the collectors' errors; the
// families it could gather are returned with it.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) { return r.reg.Gather() }

// Labels returns a copy of the constant labels (service_name, host_name).
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

// Close stops the runtime sampler and waits for it. It always returns nil;
// the registry keeps serving the last samples.
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

// DurationBuckets are the bucket bounds, in seconds, of
// http_server_request_duration_seconds and
// http_client_request_duration_seconds: the OpenTelemetry semantic
// conventions' advice, the buckets obsd uses, so that one dashboard
// serves both.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// sizeBuckets are the bounds, in bytes, of the body size histograms:
// powers of 4 from 64 B to 16 MiB.
var sizeBuckets = prometheus.ExponentialBuckets(64, 4, 10)

// StatusClientClosed is the status recorded for a request whose client went
// away before the handler wrote a status (nginx's 499): net/http would have
// sent an implicit 200 to nobody.
const StatusClientClosed = 499

// HTTPMetricsOpts configures NewHTTPMetrics. The zero value is ready to use.
type HTTPMetricsOpts struct {
	// Buckets of the duration histogram in seconds. Nil means
	// DurationBuckets (obsd's, from the semantic conventions).
	Buckets []float64
	// Route returns the http_route label of a request after its handler
	// ran. Nil means obsd's rule: the path of the pattern that
	// http.ServeMux matched ("/users/{id}"), else obsd's learned fallback
	// ("/api/users/{param}", see Param and LearnAfter), at most MaxRoutes
	// routes in all, then OverflowRoute. Never return the raw
	// path: every distinct URL would become a series. TraceHandler puts
	// the same route on the request's span.
	Route func(r *http.Request) string
	// ExtraLabels are label names added to every series of HTTPMetrics,
	// filled by LabelValues. They must not clash with the built-in names.
	ExtraLabels []string
	// LabelValues returns the values of ExtraLabels for a request, in
	// order, after its handler ran (so it may read values the handler put
	// in the request's context). It is required when ExtraLabels is set;
	// a result of the wrong length is an observation with empty values,
	// logged once. Keep the values few: each becomes series.
	LabelValues func(r *http.Request) []string
}

// HTTPMetrics records the RED metrics of an HTTP server:
//
//	http_requests_total{method,status_code}                    counter
//	http_server_request_duration_seconds{http_request_method,http_route,http_response_status_code}
//	                                                           histogram, seconds
//	http_server_request_body_size_bytes{...same labels}        histogram, bytes read by the handler
//	http_server_response_body_size_bytes{...same labels}       histogram, bytes written
//	http_server_active_requests{http_request_method}           gauge, requests in flight
//
// The duration histogram is obsd's family with obsd's labels, buckets,
// route and method rules, so that a service obsd also instruments can be
// read on one dashboard. http_requests_total keeps its labels (methods
// outside the standard nine count as "OTHER" there, "_OTHER" elsewhere).
// The counter and the duration carry an exemplar with trace_id and span_id
// when the request's span is sampled.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reqSize  *prometheus.HistogramVec
	respSize *prometheus.HistogramVec
	active   *prometheus.GaugeVec
	route    func(*http.Request) string
	extra    int
	values   func(*http.Request) []string
	badExtra sync.Once
}

// NewHTTPMetrics creates the metrics and registers them on reg. It fails
// when a name is already registered on reg or when ExtraLabels is set
// without LabelValues.
func NewHTTPMetrics(reg prometheus.Registerer, opts HTTPMetricsOpts) (*HTTPMetrics, error) {
	if len(opts.ExtraLabels) > 0 && opts.LabelValues == nil {
		return nil, errors.New("creating http metrics: ExtraLabels without LabelValues")
	}
	buckets := opts.Buckets
	if buckets == nil {
		buckets = DurationBuckets
	}
	labels := append([]string{"http_request_method", "http_route", "http_response_status_code"}, opts.ExtraLabels...)
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests served, by method and status code.",
		}, append([]string{"method", "status_code"}, opts.ExtraLabels...)),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Duration of HTTP server requests, from the handler's start to its return, in seconds.",
			Buckets: buckets,
		}, labels),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_body_size_bytes",
			Help:    "Size of HTTP request bodies, as read by the handler, in bytes.",
			Buckets: sizeBuckets,
		}, labels),
		respSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_response_body_size_bytes",
			Help:    "Size of HTTP response bodies, as written by the handler, in bytes.",
			Buckets: sizeBuckets,
		}, labels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "http_server_active_requests",
			Help: "Number of HTTP server requests in flight.",
		}, []string{"http_request_method"}),
		route:  opts.Route,
		extra:  len(opts.ExtraLabels),
		values: opts.LabelValues,
	}
	if m.route == nil {
		m.route = newRouteSet().route
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqSize, m.respSize, m.active} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("registering http metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// Requests returns http_requests_total, labelled method, status_code and
// ExtraLabels: for testutil or to initialise series to zero.
func (m *HTTPMetrics) Requests() *prometheus.CounterVec { return m.requests }

// Duration returns http_server_request_duration_seconds, labelled
// http_request_method, http_route, http_response_status_code and
// ExtraLabels.
func (m *HTTPMetrics) Duration() *prometheus.HistogramVec { return m.duration }

// Middleware records every request that passes through it. Put it inside
// TraceHandler (TraceHandler(m.Middleware(mux), ...)) so the span exists
// when the exemplar is taken, and outside the ServeMux so the matched
// pattern is known. A request whose client went away before the handler
// wrote a status is recorded as StatusClientClosed (499); a panicking
// handler as 500.
func (m *HTTPMetrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		active := m.active.WithLabelValues(semconvMethod(r.Method))
		active.Inc()
		defer active.Dec()
		rec, ww := wrapWriter(w)
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		defer func() {
			if p := recover(); p != nil {
				// net/http answers a panicking handler by closing the
				// connection; count it as the 500 it is, then let it go on.
				if !rec.wrote {
					rec.status, rec.wrote = http.StatusInternalServerError, true
				}
				m.observe(r, rec, body, time.Since(start))
				panic(p)
			}
		}()
		next.ServeHTTP(ww, r)
		m.observe(r, rec, body, time.Since(start))
	})
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func (m *HTTPMetrics) observe(r *http.Request, rec *statusWriter, body *countingBody, d time.Duration) {
	code := rec.code()
	if !rec.wrote && r.Context().Err() != nil {
		code = StatusClientClosed
	}
	status := strconv.Itoa(code)
	route := m.route(r)
	if h := routeHolderFrom(r.Context()); h != nil {
		h.route = route
	}
	var extra []string
	if m.extra > 0 {
		extra = m.values(r)
		if len(extra) != m.extra {
			m.badExtra.Do(func() {
				slog.Error("http metrics: LabelValues returned the wrong number of values; using empty ones", "got", len(extra), "want", m.extra)
			})
			extra = make([]string, m.extra)
		}
	}
	labels := append([]string{semconvMethod(r.Method), route, status}, extra...)
	cnt := m.requests.WithLabelValues(append([]string{normalMethod(r.Method), status}, extra...)...)
	obs := m.duration.WithLabelValues(labels...)
	var in int64
	if body != nil {
		in = body.n
	}
	m.reqSize.WithLabelValues(labels...).Observe(float64(in))
	m.respSize.WithLabelValues(labels...).Observe(float64(rec.written))
	if sc := trace.SpanContextFromContext(r.Context()); sc.IsSampled() {
		ex := prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}
		cnt.(prometheus.ExemplarAdder).AddWithExemplar(1, ex)
		obs.(prometheus.ExemplarObserver).ObserveWithExemplar(d.Seconds(), ex)
		return
	}
	cnt.Inc()
	obs.Observe(d.Seconds())
}

// normalMethod bounds the method label of http_requests_total: a client can
// send any token as a method, and each would otherwise become a series.
func normalMethod(m string) string {
	if v := semconvMethod(m); v != OtherMethod {
		return v
	}
	return "OTHER"
}
