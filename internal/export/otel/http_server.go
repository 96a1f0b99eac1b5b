package otelexport

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// truncatedKey marks spans whose url.path (or route) was cut short by the
// probe's record size, so a shortened path is never mistaken for the real one.
const truncatedKey = attribute.Key("obsd.request.truncated")

// httpServerSpan derives name, attributes and status of an HTTP server span
// following the semantic conventions (v1.26 and later): the name is
// "{method} {http.route}", or the method alone without a matched route
// (never the raw path, which would make names unbounded); http.route is set
// only when a ServeMux pattern matched; a server span is an error only
// for 5xx, a 4xx is the client's fault.
func httpServerSpan(r probe.Request) (string, []attribute.KeyValue, codes.Code) {
	method := export.Method(r.Method)
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	if method == export.OtherMethod {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	scheme := "http"
	if r.TLS {
		scheme = "https"
	}
	attrs = append(attrs,
		semconv.URLScheme(scheme),
		semconv.URLPath(r.Path),
		semconv.HTTPResponseStatusCode(r.Status),
	)
	if route := export.PatternRoute(r.Pattern); route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	status := codes.Unset
	if r.Status >= 500 {
		status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(r.Status)))
	}
	if r.Truncated {
		attrs = append(attrs, truncatedKey.Bool(true))
	}
	return httpServerSpanName(r), attrs, status
}

// httpServerSpanName is the span name alone: it is all an unsampled span
// needs, so the reader does not build attributes that would be dropped.
func httpServerSpanName(r probe.Request) string {
	method := export.Method(r.Method)
	if method == export.OtherMethod {
		method = "HTTP"
	}
	if route := export.PatternRoute(r.Pattern); route != "" {
		return method + " " + route
	}
	return method
}
