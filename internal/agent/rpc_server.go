package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
)

// rpcServer is the signal of probe.KindRPCServer: one
// rpc_server_call_duration_seconds observation and one SERVER span per gRPC
// call, both with the same rpc.method.
type rpcServer struct {
	methods *export.Bounded
	prom    *prom.RPCServer
	spans   *otelexport.Exporter
}

func newRPCServer(a *Agent) *rpcServer {
	methods := export.NewBounded("rpc_method", export.MaxRPCMethods, export.OtherMethod, a.log)
	r := &rpcServer{methods: methods, prom: prom.NewRPCServer(methods), spans: a.spans}
	kernel := a.kernelOf(probe.KindRPCServer)
	r.prom.SetKernel(func() ([]prom.RPCKernel, error) {
		ks, err := kernel()
		out := make([]prom.RPCKernel, 0, len(ks))
		for _, k := range ks {
			c, ok := k.Series.(server.Call)
			if !ok {
				continue
			}
			out = append(out, prom.RPCKernel{Service: k.Service, Method: r.method(k.Service, c, k.New), Code: export.GRPCCodeName(c.Code),
				Buckets: k.Buckets, SumNS: k.SumNS})
		}
		return out, err
	})
	return r
}

func (r *rpcServer) observe(svc export.Service, spans bool, ev probe.Event) {
	c, ok := ev.(server.Call)
	if !ok {
		return
	}
	method := r.method(svc, c, 1)
	var sc trace.SpanContext
	if spans {
		sc = r.spans.RPCServerSpan(svc, c, method)
	}
	r.prom.ObserveRPC(svc, "grpc", method, export.GRPCCodeName(c.Code), time.Duration(c.EndNS-c.StartNS), sc)
}

// method is c's rpc.method. Semconv: a method the server does not serve is
// _OTHER, so that clients cannot make up series; the rest is bounded per
// process. c stands for n calls (an overflow counts n: see prom.Kernel.New).
func (r *rpcServer) method(svc export.Service, c server.Call, n uint64) string {
	if c.Rejected {
		return export.OtherMethod
	}
	m, _ := r.methods.Set(svc).AdmitN(export.RPCMethod(c.FullMethod, c.MethodTruncated), n)
	return m
}

func (r *rpcServer) forget(svc export.Service) { r.prom.Forget(svc) }

func (r *rpcServer) Describe(ch chan<- *prometheus.Desc) { r.prom.Describe(ch) }
func (r *rpcServer) Collect(ch chan<- prometheus.Metric) { r.prom.Collect(ch) }
