package otelexport

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// truncatedKey marks spans whose url.path (or route) was cut short by the
// probe's record size, so a shortened path is never mistaken for the real one.
const truncatedKey = attribute.Key("obsd.request.truncated")

// routeSourceKey says where http.route came from: export.SourcePattern,
// SourceFallback or SourceOverflow.
const routeSourceKey = attribute.Key("obsd.route.source")

// HTTPServerSpan makes the SERVER span of r, a request the probe sampled,
// with route as http.route (the value its metrics carry); see Span.
func (e *Exporter) HTTPServerSpan(svc export.Service, r probe.Request, route export.Route) trace.SpanContext {
	return e.Span(svc, r.Common(), trace.SpanKindServer, httpServerSpanName(r, route), func() ([]attribute.KeyValue, codes.Code) {
		_, attrs, status := httpServerSpan(r, route)
		return attrs, status
	})
}

// httpServerSpan derives name, attributes and status of an HTTP server span
// following the semantic conventions (v1.26 and later): the name is
// "{method} {http.route}"; http.route is the request's route, the same
// value as the metrics' http_route label (a pattern, the learned fallback
// or the overflow value, obsd.route.source says which); a server span is an
// error only for 5xx, a 4xx is the client's fault. Every string is valid
// UTF-8 and every cut one ends in export.CutMark: the OTLP exporter would
// otherwise reject the whole batch.
func httpServerSpan(r probe.Request, route export.Route) (string, []attribute.KeyValue, codes.Code) {
	method := export.Method(r.Method)
	attrs := make([]attribute.KeyValue, 0, 10)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	if method == export.OtherMethod {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(export.Clean(r.Method, export.MaxValueLen, r.MethodTruncated)))
	}
	scheme := "http"
	if r.TLS {
		scheme = "https"
	}
	attrs = append(attrs,
		semconv.URLScheme(scheme),
		semconv.URLPath(export.Clean(r.Path, export.MaxValueLen, r.PathTruncated)),
		semconv.HTTPResponseStatusCode(r.Status),
	)
	if r.Protocol != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(r.Protocol))
	}
	if route.Value != "" {
		attrs = append(attrs, semconv.HTTPRoute(route.Value), routeSourceKey.String(route.Source))
	}
	status := codes.Unset
	if r.Status >= 500 {
		status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(r.Status)))
	}
	if r.Truncated {
		attrs = append(attrs, truncatedKey.Bool(true))
	}
	return httpServerSpanName(r, route), attrs, status
}

// httpServerSpanName is the span name alone: it is all an unsampled span
// needs, so the reader does not build attributes that would be dropped.
func httpServerSpanName(r probe.Request, route export.Route) string {
	method := export.Method(r.Method)
	if method == export.OtherMethod {
		method = "HTTP"
	}
	if route.Value != "" {
		return method + " " + route.Value
	}
	return method
}
