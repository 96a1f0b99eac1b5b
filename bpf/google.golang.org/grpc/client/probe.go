// Package client is the probe for grpc-go clients: every attempt of every
// call a google.golang.org/grpc ClientConn makes (Invoke and streams), from
// (*csAttempt).getTransport to (*csAttempt).finish, with the status finish
// got (see probe.bpf.c). A call grpc-go does not retry is one attempt.
package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// Record flags, as set by probe.bpf.c.
const (
	flagMethodTruncated = 1
	flagHostTruncated   = 2
	flagSampled         = 4
	flagOtherError      = 8
)

// BudgetCalls bounds a process's attempts in flight in the map every process
// on the node shares (budget_calls in probe.bpf.c; a test checks); past it,
// new attempts of that process are lost, counted as inflight_budget.
const BudgetCalls = 16384

// HeaderSize is the fixed part of a record; the method and the authority
// follow it.
const HeaderSize = int(unsafe.Sizeof(bpfRpcClientEvent{}))

// Call is one finished attempt of a gRPC client call (probe.KindRPCClient);
// a call grpc-go does not retry is one attempt.
type Call struct {
	probe.Call
	// Method is the full method as the client called it,
	// "/pkg.Service/Method" (may be truncated, see MethodTruncated).
	Method string
	// Authority is the call's :authority, grpc-go's CallHdr.Host: the
	// ClientConn's authority ("host:port" as dialled, or what
	// grpc.WithAuthority set).
	Authority string
	// Code is the gRPC status code (codes.Code) the call ended with.
	Code uint32
	// OtherError says the call ended with an error that was no status
	// error (reported as Unknown, as status.Code does).
	OtherError                          bool
	MethodTruncated, AuthorityTruncated bool
}

const (
	grpcModule   = "google.golang.org/grpc"
	transportPkg = grpcModule + "/internal/transport"
)

func grpcField(pkg, typ, name string) probe.Field {
	return probe.Field{Module: grpcModule, Package: pkg, Struct: typ, Field: name}
}

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "google.golang.org/grpc/client",
		MinGo: "go1.21",
		Sites: []probe.Site{
			// The marker: a binary without it has no grpc-go client.
			{Symbol: "google.golang.org/grpc.(*csAttempt).getTransport", Program: "rpc_client_start"},
			{Symbol: "google.golang.org/grpc.(*csAttempt).finish", Program: "rpc_client_end", VaddrConst: "end_site_vaddr"},
			// --propagate=tcp only: a new stream's HEADERS, on the loopy
			// writer's goroutine (grpc-go v1.82.1 and later).
			{Symbol: grpcModule + "/internal/transport.(*loopyWriter).clientHeaderHandler", Program: "rpc_client_stream",
				VaddrConst: "stream_site_vaddr", Optional: true, When: probe.TCPStreamsWhen},
		},
		Consts: append([]probe.Const{
			{Name: "off_attempt_cs", Field: grpcField(grpcModule, "csAttempt", "cs")},
			{Name: "off_cs_callhdr", Field: grpcField(grpcModule, "clientStream", "callHdr")},
			{Name: "off_callhdr_host", Field: grpcField(grpcModule+"/internal/transport", "CallHdr", "Host")},
			{Name: "off_callhdr_method", Field: grpcField(grpcModule+"/internal/transport", "CallHdr", "Method")},
			{Name: "off_error_s", Field: grpcField(grpcModule+"/internal/status", "Error", "s")},
			{Name: "off_status_s", Field: grpcField(grpcModule+"/internal/status", "Status", "s")},
			// The status proto's layout, keyed by grpc-go's version as the
			// server probe's is: the table records it beside grpc-go's.
			{Name: "off_spb_code", Field: probe.Field{Module: grpcModule,
				Package: "google.golang.org/genproto/googleapis/rpc/status", Struct: "Status", Field: "Code"}},
			{Name: "off_errorstring_s", Field: probe.Field{Module: "std", Package: "errors", Struct: "errorString", Field: "s"}},
			// Trace context only: the attempt's context, walked for the
			// server span the call was made under.
			{Name: "off_attempt_ctx", Field: grpcField(grpcModule, "csAttempt", "ctx"), Optional: true, Secondary: true},
			// --propagate=tcp only: from a stream's HEADERS to its attempt
			// and connection.
			{Name: "off_clienthdrs_streamid", Field: grpcField(transportPkg, "clientHeaders", "streamID"), Optional: true, Secondary: true},
			{Name: "off_clienthdrs_wq", Field: grpcField(transportPkg, "clientHeaders", "wq"), Optional: true, Secondary: true},
			{Name: "off_tstream_wq", Field: grpcField(transportPkg, "Stream", "wq"), Optional: true, Secondary: true},
			{Name: "off_tstream_ctx", Field: grpcField(transportPkg, "Stream", "ctx"), Optional: true, Secondary: true},
			{Name: "off_loopy_conn", Field: grpcField(transportPkg, "loopyWriter", "conn"), Optional: true, Secondary: true},
		}, probe.TCPConnConsts()...),
		Funcs: append([]probe.FuncConst{
			{Name: "status_error_fn", Symbol: grpcModule + "/internal/status.(*Error).Error"},
			{Name: "errorstring_fn", Symbol: "errors.(*errorString).Error"},
		}, probe.TCPConnFuncs()...),
		Counters: []probe.Counter{
			{Index: uint32(bpfObsdCounterCNT_RINGBUF_FULL), Reason: "ringbuf_full", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_FULL), Reason: "inflight_map_full", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_STALE_START), Reason: "start_without_end", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_READ_FAILED), Reason: "read_failed", Lost: true},
			// In-kernel series (metrics.h): the node's map full, or the
			// process past its budget of series: sent as records instead.
			{Index: uint32(bpfObsdCounterCNT_METRICS_FULL), Reason: "metrics_map_full"},
			{Index: uint32(bpfObsdCounterCNT_METRICS_BUDGET), Reason: "metrics_budget"},
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_BUDGET), Reason: "inflight_budget", Lost: true},
			// --propagate=tcp: a stream's connection obsd cannot key, or
			// its attempt's map full: the stream carries no context.
			// A context chain deeper than the walk for the call's parent
			// reads (bpf/include/tracectx.h): the call may start a new trace.
			{Index: uint32(bpfObsdCounterCNT_CTX_WALK_DEEP), Reason: "trace_parent_too_deep"},
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_CONN), Reason: "tcp_context_conn_unknown"},
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_OUT_FULL), Reason: "tcp_context_map_full"},
		},
		ProcessMaps: map[string]int{
			"rpc_client_calls":   int(unsafe.Offsetof(bpfCallKey{}.Tgid)),
			"rpc_client_budget":  0,
			"rpc_client_ctx":     int(unsafe.Offsetof(bpfCtxKey{}.Tgid)),
			probe.CtxSpansMap:    probe.CtxSpansTGIDOffset,
			"rpc_client_metrics": int(unsafe.Offsetof(bpfRpcClientMetricKey{}.Tgid)),
			"rpc_client_names":   int(unsafe.Offsetof(bpfNameKey{}.Tgid)),
			"rpc_client_series":  0,
		},
		Metrics: probe.MetricsMap{
			Map:         "rpc_client_metrics",
			Kind:        probe.KindRPCClient,
			BoundsConst: "duration_bounds_ns",
			Decode:      DecodeMetric,
			Names:       "rpc_client_names",
			Name:        decodeName,
		},
		Spec:   loadBpf,
		Decode: Decode,
	}
}

// DecodeMetric reads one in-kernel series (an attempt not sampled for a
// span), summed over the CPUs; its method and authority are still a hash.
func DecodeMetric(key []byte, perCPU [][]byte) (probe.Histogram, error) {
	var k bpfRpcClientMetricKey
	if len(key) != int(unsafe.Sizeof(k)) {
		return probe.Histogram{}, fmt.Errorf("decoding rpc client metric: %d-byte key, want %d", len(key), unsafe.Sizeof(k))
	}
	ne := binary.NativeEndian
	pid := ne.Uint32(key[unsafe.Offsetof(k.Tgid):])
	h := probe.Histogram{
		Kind:       probe.KindRPCClient,
		PID:        pid,
		Series:     Call{Call: probe.Call{Kind: probe.KindRPCClient}, Code: ne.Uint32(key[unsafe.Offsetof(k.Code):])},
		NameHashed: true,
		NameHash:   ne.Uint64(key[unsafe.Offsetof(k.Names):]),
	}
	var err error
	if h.Buckets, h.SumNS, err = probe.SumHist(perCPU, len(bpfHist{}.Buckets)); err != nil {
		return probe.Histogram{}, fmt.Errorf("decoding rpc client metric: %w", err)
	}
	return h, nil
}

// decodeName reads the method and authority of a series (never cut: an
// attempt with a longer one is sent as a record).
func decodeName(h *probe.Histogram, val []byte) error {
	n, err := probe.DecodeName(val)
	c, ok := h.Series.(Call)
	if err != nil || !ok {
		return errors.Join(err, fmt.Errorf("rpc client series of type %T", h.Series))
	}
	c.Method, c.Authority = n.A, n.B
	h.Series = c
	return nil
}

// Decode turns one ring-buffer record into a Call.
func Decode(raw []byte) (probe.Event, error) { return DecodeCall(raw) }

// DecodeCall is Decode with its concrete type. It reads fields at their
// offsets in the generated struct: it runs once per call.
func DecodeCall(raw []byte) (Call, error) {
	if len(raw) < HeaderSize {
		return Call{}, fmt.Errorf("decoding grpc client record: %d bytes, want at least %d", len(raw), HeaderSize)
	}
	var e bpfRpcClientEvent
	ne := binary.NativeEndian
	mn := int(ne.Uint16(raw[unsafe.Offsetof(e.MethodLen):]))
	hn := int(ne.Uint16(raw[unsafe.Offsetof(e.HostLen):]))
	if HeaderSize+mn+hn > len(raw) {
		return Call{}, fmt.Errorf("decoding grpc client record: %d bytes of strings in a %d-byte record", mn+hn, len(raw))
	}
	flags := raw[unsafe.Offsetof(e.Flags)]
	data := raw[HeaderSize:]
	c := Call{
		Call: probe.Call{
			Kind:       probe.KindRPCClient,
			PID:        ne.Uint32(raw[unsafe.Offsetof(e.Tgid):]),
			StartNS:    ne.Uint64(raw[unsafe.Offsetof(e.StartNs):]),
			EndNS:      ne.Uint64(raw[unsafe.Offsetof(e.EndNs):]),
			Sampled:    flags&flagSampled != 0,
			TraceIDLow: ne.Uint64(raw[unsafe.Offsetof(e.TraceIdLow):]),
			Trace: probe.DecodeTrace(raw[unsafe.Offsetof(e.Trace)],
				ne.Uint64(raw[unsafe.Offsetof(e.TraceIdHigh):]),
				ne.Uint64(raw[unsafe.Offsetof(e.SpanId):]),
				ne.Uint64(raw[unsafe.Offsetof(e.ParentSpanId):]), nil),
		},
		Method:             string(data[:mn]),
		Authority:          string(data[mn : mn+hn]),
		Code:               ne.Uint32(raw[unsafe.Offsetof(e.Code):]),
		OtherError:         flags&flagOtherError != 0,
		MethodTruncated:    flags&flagMethodTruncated != 0,
		AuthorityTruncated: flags&flagHostTruncated != 0,
	}
	if c.EndNS < c.StartNS {
		return Call{}, fmt.Errorf("decoding grpc client record: ends at %d before its start at %d", c.EndNS, c.StartNS)
	}
	return c, nil
}
