package manualgrpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/obsd-dev/obsd/manual/manualgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// serve starts a gRPC server with the health service of h on loopback and
// returns a client for it and a stop function.
func serve(h *manual.Health) (healthpb.HealthClient, func()) {
	srv := grpc.NewServer(manualgrpc.ServerOption())
	manualgrpc.Register(srv, manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{WatchInterval: 10 * time.Millisecond}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), manualgrpc.DialOption())
	if err != nil {
		panic(err)
	}
	return healthpb.NewHealthClient(conn), func() { conn.Close(); srv.Stop() }
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ExampleNewHealthServer() {
	h := manual.NewHealth(manual.HealthOpts{Logger: quiet()})
	defer h.Close()
	h.MustAdd(manual.Readiness, "db", func(context.Context) error { return errors.New("down") }, manual.CheckOpts{})
	client, stop := serve(h)
	defer stop()
	for _, svc := range []string{"", "liveness", "readiness/db"} {
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		fmt.Printf("%q %v %v\n", svc, resp.GetStatus(), err)
	}
	// Output:
	// "" NOT_SERVING <nil>
	// "liveness" SERVING <nil>
	// "readiness/db" NOT_SERVING <nil>
}

func ExampleRegister() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	srv := grpc.NewServer()
	manualgrpc.Register(srv, manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{}))
	_, ok := srv.GetServiceInfo()["grpc.health.v1.Health"]
	fmt.Println(ok)
	// Output: true
}

func ExampleServerOption() {
	// Spans go to the global provider that manual.SetupTracing installs.
	srv := grpc.NewServer(manualgrpc.ServerOption())
	defer srv.Stop()
	fmt.Println("server instrumented")
	// Output: server instrumented
}

func ExampleDialOption() {
	conn, err := grpc.NewClient("127.0.0.1:50051",
		grpc.WithTransportCredentials(insecure.NewCredentials()), manualgrpc.DialOption())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Println("client instrumented")
	// Output: client instrumented
}

func ExampleHealthServer_Check() {
	h := manual.NewHealth(manual.HealthOpts{Logger: quiet()})
	defer h.Close()
	hs := manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{})
	h.Drain()
	resp, _ := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: manualgrpc.ServiceReadiness})
	fmt.Println(resp.GetStatus())
	resp, _ = hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: manualgrpc.ServiceLiveness})
	fmt.Println(resp.GetStatus())
	// Output:
	// NOT_SERVING
	// SERVING
}

func ExampleHealthServer_List() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	hs := manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{})
	resp, _ := hs.List(context.Background(), &healthpb.HealthListRequest{})
	fmt.Println(resp.GetStatuses()["readiness/shutdown"].GetStatus())
	// Output: SERVING
}

func ExampleHealthServer_Watch() {
	h := manual.NewHealth(manual.HealthOpts{Logger: quiet()})
	defer h.Close()
	client, stop := serve(h)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, _ := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	first, _ := stream.Recv()
	h.Drain()
	next, _ := stream.Recv()
	fmt.Println(first.GetStatus(), "->", next.GetStatus())
	// Output: SERVING -> NOT_SERVING
}

func ExampleHealthCheck() {
	// A readiness check of a gRPC dependency through its own health service.
	dep := manual.NewHealth(manual.HealthOpts{Logger: quiet()})
	defer dep.Close()
	srv := grpc.NewServer()
	manualgrpc.Register(srv, manualgrpc.NewHealthServer(dep, manualgrpc.HealthOpts{}))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Stop()
	conn, _ := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()

	check := manualgrpc.HealthCheck(conn, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fmt.Println(check(ctx))
	dep.Drain()
	fmt.Println(check(ctx))
	// Output:
	// <nil>
	// grpc health check of "": NOT_SERVING
}

func ExampleHealthServer_Close() {
	h := manual.NewHealth(manual.HealthOpts{})
	defer h.Close()
	srv := grpc.NewServer()
	hs := manualgrpc.NewHealthServer(h, manualgrpc.HealthOpts{})
	manualgrpc.Register(srv, hs)
	// On SIGTERM: drain (Watch streams learn NOT_SERVING at once), wait,
	// then end the Watch streams so GracefulStop does not wait on clients.
	h.Drain()
	hs.Close()
	srv.GracefulStop()
	fmt.Println("stopped")
	// Output: stopped
}
