package manualgrpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/obsd-dev/obsd/manual/manualgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

type fixture struct {
	health *manual.Health
	hs     *manualgrpc.HealthServer
	srv    *grpc.Server
	conn   *grpc.ClientConn
	client healthpb.HealthClient
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
}

// start serves the health service of a Health with one liveness and two
// readiness checks on a loopback gRPC server, both ends traced.
func start(t *testing.T) *fixture {
	t.Helper()
	h := manual.NewHealth(manual.HealthOpts{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { h.Close() })
	h.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(1_000_000), manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "db", func(context.Context) error { return nil }, manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "cache", func(context.Context) error { return errors.New("cache down") }, manual.CheckOpts{})

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	prop := propagation.TraceContext{}
	tel := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(prop)}

	srv := grpc.NewServer(manualgrpc.ServerOption(tel...))
	hs := manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{WatchInterval: 20 * time.Millisecond})
	manualgrpc.Register(srv, hs)
	registerPing(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), manualgrpc.DialOption(tel...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{health: h, hs: hs, srv: srv, conn: conn, client: healthpb.NewHealthClient(conn), spans: exp, tp: tp}
}

// registerPing adds test.Echo/Ping, an application RPC that takes and
// returns Empty, without generated code.
func registerPing(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Ping",
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				return &emptypb.Empty{}, nil
			},
		}},
	}, struct{}{})
}

func (f *fixture) check(t *testing.T, service string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := f.client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), status.Code(err)
}

func TestHealthCheck(t *testing.T) {
	f := start(t)
	tests := []struct {
		service  string
		want     healthpb.HealthCheckResponse_ServingStatus
		wantCode codes.Code
	}{
		{"", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK}, // cache is down
		{"readiness", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"liveness", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"readiness/db", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"readiness/cache", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"liveness/goroutines", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"readiness/nope", 0, codes.NotFound},
		{"db", 0, codes.NotFound},
	}
	for _, tt := range tests {
		st, code := f.check(t, tt.service)
		if st != tt.want || code != tt.wantCode {
			t.Errorf("Check(%q) = %v, %v; want %v, %v", tt.service, st, code, tt.want, tt.wantCode)
		}
	}

	f.health.Drain()
	if st, _ := f.check(t, "readiness/shutdown"); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness/shutdown after drain: %v", st)
	}
	if st, _ := f.check(t, "liveness"); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness after drain: %v", st)
	}
}

func TestHealthList(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := f.client.List(ctx, &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":                    healthpb.HealthCheckResponse_NOT_SERVING,
		"liveness":            healthpb.HealthCheckResponse_SERVING,
		"readiness":           healthpb.HealthCheckResponse_NOT_SERVING,
		"liveness/goroutines": healthpb.HealthCheckResponse_SERVING,
		"readiness/db":        healthpb.HealthCheckResponse_SERVING,
		"readiness/cache":     healthpb.HealthCheckResponse_NOT_SERVING,
		"readiness/shutdown":  healthpb.HealthCheckResponse_SERVING,
	}
	if len(resp.GetStatuses()) != len(want) {
		t.Errorf("List returned %d services, want %d", len(resp.GetStatuses()), len(want))
	}
	for svc, st := range want {
		if got := resp.GetStatuses()[svc].GetStatus(); got != st {
			t.Errorf("List[%q] = %v, want %v", svc, got, st)
		}
	}
}

func TestHealthWatchSeesDrain(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := f.client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "readiness/shutdown"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message %v, %v", first.GetStatus(), err)
	}
	f.health.Drain()
	next, err := stream.Recv()
	if err != nil || next.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after drain: %v, %v", next.GetStatus(), err)
	}

	unknown, err := f.client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := unknown.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Errorf("Watch of an unknown service: %v, %v", m.GetStatus(), err)
	}
}

func TestRPCsAreTracedOnBothSides(t *testing.T) {
	f := start(t)
	ctx, parent := f.tp.Tracer("test").Start(context.Background(), "caller")
	if _, err := f.client.Check(ctx, &healthpb.HealthCheckRequest{Service: "liveness"}); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.Invoke(ctx, "/test.Echo/Ping", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	// The server ends its span after sending the answer, so the client can
	// be first: wait for both.
	kinds := map[trace.SpanKind]bool{}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		kinds = map[trace.SpanKind]bool{}
		for _, s := range f.spans.GetSpans() {
			if s.Name == "test.Echo/Ping" && s.SpanContext.TraceID() == parent.SpanContext().TraceID() {
				kinds[s.SpanKind] = true
			}
		}
		if kinds[trace.SpanKindClient] && kinds[trace.SpanKindServer] {
			break
		}
	}
	if !kinds[trace.SpanKindClient] || !kinds[trace.SpanKindServer] {
		t.Errorf("span kinds in the caller's trace %v, want client and server", kinds)
	}
	// Health probes are not traced on the server: the kubelet would start
	// a trace every few seconds.
	for _, s := range f.spans.GetSpans() {
		if s.Name == "grpc.health.v1.Health/Check" && s.SpanKind == trace.SpanKindServer {
			t.Errorf("health RPC traced on the server: %s", s.Name)
		}
	}
}

func TestWatchPushesDrainAtOnceAndCloseEndsStreams(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { h.Close() })
	srv := grpc.NewServer(manualgrpc.ServerOption())
	hs := manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{}) // the 5 s default interval
	manualgrpc.Register(srv, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	// The client's own deadline is far away: nothing may wait for it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ready, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	live, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "liveness"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []healthpb.Health_WatchClient{ready, live} {
		if m, err := s.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first message %v %v", m.GetStatus(), err)
		}
	}
	start := time.Now()
	h.Drain()
	m, err := ready.Recv()
	if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after Drain: %v %v", m.GetStatus(), err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("NOT_SERVING arrived %s after Drain; it must not wait for the 5 s tick", took)
	}

	start = time.Now()
	hs.Close()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("GracefulStop still waiting on Watch streams 3 s after Close")
	}
	for _, s := range []healthpb.Health_WatchClient{ready, live} {
		if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("Watch stream after Close: %v, want Unavailable", err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close + GracefulStop took %s", took)
	}
}

func TestHealthCheckOfAGRPCDependency(t *testing.T) {
	f := start(t)
	for _, tt := range []struct {
		service string
		wantErr string
	}{
		{"liveness", ""},
		{"readiness/db", ""},
		{"readiness/cache", "NOT_SERVING"},
		{"nope", "NotFound"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := manualgrpc.HealthCheck(f.conn, tt.service)(ctx)
		cancel()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: %v, want %q", tt.service, err, tt.wantErr)
		}
	}
}
