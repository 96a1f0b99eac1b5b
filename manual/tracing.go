package manual

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// DefaultSampleRatio is the share of new traces sampled when neither
// TracingOpts nor OTEL_TRACES_SAMPLER choose otherwise: 1 %, enough to see
// every hot path in a busy service at a cost that stays flat under load.
const DefaultSampleRatio = 0.01

// The rule that keeps obsd from making a second span for a request that
// the application already traces; see "Working with obsd" in README.md.
const (
	// MarkerAttribute is the resource attribute (value true) that
	// SetupTracing puts on every span, telling a collector that the spans
	// come from manual instrumentation.
	MarkerAttribute = "obsd.manual"
	// MarkerEnv is the environment variable obsd reads from a process's
	// initial environment: "1" means the process traces itself (obsd emits
	// metrics only), "0" means it does not, overriding the build-info rule.
	MarkerEnv = "OTEL_GO_MANUAL"
	// SDKModule is the module whose presence in a binary's build info makes
	// obsd treat the process as self-tracing when MarkerEnv is unset.
	SDKModule = "go.opentelemetry.io/otel/sdk"
)

// TracingOpts configures SetupTracing. The zero value is ready to use.
type TracingOpts struct {
	// ServiceName is the service.name resource attribute when the
	// environment names none; see ServiceName for the one rule that
	// metrics and traces share.
	ServiceName string
	// SampleRatio is the ratio of ParentBased(TraceIDRatioBased(ratio)),
	// used when OTEL_TRACES_SAMPLER is unset. Nil means DefaultSampleRatio
	// (0.01); new(0.0) samples no new trace (children of sampled callers
	// still are). Outside [0, 1] is an error.
	SampleRatio *float64
	// Sampler, when set, is used as given, ignoring OTEL_TRACES_SAMPLER and
	// SampleRatio.
	Sampler sdktrace.Sampler
	// Exporter, when set, replaces the exporter that OTEL_TRACES_EXPORTER
	// and OTEL_EXPORTER_OTLP_* describe.
	Exporter sdktrace.SpanExporter
	// Attributes are added to the resource; OTEL_RESOURCE_ATTRIBUTES
	// overrides them key by key.
	Attributes []attribute.KeyValue
}

// SetupTracing installs an OpenTelemetry TracerProvider and propagator as
// the global ones and returns the provider's shutdown, which flushes
// buffered spans: call it on exit, after the server has stopped.
//
// It honours the SDK's environment variables, through the contrib
// autoexport and autoprop packages where they apply:
//   - OTEL_SDK_DISABLED=true: no provider (spans are not recorded), but
//     the propagator is installed, so a trace passing through the service
//     stays one trace.
//   - OTEL_TRACES_EXPORTER: otlp (default), console or none.
//   - OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL:
//     http/protobuf (the specification's default; https://localhost:4318)
//     or grpc (https://localhost:4317). Both default to TLS: for a
//     plaintext collector give an http:// endpoint or
//     OTEL_EXPORTER_OTLP_INSECURE=true.
//   - OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, ... as the otlptrace
//     exporters read them.
//   - OTEL_PROPAGATORS: tracecontext, baggage, b3, b3multi, jaeger, xray,
//     ottrace, none; default tracecontext,baggage.
//   - OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG: see SamplerFromEnv.
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES: see ServiceName.
//
// The resource carries service.name, host.name, the process, Kubernetes
// attributes from the downward API variables (K8S_POD_NAME or POD_NAME,
// K8S_NAMESPACE_NAME or POD_NAMESPACE, K8S_NODE_NAME or NODE_NAME,
// K8S_POD_UID or POD_UID), OTEL_RESOURCE_ATTRIBUTES and MarkerAttribute.
//
// A value it cannot honour (an unknown exporter, protocol, propagator or
// sampler, a ratio outside [0, 1]) is an error naming the variable, never
// a silent fallback.
func SetupTracing(ctx context.Context, opts TracingOpts) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	for _, k := range []string{"OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"} {
		// Not this function's signals: metrics go to /metrics, logs to
		// slog. Say so once rather than let the operator think they work.
		if v := os.Getenv(k); v != "" && v != "none" {
			slog.Warn("ignored: this service exports metrics through Prometheus /metrics and tracing only through OpenTelemetry", "variable", k, "value", v)
		}
	}
	prop, err := propagatorFromEnv(os.Getenv("OTEL_PROPAGATORS"))
	if err != nil {
		return nil, fmt.Errorf("setting up tracing: %w", err)
	}
	if v := os.Getenv("OTEL_SDK_DISABLED"); v != "" {
		disabled, perr := strconv.ParseBool(v)
		if perr != nil {
			return nil, fmt.Errorf("setting up tracing: parsing OTEL_SDK_DISABLED=%q: %w", v, perr)
		}
		if disabled {
			otel.SetTextMapPropagator(prop)
			return noop, nil
		}
	}
	sampler := opts.Sampler
	if sampler == nil {
		ratio := DefaultSampleRatio
		if opts.SampleRatio != nil {
			ratio = *opts.SampleRatio
		}
		if ratio < 0 || ratio > 1 || math.IsNaN(ratio) {
			return nil, fmt.Errorf("setting up tracing: sample ratio %v outside [0, 1]", ratio)
		}
		sampler, err = SamplerFromEnv(os.Getenv("OTEL_TRACES_SAMPLER"), os.Getenv("OTEL_TRACES_SAMPLER_ARG"), ratio)
		if err != nil {
			return nil, fmt.Errorf("setting up tracing: %w", err)
		}
	}

	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("setting up tracing: %w", err)
	}

	exp := opts.Exporter
	if exp == nil {
		exp, err = autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("setting up tracing: creating the exporter of OTEL_TRACES_EXPORTER=%q, OTEL_EXPORTER_OTLP_PROTOCOL=%q: %w",
				os.Getenv("OTEL_TRACES_EXPORTER"), firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), err)
		}
	}

	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp),
	)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		// Export failures land here; without a handler they go to a
		// logger that nobody configured.
		slog.Warn("opentelemetry", "error", err)
	}))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	return func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("shutting down tracer provider: %w", err)
		}
		return nil
	}, nil
}

// propagatorFromEnv is autoprop's reading of OTEL_PROPAGATORS, except that
// an unknown name is an error rather than a logged fallback.
func propagatorFromEnv(v string) (propagation.TextMapPropagator, error) {
	if strings.TrimSpace(v) == "" {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}), nil
	}
	var names []string
	for _, n := range strings.Split(v, ",") {
		names = append(names, strings.TrimSpace(n))
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, fmt.Errorf("parsing OTEL_PROPAGATORS=%q: %w", v, err)
	}
	return p, nil
}

func firstEnv(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}

// SamplerFromEnv returns the sampler that OTEL_TRACES_SAMPLER=name and
// OTEL_TRACES_SAMPLER_ARG=arg describe. An empty name means
// ParentBased(TraceIDRatioBased(defaultRatio)). As the specification says,
// a ratio sampler without arg samples everything. Remote samplers and
// unknown names are errors.
func SamplerFromEnv(name, arg string, defaultRatio float64) (sdktrace.Sampler, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	ratio := func() (float64, error) {
		if strings.TrimSpace(arg) == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
		if err != nil {
			return 0, fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG=%q: %w", arg, err)
		}
		if r < 0 || r > 1 {
			return 0, fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG=%q: ratio outside [0, 1]", arg)
		}
		return r, nil
	}
	switch name {
	case "":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(defaultRatio)), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, fmt.Errorf("parsing OTEL_TRACES_SAMPLER=%q: unsupported sampler", name)
	}
}

func newResource(ctx context.Context, opts TracingOpts) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		attribute.String("service.name", serviceName(opts.ServiceName)),
		attribute.Bool(MarkerAttribute, true),
	}
	for _, k := range []struct{ key, env1, env2 string }{
		{"k8s.pod.name", "K8S_POD_NAME", "POD_NAME"},
		{"k8s.namespace.name", "K8S_NAMESPACE_NAME", "POD_NAMESPACE"},
		{"k8s.node.name", "K8S_NODE_NAME", "NODE_NAME"},
		{"k8s.pod.uid", "K8S_POD_UID", "POD_UID"},
	} {
		v := os.Getenv(k.env1)
		if v == "" {
			v = os.Getenv(k.env2)
		}
		if v != "" {
			attrs = append(attrs, attribute.String(k.key, v))
		}
	}
	attrs = append(attrs, opts.Attributes...)
	// Later options override earlier ones: the environment wins over code.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithProcessExecutableName(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("building resource: %w", err)
	}
	return res, nil
}

// ServiceName is the one rule for the service name of metrics (the
// service_name label) and traces (service.name): OTEL_SERVICE_NAME, else
// service.name in OTEL_RESOURCE_ATTRIBUTES, else code, else the
// executable's base name. It is the specification's order, so a name an
// operator sets anywhere reaches both signals.
func ServiceName(code string) string {
	if v := os.Getenv("OTEL_SERVICE_NAME"); v != "" {
		return v
	}
	if v := resourceAttrFromEnv("service.name"); v != "" {
		return v
	}
	if code != "" {
		return code
	}
	return executableName()
}

// resourceAttrFromEnv returns key from OTEL_RESOURCE_ATTRIBUTES, parsed by
// the SDK (percent-decoding included), or "".
func resourceAttrFromEnv(key string) string {
	res, err := resource.New(context.Background(), resource.WithFromEnv())
	if err != nil && res == nil {
		return ""
	}
	v, _ := res.Set().Value(attribute.Key(key))
	return v.AsString()
}

func serviceName(code string) string { return ServiceName(code) }

// TraceHandler wraps an HTTP server handler with otelhttp: it continues the
// caller's trace from the traceparent header or starts one, subject to the
// sampler. When the handler returns, the span gets the route that
// HTTPMetrics recorded for the request (or, without HTTPMetrics inside,
// the same rule: the matched ServeMux pattern's path, else a bounded
// fallback), as http.route and in its name, "GET /items/{id}": routing
// happens inside, so the route is known only then. operation names the
// span until then.
//
// Requests to the probe and metrics paths (GET /healthz, /readyz, their
// sub-paths, /metrics) are not traced: the kubelet and Prometheus would
// otherwise start traces of their own. opts are otelhttp's options
// (otelhttp.WithFilter, WithSpanNameFormatter, WithPublicEndpointFn,
// WithTracerProvider, ...), applied after these defaults; filters add to
// the default one.
func TraceHandler(h http.Handler, operation string, opts ...otelhttp.Option) http.Handler {
	routes := newRouteSet()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		span := trace.SpanFromContext(r.Context())
		route := ""
		if holder := routeHolderFrom(r.Context()); holder != nil {
			if holder.route == "" {
				holder.route = routes.route(r)
			}
			route = holder.route
		}
		span.SetAttributes(attribute.String("http.route", route))
		span.SetName(spanName(r.Method, route))
	})
	all := []otelhttp.Option{
		otelhttp.WithFilter(notProbe),
		otelhttp.WithSpanNameFormatter(func(op string, r *http.Request) string {
			if holder := routeHolderFrom(r.Context()); holder != nil && holder.route != "" {
				return spanName(r.Method, holder.route)
			}
			return op
		}),
	}
	traced := otelhttp.NewHandler(inner, operation, append(all, opts...)...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, _ := withRouteHolder(r.Context())
		traced.ServeHTTP(w, r.WithContext(ctx))
	})
}

// spanName is the semantic conventions' "{method} {route}"; a method
// outside the standard set is "HTTP".
func spanName(method, route string) string {
	m := semconvMethod(method)
	if m == OtherMethod {
		m = "HTTP"
	}
	return m + " " + route
}

// notProbe is TraceHandler's default filter: false (do not trace) for the
// GET requests of probes and scrapes.
func notProbe(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return true
	}
	p := r.URL.Path
	switch {
	case p == "/metrics", p == "/healthz", p == "/readyz",
		strings.HasPrefix(p, "/healthz/"), strings.HasPrefix(p, "/readyz/"):
		return false
	}
	return true
}

// TraceTransport wraps an HTTP client transport with otelhttp, so outgoing
// requests get a client span and a traceparent header. Nil base means
// http.DefaultTransport; opts are otelhttp's options. Requests must carry
// the incoming request's context (req.WithContext(r.Context()) or
// http.NewRequestWithContext), never context.Background(), or the trace
// breaks here.
func TraceTransport(base http.RoundTripper, opts ...otelhttp.Option) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base, opts...)
}

// HasTrace reports whether ctx carries a valid trace context, local or
// remote, sampled or not. A handler that finds none has lost its context
// (a context.Background() somewhere upstream).
func HasTrace(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid()
}

// TraceID returns the hex trace ID that ctx carries, or "" when none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
