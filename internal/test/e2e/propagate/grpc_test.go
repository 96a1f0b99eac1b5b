package propagate

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestTCPGRPC: service A (grpcapp, network namespace A) serves each edge
// UnaryCall by calling service B (grpcapp, namespace B) over one HTTP/2
// connection, a UnaryCall answered with a status chosen per edge call (so
// that each of B's spans says which call it served), or one message
// through a FullDuplexCall; obsd instruments both with --propagate=tcp, and
// no metadata carries context from A to B. A's connection to B opens
// before obsd starts (obsd gives it the callbacks when it registers the
// processes). One call at a time, every B
// server span is the child of A's client span of the same edge call, in
// the edge's trace, with the same status, starting no earlier. 30 at a
// time, streams share the connection's segments: each of B's spans is
// either so joined or a new trace, never the child of another call's span,
// and the roots are exactly the streams obsd counted as
// tcp_context_other_stream. Built as is, and stripped with the oldest
// grpc-go release obsd carries context for (offsets from the table).
func TestTCPGRPC(t *testing.T) {
	e2e.RequireRoot(t)
	for _, v := range []struct {
		name, grpc string
		flavour    e2e.Flavour
	}{
		{"v1.85.0", "v1.85.0", e2e.Flavour{}},
		{"v1.82.1-stripped-external", "v1.82.1", e2e.Flavour{Stripped: true, External: true, Trimpath: true}},
	} {
		t.Run(v.name, func(t *testing.T) {
			bin := builds.Program(t, e2e.Program{
				Name:    "grpcapp",
				Src:     filepath.Join(e2e.RepoRoot(), "testdata", "grpc"),
				Flavour: v.flavour,
				Require: []string{"google.golang.org/grpc " + v.grpc},
			})
			tcpGRPC(t, bin)
		})
	}
}

// grpcCodeOf is the status B answers edge call i with: every code in turn.
func grpcCodeOf(i int) codes.Code { return codes.Code(i % 17) }

func tcpGRPC(t *testing.T, bin string) {
	ipCmd := e2e.RequireTool(t, "ip")
	np := e2e.NewNetPair(t)
	obsdBin := builds.Obsd(t)
	inNS := func(ns, name string, args ...string) (*e2e.Proc, string) {
		t.Helper()
		cmd := exec.Command(ipCmd, append([]string{"netns", "exec", ns, bin}, args...)...)
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+name)
		p := e2e.StartCmd(t, cmd)
		return p, strings.TrimPrefix(p.First, "listening ")
	}
	b, bAddr := inNS(np.B, "grpc-b", "-listen", net.JoinHostPort(np.BAddr.String(), "0"))
	a, aAddr := inNS(np.A, "grpc-a", "-listen", net.JoinHostPort(np.AAddr.String(), "0"), "-forward", bAddr)

	dial := e2e.DialIn(np.A)
	cc, err := grpc.NewClient("passthrough:///"+aAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	edge := testpb.NewTestServiceClient(cc)
	// A's connection to B opens now, before obsd runs (as a ClientConn
	// dialled at start-up does): obsd adopts it when it registers A and B.
	warm, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := edge.UnaryCall(warm, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("forward")}}); err != nil {
		t.Fatalf("the call before obsd: %v", err)
	}
	cancel()

	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(b.PID()),
		"--propagate=tcp", "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
	o.WaitScrape(t, 20*time.Second, "A and B instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
	})
	fams := e2e.Families(t, o.Scrape(t))
	// A's end of its connection to B, and B's end (the edge's connection
	// to A is in A's namespace, accepted: adopted too, as a receiver's).
	if n := e2e.Sum(fams, "obsd_tcp_context_adopted_connections_total", nil); n < 2 {
		t.Errorf("obsd adopted %v connections opened before it, want at least A's and B's ends of A -> B", n)
	}
	if n := e2e.Sum(fams, "obsd_tcp_context_adopt_errors_total", nil); n != 0 {
		t.Errorf("obsd_tcp_context_adopt_errors_total = %v", n)
	}

	// call sends edge call i, sampled, through A to B: a UnaryCall answered
	// with grpcCodeOf(i), or (stream) one message of a FullDuplexCall.
	call := func(i int, stream bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", edgeTrace(i), edgeParent))
		req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("forward")},
			ResponseStatus: &testpb.EchoStatus{Code: int32(grpcCodeOf(i))}}
		if stream {
			req = &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("forward-stream")}}
		}
		_, err := edge.UnaryCall(ctx, req)
		if want := grpcCodeOf(i); !stream && status.Code(err) != want {
			return fmt.Errorf("edge call %d: %v, want status %v", i, err, want)
		} else if stream && err != nil {
			return fmt.Errorf("edge call %d (stream): %w", i, err)
		}
		return nil
	}

	const seq, streams, conc, workers = 60, 10, 600, 30
	for i := range seq {
		if err := call(i, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := 100; i < 100+streams; i++ {
		if err := call(i, true); err != nil {
			t.Fatal(err)
		}
	}
	otherBefore := otherStream(t, o)
	concurrently(t, workers, seqIDs(nil, 1000, conc), func(i int) error {
		return call(i, false)
	})

	want := 3 * (seq + streams + conc)
	recv.WaitSpans(t, want, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	spans := recv.Spans()
	if len(spans) != want {
		t.Errorf("received %d spans, want %d (A server, A client, B server per edge call)", len(spans), want)
	}
	byTrace := map[string]*trio{}
	var bRoots []e2e.Span
	for _, s := range spans {
		tr := hexID(s.GetTraceId())
		if byTrace[tr] == nil {
			byTrace[tr] = &trio{}
		}
		x := byTrace[tr]
		kind := s.GetKind().String()
		switch svc := s.Resource["service.name"]; {
		case svc == "grpc-a" && kind == "SPAN_KIND_SERVER":
			x.aServer = append(x.aServer, s)
		case svc == "grpc-a" && kind == "SPAN_KIND_CLIENT":
			x.aClient = append(x.aClient, s)
		case svc == "grpc-b" && kind == "SPAN_KIND_SERVER" && len(s.GetParentSpanId()) == 0:
			bRoots = append(bRoots, s)
		case svc == "grpc-b" && kind == "SPAN_KIND_SERVER":
			x.bServer = append(x.bServer, s)
		default:
			t.Errorf("unexpected span %s of %s, kind %v", s.GetName(), svc, kind)
		}
	}
	// check says whether edge call i's B span joined A's client span; it
	// fails the test for anything but joined exactly or not joined at all.
	check := func(i int, stream bool) bool {
		x := byTrace[edgeTrace(i)]
		if x == nil || len(x.aServer) != 1 || len(x.aClient) != 1 || len(x.bServer) > 1 {
			t.Errorf("edge call %d: spans (A server, A client, B server) %s in its trace, want 1 1 0-1", i, x.counts())
			return false
		}
		if len(x.bServer) == 0 {
			return false
		}
		as, ac, bs := x.aServer[0], x.aClient[0], x.bServer[0]
		wantMethod := "grpc.testing.TestService/UnaryCall"
		if stream {
			wantMethod = "grpc.testing.TestService/FullDuplexCall"
		}
		switch {
		case hexID(as.GetParentSpanId()) != edgeParent || hexID(ac.GetParentSpanId()) != hexID(as.GetSpanId()):
			t.Errorf("edge call %d: A's spans not chained under the edge", i)
		case hexID(bs.GetParentSpanId()) != hexID(ac.GetSpanId()):
			t.Errorf("edge call %d: B's span under %s, want A's client span %s", i, hexID(bs.GetParentSpanId()), hexID(ac.GetSpanId()))
		case bs.GetName() != wantMethod || bs.Attr("rpc.response.status_code") != ac.Attr("rpc.response.status_code"):
			t.Errorf("edge call %d: B's span joined to it served %s with status %s; A's client call got %s",
				i, bs.GetName(), bs.Attr("rpc.response.status_code"), ac.Attr("rpc.response.status_code"))
		case bs.GetStartTimeUnixNano() < ac.GetStartTimeUnixNano():
			t.Errorf("edge call %d: B's span starts before its parent", i)
		default:
			return true
		}
		return false
	}
	for i := range seq {
		if !check(i, false) {
			t.Errorf("edge call %d, one at a time: B's span not joined to A's client span", i)
		}
	}
	for i := 100; i < 100+streams; i++ {
		if !check(i, true) {
			t.Errorf("edge call %d, one stream at a time: B's span not joined to A's client span", i)
		}
	}
	joined := 0
	for i := 1000; i < 1000+conc; i++ {
		if check(i, false) {
			joined++
		}
	}
	other := otherStream(t, o) - otherBefore
	t.Logf("%d calls at a time: %d of %d joined, %d new traces (%v counted as another stream's)", workers, joined, conc, len(bRoots), other)
	if len(bRoots)+joined != conc || float64(len(bRoots)) != other {
		t.Errorf("of %d concurrent calls, %d joined and %d B spans are roots (counted: %v); want every call joined or a counted root",
			conc, joined, len(bRoots), other)
	}
	if joined == 0 {
		t.Errorf("none of %d concurrent calls joined", conc)
	}
}

// otherStream is obsd's count of streams whose connection's context was
// another stream's.
func otherStream(t *testing.T, o *e2e.Obsd) float64 {
	t.Helper()
	n := 0.0
	for _, m := range e2e.Families(t, o.Scrape(t))["obsd_probe_anomalies_total"].GetMetric() {
		if e2e.Labels(m)["reason"] == "tcp_context_other_stream" {
			n += e2e.Value(m)
		}
	}
	return n
}
