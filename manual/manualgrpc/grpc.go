// Package manualgrpc serves manual.Health as the standard gRPC health
// service (grpc.health.v1) and instruments gRPC clients and servers with
// the current otelgrpc stats handlers (the interceptors are deprecated).
// It is a package of its own so that HTTP-only programs do not link it.
package manualgrpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ServerOption makes a grpc.Server create a span for every RPC it serves,
// continuing the caller's trace from the request metadata, except the
// grpc.health.v1.Health RPCs: Kubernetes probes them every few seconds and
// each would start a trace. Without opts it uses the global
// TracerProvider and propagators that manual.SetupTracing installs. An
// otelgrpc.WithFilter in opts replaces that default filter; combine it
// with filters.Not(filters.HealthCheck()) to keep probes out.
func ServerOption(opts ...otelgrpc.Option) grpc.ServerOption {
	all := append([]otelgrpc.Option{otelgrpc.WithFilter(filters.Not(filters.HealthCheck()))}, opts...)
	return grpc.StatsHandler(otelgrpc.NewServerHandler(all...))
}

// DialOption makes a client connection create a span for every RPC and
// send the trace context in the metadata. Call with the incoming request's
// context, never context.Background(), or the trace breaks here. Without
// opts it uses the global TracerProvider and propagators.
func DialOption(opts ...otelgrpc.Option) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(opts...))
}

// Service names understood by HealthServer, besides "KIND/CHECK" for a
// single check (for example "readiness/db").
const (
	// ServiceReadiness and the empty name report every readiness check;
	// Kubernetes gRPC probes without a service name ask for "".
	ServiceReadiness = "readiness"
	// ServiceLiveness reports every liveness check; use it as the service
	// of a Kubernetes gRPC liveness probe.
	ServiceLiveness = "liveness"
)

// HealthOpts configures NewHealthServer. The zero value is ready to use.
type HealthOpts struct {
	// WatchInterval is how often a Watch stream re-runs its checks to
	// detect a change. Zero or less means 5 s. A drain is pushed at once,
	// whatever the interval.
	WatchInterval time.Duration
}

// HealthServer implements grpc.health.v1.Health on a manual.Health, so HTTP
// probes and gRPC probes share one set of checks, deadlines and the drain.
type HealthServer struct {
	healthpb.UnimplementedHealthServer
	h         *manual.Health
	every     time.Duration
	done      chan struct{}
	closeOnce sync.Once
}

// NewHealthServer returns a HealthServer backed by h.
func NewHealthServer(h *manual.Health, opts HealthOpts) *HealthServer {
	every := opts.WatchInterval
	if every <= 0 {
		every = 5 * time.Second
	}
	return &HealthServer{h: h, every: every, done: make(chan struct{})}
}

// Close ends every Watch stream (with codes.Unavailable, which clients
// take as "reconnect elsewhere") and makes new ones end at once. Call it
// after the drain and before grpc.Server.GracefulStop: open Watch streams
// would otherwise keep GracefulStop waiting until each client gives up.
// It always returns nil.
func (hs *HealthServer) Close() error {
	hs.closeOnce.Do(func() { close(hs.done) })
	return nil
}

var errClosing = status.Error(codes.Unavailable, "health server is shutting down")

// Register registers hs on s as the grpc.health.v1.Health service. Like
// every gRPC registration it panics when s already has that service.
func Register(s grpc.ServiceRegistrar, hs *HealthServer) {
	healthpb.RegisterHealthServer(s, hs)
}

var errUnknownService = errors.New("unknown service")

// statusOf runs what service names and maps the report to a serving status.
func (hs *HealthServer) statusOf(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	var rep manual.Report
	switch service {
	case "", ServiceReadiness:
		rep = hs.h.Run(ctx, manual.Readiness)
	case ServiceLiveness:
		rep = hs.h.Run(ctx, manual.Liveness)
	default:
		kindName, check, ok := strings.Cut(service, "/")
		var kind manual.Kind
		switch {
		case ok && kindName == ServiceReadiness:
			kind = manual.Readiness
		case ok && kindName == ServiceLiveness:
			kind = manual.Liveness
		default:
			return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, errUnknownService
		}
		var err error
		rep, err = hs.h.RunOne(ctx, kind, check)
		if err != nil {
			return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, errUnknownService
		}
	}
	if rep.OK() {
		return healthpb.HealthCheckResponse_SERVING, nil
	}
	return healthpb.HealthCheckResponse_NOT_SERVING, nil
}

// Check implements grpc.health.v1.Health/Check: SERVING when every check
// the service names passes, NOT_SERVING otherwise, codes.NotFound for an
// unknown service. It answers within the checks' deadline (800 ms by
// default).
func (hs *HealthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st, err := hs.statusOf(ctx, req.GetService())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "health service %q: %v", req.GetService(), err)
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// List implements grpc.health.v1.Health/List: "", "liveness",
// "readiness" and every "KIND/CHECK".
func (hs *HealthServer) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{}}
	for _, kind := range []manual.Kind{manual.Liveness, manual.Readiness} {
		rep := hs.h.Run(ctx, kind)
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if rep.OK() {
			st = healthpb.HealthCheckResponse_SERVING
		}
		out.Statuses[kind.String()] = &healthpb.HealthCheckResponse{Status: st}
		if kind == manual.Readiness {
			out.Statuses[""] = &healthpb.HealthCheckResponse{Status: st}
		}
		for name, v := range rep.Checks {
			cs := healthpb.HealthCheckResponse_NOT_SERVING
			if v == manual.StatusOK {
				cs = healthpb.HealthCheckResponse_SERVING
			}
			out.Statuses[kind.String()+"/"+name] = &healthpb.HealthCheckResponse{Status: cs}
		}
	}
	return out, nil
}

// Watch implements grpc.health.v1.Health/Watch: it sends the status at
// once and again whenever it changes, re-running the checks every
// WatchInterval; an unknown service is SERVICE_UNKNOWN, not an error.
//
// Drain is pushed at once (the readiness services turn NOT_SERVING without
// waiting for the interval); Close ends the stream.
func (hs *HealthServer) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx := stream.Context()
	t := time.NewTicker(hs.every)
	defer t.Stop()
	drained := hs.h.Drained()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	for {
		select {
		case <-hs.done:
			return errClosing
		default:
		}
		st, _ := hs.statusOf(ctx, req.GetService())
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return fmt.Errorf("sending health status: %w", err)
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-hs.done:
			return errClosing
		case <-drained:
			drained = nil // once: from now on the ticker decides
		case <-t.C:
		}
	}
}

// HealthCheck is a manual.Check (for readiness) that asks a gRPC dependency's
// standard health service about service ("" for the whole server) and
// passes only on SERVING, under the check's deadline. conn is typically a
// *grpc.ClientConn made once at start-up; the probe reuses it.
func HealthCheck(conn grpc.ClientConnInterface, service string) manual.Check {
	client := healthpb.NewHealthClient(conn)
	return func(ctx context.Context) error {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return fmt.Errorf("grpc health check of %q: %w", service, err)
		}
		if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health check of %q: %s", service, st)
		}
		return nil
	}
}
