package otelexport

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	"github.com/obsd-dev/obsd/internal/export"
)

// notStatusErrorKey marks a call that ended with an error that was no gRPC
// status error: rpc.response.status_code is then UNKNOWN, as grpc-go's
// status.Code says of such an error.
const notStatusErrorKey = attribute.Key("obsd.rpc.not_status_error")

// RPCClientSpan makes the CLIENT span of c, a call attempt the probe
// sampled, with l as its attributes (the values its metrics carry); see
// Span.
func (e *Exporter) RPCClientSpan(svc export.Service, c client.Call, l export.RPCLabels) trace.SpanContext {
	return e.Span(svc, c.Common(), trace.SpanKindClient, rpcSpanName(l), func() ([]attribute.KeyValue, codes.Code) {
		_, attrs, status := rpcClientSpan(c, l)
		return attrs, status
	})
}

// rpcClientSpan derives name, attributes and status of a gRPC client span
// following the RPC semantic conventions (v1.40 and later, rpc.system.name
// and rpc.response.status_code): the name is rpc.method, or "grpc" when the
// method is OtherMethod; every status but OK is an error on the client,
// with error.type the status code's name. Strings are valid UTF-8 and cut
// ones end in export.CutMark.
func rpcClientSpan(c client.Call, l export.RPCLabels) (string, []attribute.KeyValue, codes.Code) {
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = append(attrs, semconv.RPCSystemNameGRPC, semconv.RPCMethod(l.Method))
	if l.Method == export.OtherMethod {
		attrs = append(attrs, semconv.RPCMethodOriginal(export.Clean(c.Method, export.MaxValueLen, c.MethodTruncated)))
	}
	attrs = append(attrs, semconv.RPCResponseStatusCode(l.Code))
	if l.Address != "" {
		attrs = append(attrs, semconv.ServerAddress(l.Address))
	}
	if port, err := strconv.Atoi(l.Port); err == nil {
		attrs = append(attrs, semconv.ServerPort(port))
	}
	status := codes.Unset
	if c.Code != 0 {
		status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(l.Code))
	}
	if c.OtherError {
		attrs = append(attrs, notStatusErrorKey.Bool(true))
	}
	if c.MethodTruncated || c.AuthorityTruncated {
		attrs = append(attrs, truncatedKey.Bool(true))
	}
	return rpcSpanName(l), attrs, status
}

// rpcSpanName is the span name alone, all an unsampled span needs.
func rpcSpanName(l export.RPCLabels) string {
	if l.Method == export.OtherMethod {
		return "grpc"
	}
	return l.Method
}
