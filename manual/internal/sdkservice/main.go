// Command sdkservice is the OpenTelemetry-SDK service of obsd's
// trace-context tests (issue 11's service C): package manual's tracing on
// an HTTP server that speaks HTTP/1.1 and HTTP/2 without TLS (prior
// knowledge), and a gRPC server of grpc-go's interop TestService
// instrumented through manualgrpc (otelgrpc's stats handler). Both continue
// the caller's trace from its traceparent, as any SDK service does.
//
// Usage:
//
//	sdkservice [-addr 127.0.0.1:0] [-grpc-addr 127.0.0.1:0]
//
// The first line on stdout is "HTTPADDR GRPCADDR". HTTP: GET /hello
// answers 200. gRPC: EmptyCall; UnaryCall answers with its response_status;
// FullDuplexCall echoes each message until the client closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/obsd-dev/obsd/manual"
	"github.com/obsd-dev/obsd/manual/manualgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func main() {
	if err := run(); err != nil {
		slog.Error("sdkservice failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "HTTP listen address (HTTP/1.1 and HTTP/2 without TLS)")
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	shutdown, err := manual.SetupTracing(ctx, manual.TracingOpts{ServiceName: "sdkservice"})
	if err != nil {
		return err
	}
	defer shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") })
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: manual.TraceHandler(mux, "sdkservice"), Protocols: &p}
	hl, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(manualgrpc.ServerOption())
	testgrpc.RegisterTestServiceServer(gs, testService{})
	fmt.Println(hl.Addr().String(), gl.Addr().String())

	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(hl) }()
	go func() { errs <- gs.Serve(gl) }()
	select {
	case err = <-errs:
	case <-ctx.Done():
	}
	gs.Stop()
	srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if s := req.GetResponseStatus(); s.GetCode() != 0 {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}
