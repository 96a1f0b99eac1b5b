package otelexport

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
	"github.com/obsd-dev/obsd/internal/export"
)

// RPCServerSpan makes the SERVER span of c, a gRPC call the probe sampled,
// with method as rpc.method (the value its metrics carry); see Span.
func (e *Exporter) RPCServerSpan(svc export.Service, c server.Call, method string) trace.SpanContext {
	return e.Span(svc, c.Call, trace.SpanKindServer, rpcServerSpanName(method), func() ([]attribute.KeyValue, codes.Code) {
		_, attrs, status := rpcServerSpan(c, method)
		return attrs, status
	})
}

// rpcServerSpan derives name, attributes and status of a gRPC server span
// following the stable RPC semantic conventions (semconv v1.43 names): the
// name is rpc.method, "pkg.Service/Method"; a method the server does not
// serve (or past the process's method bound) is rpc.method "_OTHER" with
// the method as sent in rpc.method_original; rpc.response.status_code is
// the code's name ("NOT_FOUND"); the span is an error, with error.type the
// code's name, only for the codes gRPC's conventions call server errors
// (export.GRPCServerError).
func rpcServerSpan(c server.Call, method string) (string, []attribute.KeyValue, codes.Code) {
	code := export.GRPCCodeName(c.Code)
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs,
		semconv.RPCSystemNameGRPC,
		semconv.RPCMethodKey.String(method),
		semconv.RPCResponseStatusCodeKey.String(code),
	)
	if method == export.OtherMethod {
		attrs = append(attrs, semconv.RPCMethodOriginalKey.String(export.RPCMethod(c.FullMethod, c.MethodTruncated)))
	}
	status := codes.Unset
	if export.GRPCServerError(c.Code) {
		status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(code))
	}
	return rpcServerSpanName(method), attrs, status
}

// rpcServerSpanName is rpc.method, or rpc.system.name for "_OTHER" (an
// unbounded method never names a span).
func rpcServerSpanName(method string) string {
	if method == export.OtherMethod {
		return "grpc"
	}
	return method
}
