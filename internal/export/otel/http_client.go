package otelexport

import (
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/internal/export"
)

// redacted replaces every query value in url.full.
const redacted = "REDACTED"

// HTTPClientSpan makes the CLIENT span of r, a round trip the probe
// sampled, with the labels its metric carries (l); see Span.
func (e *Exporter) HTTPClientSpan(svc export.Service, r client.Request, l export.HTTPClientLabels) trace.SpanContext {
	return e.Span(svc, r.Common(), trace.SpanKindClient, httpClientSpanName(r), func() ([]attribute.KeyValue, codes.Code) {
		return httpClientSpan(r, l)
	})
}

// httpClientSpanName is "{method}", as semconv names client spans without
// a url.template; "HTTP" for a method outside the standard set.
func httpClientSpanName(r client.Request) string {
	if m := export.Method(r.Method); m != export.OtherMethod {
		return m
	}
	return "HTTP"
}

// httpClientSpan derives the attributes and status of an HTTP client span
// (semantic conventions v1.23 and later): the same method, status,
// server.address/port, network.protocol.version and error.type as the
// metric, plus url.full without userinfo (the probe never reads it) and
// with every query value replaced by REDACTED. A span is an error when no
// response came or the status is 4xx or 5xx.
func httpClientSpan(r client.Request, l export.HTTPClientLabels) ([]attribute.KeyValue, codes.Code) {
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(l.Method))
	if l.Method == export.OtherMethod {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(export.Clean(r.Method, export.MaxValueLen, r.MethodTruncated)))
	}
	attrs = append(attrs, semconv.ServerAddress(l.Address))
	if p, err := strconv.Atoi(l.Port); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	attrs = append(attrs, semconv.URLFull(export.Clean(URLFull(r), 2*export.MaxValueLen, r.HostTruncated || r.PathTruncated || r.QueryTruncated)))
	status := codes.Unset
	if r.Status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(r.Status), semconv.NetworkProtocolVersion(l.Protocol))
		if r.Status >= 400 {
			status = codes.Error
		}
	} else {
		attrs = append(attrs, semconv.ErrorTypeKey.String(l.ErrorType))
		status = codes.Error
	}
	return attrs, status
}

// URLFull rebuilds the request URL from what the probe copied: scheme,
// host, path and the query with each value replaced by REDACTED (a
// parameter cut by the record's size is dropped). There is no userinfo.
func URLFull(r client.Request) string {
	var b strings.Builder
	b.WriteString(r.Scheme)
	b.WriteString("://")
	b.WriteString(r.Host)
	b.WriteString(r.Path)
	if r.RawQuery == "" {
		return b.String()
	}
	params := strings.Split(r.RawQuery, "&")
	if r.QueryTruncated {
		params = params[:len(params)-1]
	}
	for i, p := range params {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		k, _, hasValue := strings.Cut(p, "=")
		b.WriteString(k)
		if hasValue {
			b.WriteString("=" + redacted)
		}
	}
	return b.String()
}
