package main

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// spanReceiver is an OTLP/gRPC trace receiver on loopback that counts the
// spans it is sent and keeps none of them: at 100% sampling obsd sends
// tens of thousands a second, and only their number matters here.
type spanReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	endpoint string // http://127.0.0.1:PORT, for OTEL_EXPORTER_OTLP_ENDPOINT
	spans    atomic.Int64
	srv      *grpc.Server
}

func startReceiver() (*spanReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for OTLP/gRPC spans: %w", err)
	}
	r := &spanReceiver{endpoint: "http://" + ln.Addr().String(), srv: grpc.NewServer()}
	collectortrace.RegisterTraceServiceServer(r.srv, r)
	go r.srv.Serve(ln)
	return r, nil
}

// Export implements collectortrace.TraceServiceServer.
func (r *spanReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	var n int64
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += int64(len(ss.GetSpans()))
		}
	}
	r.spans.Add(n)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// received is the number of spans received since the start.
func (r *spanReceiver) received() int64 { return r.spans.Load() }

func (r *spanReceiver) close() {
	if r != nil {
		r.srv.Stop()
	}
}
