package grpcserver

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestGRPCTraceContext: service A (a grpc-go server) serves a UnaryCall by
// calling service B's EmptyCall under the handler's context; obsd
// instruments both. A's SERVER span joins the trace of the traceparent the
// edge sent in its metadata (parent = the edge's span; sampled=0 honoured);
// the tracestate sent with it is kept on A's SERVER span;
// A's CLIENT span is the child of A's SERVER span; B's SERVER span is a
// root (nothing propagates between processes here). Both sides of grpc-go's
// v1.69 transport split.
func TestGRPCTraceContext(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	const (
		parent = "00f067aa0ba902b7"
		prefix = "4bf92f3577b34da6a3ce929d"
		state  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	)
	for _, v := range []variant{{grpc: "v1.68.1"}, {grpc: "v1.85.0"}} {
		t.Run(v.name(), func(t *testing.T) {
			bin := grpcApp(t, v)
			b := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=grpc-b"}, "-listen", "127.0.0.1:0")
			bAddr := strings.TrimPrefix(b.First, "listening ")
			a := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=grpc-a"}, "-listen", "127.0.0.1:0", "-forward", bAddr)
			aAddr := strings.TrimPrefix(a.First, "listening ")
			recv := e2e.StartReceiver(t)
			o := e2e.StartObsd(t, obsdBin, []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
			}, "--pid", strconv.Itoa(a.PID()), "--pid", strconv.Itoa(b.PID()), "--traces", "otlp", "--keep-slow=0", "--keep-errors=false")
			o.WaitScrape(t, 20*time.Second, "both servers instrumented", func(f map[string]*dto.MetricFamily) bool {
				return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
			})

			cc, err := grpc.NewClient(aAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			client := testpb.NewTestServiceClient(cc)
			type sent struct{ trace, flags string }
			cases := []sent{{prefix + "00000001", "01"}, {prefix + "00000002", "00"}, {prefix + "00000003", "01"}, {"", ""}}
			for _, c := range cases {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if c.trace != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-%s", c.trace, parent, c.flags))
				}
				if c == cases[2] {
					ctx = metadata.AppendToOutgoingContext(ctx, "tracestate", state)
				}
				_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("forward")}})
				cancel()
				if err != nil {
					t.Fatalf("UnaryCall: %v", err)
				}
			}
			// Spans: per exported case, A server, A client, B server; the
			// not-sampled case's A spans are not exported (B's root is).
			want := 3*3 + 1
			spans := recv.WaitSpans(t, want, 15*time.Second)
			time.Sleep(300 * time.Millisecond)
			spans = recv.Spans()
			var aServer, aClient, bServer []e2e.Span
			for _, s := range spans {
				svc, method := s.Resource["service.name"], s.Attr("rpc.method")
				switch {
				case svc == "grpc-a" && strings.HasSuffix(method, "UnaryCall"):
					aServer = append(aServer, s)
				case svc == "grpc-a" && strings.HasSuffix(method, "EmptyCall"):
					aClient = append(aClient, s)
				case svc == "grpc-b":
					bServer = append(bServer, s)
				default:
					t.Errorf("unexpected span %s %s %s", svc, s.GetName(), method)
				}
			}
			if len(aServer) != 3 || len(aClient) != 3 || len(bServer) != 4 {
				t.Fatalf("A server %d, A client %d, B server %d spans; want 3, 3, 4", len(aServer), len(aClient), len(bServer))
			}
			t.Cleanup(func() {
				if t.Failed() {
					for _, l := range strings.Split(string(o.Scrape(t)), "\n") {
						if strings.HasPrefix(l, "obsd_probe_anomalies_total") || strings.HasPrefix(l, "obsd_events_lost_total") {
							t.Log(l)
						}
					}
					for _, s := range spans {
						t.Logf("span %s %s %s trace %x span %x parent %x", s.Resource["service.name"], s.GetKind(), s.Attr("rpc.method"), s.GetTraceId(), s.GetSpanId(), s.GetParentSpanId())
					}
				}
			})
			byTrace := map[string]e2e.Span{}
			for _, s := range aServer {
				byTrace[hex.EncodeToString(s.GetTraceId())] = s
			}
			for _, c := range []sent{cases[0], cases[2]} {
				s, ok := byTrace[c.trace]
				if !ok {
					t.Errorf("no A server span in the sent trace %s", c.trace)
					continue
				}
				if got := hex.EncodeToString(s.GetParentSpanId()); got != parent {
					t.Errorf("A server span in %s has parent %s, want the edge's %s", c.trace, got, parent)
				}
				wantState := map[bool]string{true: state}[c == cases[2]]
				if got := s.GetTraceState(); got != wantState {
					t.Errorf("A server span in %s has tracestate %q, want %q", c.trace, got, wantState)
				}
			}
			if _, ok := byTrace[cases[1].trace]; ok {
				t.Errorf("A server span exported for a caller that said not sampled")
			}
			for _, cl := range aClient {
				srv, ok := byTrace[hex.EncodeToString(cl.GetTraceId())]
				if !ok || hex.EncodeToString(cl.GetParentSpanId()) != hex.EncodeToString(srv.GetSpanId()) {
					t.Errorf("A client span in trace %s under %s: not the child of an A server span",
						hex.EncodeToString(cl.GetTraceId()), hex.EncodeToString(cl.GetParentSpanId()))
				}
			}
			for _, s := range bServer {
				if len(s.GetParentSpanId()) != 0 {
					t.Errorf("B server span has parent %s; nothing propagates between processes here", hex.EncodeToString(s.GetParentSpanId()))
				}
			}
		})
	}
}
