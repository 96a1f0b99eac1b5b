// Command grpcapp is the gRPC test program: a server of grpc-go's own interop
// TestService (unary and all three stream kinds, no generated code of ours,
// so the same source builds against every grpc-go release), and a client
// that sends a fixed mix of calls and prints its own tally, the numbers tests
// compare obsd's with.
//
//	grpcapp -listen 127.0.0.1:0          serve; prints "listening ADDR"
//	grpcapp -call ADDR -rounds N          send N rounds of the mix; prints the tally as JSON
//	grpcapp -listen ADDR -servehttp       serve through (*grpc.Server).ServeHTTP behind net/http (h2c)
//	grpcapp -listen ADDR -forward ADDR2   serve, and answer a UnaryCall whose payload body is
//	                                      "forward" by calling EmptyCall on ADDR2 under the
//	                                      handler's context (for trace-context tests); with a
//	                                      response_status, UnaryCall with that status instead,
//	                                      whose error it returns; "forward-stream": one message
//	                                      through a FullDuplexCall on ADDR2
//	grpcapp -call ADDR -hold              the same, but prints "ready" first, calls only
//	                                      after a line on stdin, and exits at stdin's end
//	                                      (so a test can instrument it before the first call
//	                                      and read its records before it exits)
//	grpcapp -call ADDR -load C            load for make bench: prints "ready", then for each
//	                                      line on stdin holding a number of seconds sends
//	                                      unary calls from C goroutines for that long and
//	                                      prints "calls N errors E ns T"; exits at stdin's end
//
// The server answers a UnaryCall or FullDuplexCall whose response_status is
// set with that status, panics (recovered by an interceptor into Internal)
// when the payload body is "panic", and sleeps when it is "sleep" (so that a
// client deadline expires).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func main() {
	listen := flag.String("listen", "", "serve on this address")
	call := flag.String("call", "", "call the server at this address")
	rounds := flag.Int("rounds", 1, "rounds of the call mix")
	serveHTTP := flag.Bool("servehttp", false, "serve through grpc.Server.ServeHTTP on a net/http server (HTTP/2 without TLS)")
	hold := flag.Bool("hold", false, "with -call: print \"ready\", wait for a line on stdin, and exit at stdin's end")
	forward := flag.String("forward", "", "with -listen: the server a UnaryCall with payload \"forward\" calls")
	load := flag.Int("load", 0, "with -call: instead of the mix, unary calls from this many goroutines, in rounds asked for on stdin")
	flag.Parse()
	switch {
	case *call != "" && *load > 0:
		if err := loadRounds(*call, *load, os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
	case *listen != "":
		if err := serve(*listen, *serveHTTP, *forward); err != nil {
			log.Fatal(err)
		}
	case *call != "":
		in := bufio.NewReader(os.Stdin)
		if *hold {
			fmt.Println("ready")
			if _, err := in.ReadString('\n'); err != nil {
				log.Fatal(err)
			}
		}
		tally, err := callMix(*call, *rounds)
		if err != nil {
			log.Fatal(err)
		}
		if err := json.NewEncoder(os.Stdout).Encode(tally); err != nil {
			log.Fatal(err)
		}
		if *hold {
			io.Copy(io.Discard, in)
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

type server struct {
	testpb.UnimplementedTestServiceServer
	forward testpb.TestServiceClient // nil without -forward
}

func (server) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s server) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	switch string(in.GetPayload().GetBody()) {
	case "forward":
		if s.forward == nil {
			return nil, status.Error(codes.FailedPrecondition, "no -forward")
		}
		if st := in.GetResponseStatus(); st != nil {
			// The next server answers with this status: the caller sees
			// it, and a test tells the forwarded calls apart by it.
			_, err := s.forward.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: st})
			return nil, err
		}
		if _, err := s.forward.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			return nil, err
		}
	case "forward-stream":
		// One message through a FullDuplexCall to the next server.
		if s.forward == nil {
			return nil, status.Error(codes.FailedPrecondition, "no -forward")
		}
		stream, err := s.forward.FullDuplexCall(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
			return nil, err
		}
		if _, err := stream.Recv(); err != nil {
			return nil, err
		}
		if err := stream.CloseSend(); err != nil {
			return nil, err
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the stream's end: %v", err)
		}
	case "panic":
		panic("grpcapp: asked to panic")
	case "sleep":
		select {
		case <-ctx.Done():
			// The client's deadline: answer with it, as a server that
			// respects its context does, so both sides agree.
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(2 * time.Second):
		}
	}
	if s := in.GetResponseStatus(); s != nil {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (server) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for range in.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
	return nil
}

func (server) StreamingInputCall(stream testpb.TestService_StreamingInputCallServer) error {
	n := 0
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		n += len(in.GetPayload().GetBody())
	}
}

func (server) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if s := in.GetResponseStatus(); s != nil {
			return status.Error(codes.Code(s.GetCode()), s.GetMessage())
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

// recoverUnary turns a handler panic into Internal, as recovery
// middleware (go-grpc-middleware's recovery) does.
func recoverUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "panic: %v", r)
		}
	}()
	return h(ctx, req)
}

func serve(addr string, serveHTTP bool, forward string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := server{}
	if forward != "" {
		// Connects at the first forwarded call, not now: obsd, attached
		// after the start, then sees the connection open.
		cc, err := grpc.NewClient("passthrough:///"+forward, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		srv.forward = testpb.NewTestServiceClient(cc)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(recoverUnary))
	testpb.RegisterTestServiceServer(s, srv)
	fmt.Printf("listening %s\n", ln.Addr())
	if serveHTTP {
		// grpc-go's other server transport: net/http parses the requests.
		return http.Serve(ln, h2c.NewHandler(s, &http2.Server{}))
	}
	return s.Serve(ln)
}

// Tally counts the client's calls by full method and status code name, as
// the client saw them: {"/grpc.testing.TestService/EmptyCall": {"OK": 3}}.
type Tally map[string]map[string]int

func (t Tally) add(method string, err error) {
	if t[method] == nil {
		t[method] = map[string]int{}
	}
	t[method][status.Code(err).String()]++
}

const svc = "/grpc.testing.TestService/"

// callMix sends rounds × the mix below and tallies every call. Calls that
// fail are part of the mix, not errors; only a broken connection setup is.
func callMix(addr string, rounds int) (Tally, error) {
	cc, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	ctx := context.Background()
	t := Tally{}
	echo := func(code codes.Code) *testpb.EchoStatus {
		return &testpb.EchoStatus{Code: int32(code), Message: "asked"}
	}
	for range rounds {
		_, err = c.EmptyCall(ctx, &testpb.Empty{})
		t.add(svc+"EmptyCall", err)
		_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}})
		t.add(svc+"UnaryCall", err)
		_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: echo(codes.NotFound)})
		t.add(svc+"UnaryCall", err)
		_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("panic")}})
		t.add(svc+"UnaryCall", err)
		// Long enough that a loaded machine still sends the call before
		// it expires (a call that expires unsent never reaches a server),
		// far shorter than the server's 2 s sleep.
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = c.UnaryCall(dctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("sleep")}})
		cancel()
		t.add(svc+"UnaryCall", err)
		_, err = c.UnimplementedCall(ctx, &testpb.Empty{})
		t.add(svc+"UnimplementedCall", err)
		err = cc.Invoke(ctx, "/no.such.Service/Method", &testpb.Empty{}, &testpb.Empty{})
		t.add("/no.such.Service/Method", err)

		t.add(svc+"StreamingOutputCall", serverStream(ctx, c, 3))
		t.add(svc+"StreamingInputCall", clientStream(ctx, c, 3))
		t.add(svc+"FullDuplexCall", bidi(ctx, c, 3, nil))
		t.add(svc+"FullDuplexCall", bidi(ctx, c, 1, echo(codes.Aborted)))
	}
	return t, nil
}

func serverStream(ctx context.Context, c testpb.TestServiceClient, n int) error {
	params := make([]*testpb.ResponseParameters, n)
	for i := range params {
		params[i] = &testpb.ResponseParameters{}
	}
	s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func clientStream(ctx context.Context, c testpb.TestServiceClient, n int) error {
	s, err := c.StreamingInputCall(ctx)
	if err != nil {
		return err
	}
	for range n {
		if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

// bidi sends n messages, reading a reply to each, then closes; with st set,
// the last message asks the server to end the call with that status.
func bidi(ctx context.Context, c testpb.TestServiceClient, n int, st *testpb.EchoStatus) error {
	s, err := c.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for i := range n {
		req := &testpb.StreamingOutputCallRequest{}
		if i == n-1 {
			req.ResponseStatus = st
		}
		if err := s.Send(req); err != nil {
			break
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// loadRounds keeps one connection to addr and, for each line of in giving
// a number of seconds, sends UnaryCall "hello" from conc goroutines, each
// waiting for its answer before the next call, for that long; it then
// writes "calls N errors E ns T" (T: the round's wall time) to out.
func loadRounds(addr string, conc int, in io.Reader, out io.Writer) error {
	cc, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}
	fmt.Fprintln(out, "ready")
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		var secs float64
		if _, err := fmt.Sscan(lines.Text(), &secs); err != nil || secs <= 0 || secs > 600 {
			return fmt.Errorf("want a number of seconds in 0..600, got %q", lines.Text())
		}
		var calls, errs atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		end := start.Add(time.Duration(secs * float64(time.Second)))
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					if _, err := c.UnaryCall(context.Background(), req); err != nil {
						errs.Add(1)
					}
					calls.Add(1)
				}
			}()
		}
		wg.Wait()
		fmt.Fprintf(out, "calls %d errors %d ns %d\n", calls.Load(), errs.Load(), time.Since(start).Nanoseconds())
	}
	return lines.Err()
}
