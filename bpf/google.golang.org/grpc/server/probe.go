// Package server is the probe for grpc-go servers: every call a grpc.Server
// hands to (*Server).handleStream, unary or streaming, from there to the
// HTTP/2 transport's status write (see probe.bpf.c).
package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// Module is the grpc-go module path; its version (from the binary's build
// info) keys the fallback offsets table.
const Module = "google.golang.org/grpc"

// Record flags, as set by probe.bpf.c.
const (
	flagSampled         = 1
	flagMethodTruncated = 2
)

// codeUnimplemented is the status of calls the server rejects itself.
const codeUnimplemented = 12

// HeaderSize is the fixed part of a record; the method follows it.
const HeaderSize = int(unsafe.Sizeof(bpfRpcServerEvent{}))

// Call is one gRPC server call (probe.KindRPCServer), free of BPF types.
type Call struct {
	probe.Call
	// FullMethod is the method as the client sent it, e.g.
	// "/grpc.testing.TestService/UnaryCall" (may be cut, see
	// MethodTruncated).
	FullMethod      string
	MethodTruncated bool
	// Code is the gRPC status code the server wrote (0 is OK).
	Code uint32
	// Rejected says the server answered the call itself, without a
	// handler: unknown service, unknown method, or a malformed method name.
	Rejected bool
}

func field(pkg, typ, name string) probe.Field {
	return probe.Field{Module: Module, Package: pkg, Struct: typ, Field: name}
}

const transportPkg = "google.golang.org/grpc/internal/transport"

// New returns the probe declaration. The status proto's fields are keyed
// by the grpc-go version too: offsetgen reads them from a binary built with
// that grpc-go (and the genproto it requires); protobuf-go has laid out
// generated messages the same way (state, sizeCache, unknownFields, then
// the fields) since its v1.20.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "google.golang.org/grpc/server",
		MinGo: "go1.21",
		Sites: []probe.Site{
			{Symbol: "google.golang.org/grpc.(*Server).handleStream", Program: "rpc_server_start", VaddrConst: "start_site_vaddr"},
			// The status write was renamed in v1.69 (transport.Stream split
			// into ServerStream and ClientStream); a binary has one of them
			// for grpc-go's own HTTP/2 server (Serve), and for
			// (*Server).ServeHTTP's transport if the program calls it.
			{Symbol: transportPkg + ".(*http2Server).WriteStatus", Program: "rpc_server_end", Optional: true, OneOf: "end"},
			{Symbol: transportPkg + ".(*http2Server).writeStatus", Program: "rpc_server_end", Optional: true, OneOf: "end"},
			{Symbol: transportPkg + ".(*serverHandlerTransport).WriteStatus", Program: "rpc_server_end", Optional: true, OneOf: "end"},
			{Symbol: transportPkg + ".(*serverHandlerTransport).writeStatus", Program: "rpc_server_end", Optional: true, OneOf: "end"},
		},
		Consts: append([]probe.Const{
			{Name: "off_stream_method", Field: field(transportPkg, "Stream", "method")},
			{Name: "off_server_stream_stream", Field: field(transportPkg, "ServerStream", "Stream"), Optional: true},
			{Name: "off_server_stream_st", Field: field(transportPkg, "ServerStream", "st"), Optional: true},
			{Name: "off_status_s", Field: field("google.golang.org/grpc/internal/status", "Status", "s")},
			{Name: "off_spb_status_code", Field: field("google.golang.org/genproto/googleapis/rpc/status", "Status", "Code")},
			{Name: "off_spb_status_message", Field: field("google.golang.org/genproto/googleapis/rpc/status", "Status", "Message")},
			// Trace context only: the stream's context, whose innermost
			// value is the incoming metadata (see probe.bpf.c).
			{Name: "off_stream_ctx", Field: field(transportPkg, "Stream", "ctx"), Optional: true, Secondary: true},
			// --propagate=tcp only: the stream's ID and connection.
			{Name: "off_stream_id", Field: field(transportPkg, "Stream", "id"), Optional: true, Secondary: true},
			{Name: "off_h2server_conn", Field: field(transportPkg, "http2Server", "conn"), Optional: true, Secondary: true},
		}, slices.Concat(probe.TraceConsts(), probe.TCPConnConsts())...),
		Funcs: append([]probe.FuncConst{
			// handleStream's transport is grpc-go's HTTP/2 server (its
			// first method, Close, in the itab) or ServeHTTP's.
			{Name: "fn_h2server_close", Symbol: transportPkg + ".(*http2Server).Close", Optional: true},
		}, probe.TCPConnFuncs()...),
		Counters: []probe.Counter{
			{Index: uint32(bpfObsdCounterCNT_RINGBUF_FULL), Reason: "ringbuf_full", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_FULL), Reason: "inflight_map_full", Lost: true},
			// A status write without its handleStream: obsd attached
			// mid-call, or grpc-go wrote a stream's status twice.
			{Index: uint32(bpfObsdCounterCNT_UNMATCHED_END), Reason: "end_without_start"},
			{Index: uint32(bpfObsdCounterCNT_STALE_START), Reason: "start_without_end", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_READ_FAILED), Reason: "read_failed", Lost: true},
			// In-kernel series (metrics.h): the node's map full, or the
			// process past its budget of series: sent as records instead.
			{Index: uint32(bpfObsdCounterCNT_METRICS_FULL), Reason: "metrics_map_full"},
			{Index: uint32(bpfObsdCounterCNT_METRICS_BUDGET), Reason: "metrics_budget"},
			{Index: uint32(bpfObsdCounterCNT_TRACEPARENT_INVALID), Reason: "traceparent_invalid"},
			{Index: uint32(bpfObsdCounterCNT_TRACECTX_UNREAD), Reason: "trace_context_unread"},
			{Index: uint32(bpfObsdCounterCNT_CTX_MAP_FULL), Reason: "trace_parent_map_full"},
			// --propagate=tcp: a stream the connection's context could not
			// be tied to (see goconn.h), or a connection obsd cannot key.
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_STREAM), Reason: "tcp_context_other_stream"},
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_CONN), Reason: "tcp_context_conn_unknown"},
		},
		ProcessMaps: map[string]int{
			"rpc_server_inflight": int(unsafe.Offsetof(bpfInflightKey{}.Tgid)),
			probe.CtxSpansMap:     probe.CtxSpansTGIDOffset,
			"rpc_server_metrics":  int(unsafe.Offsetof(bpfRpcServerMetricKey{}.Tgid)),
			"rpc_server_names":    int(unsafe.Offsetof(bpfNameKey{}.Tgid)),
			"rpc_server_budget":   0,
		},
		Metrics: probe.MetricsMap{
			Map:         "rpc_server_metrics",
			Kind:        probe.KindRPCServer,
			BoundsConst: "duration_bounds_ns",
			Decode:      DecodeMetric,
			Names:       "rpc_server_names",
			Name:        decodeName,
		},
		Spec:   loadBpf,
		Decode: Decode,
	}
}

// DecodeMetric reads one in-kernel series (a call not sampled for a span,
// with a status other than Unimplemented), summed over the CPUs; its
// method is still a hash.
func DecodeMetric(key []byte, perCPU [][]byte) (probe.Histogram, error) {
	var k bpfRpcServerMetricKey
	if len(key) != int(unsafe.Sizeof(k)) {
		return probe.Histogram{}, fmt.Errorf("decoding rpc server metric: %d-byte key, want %d", len(key), unsafe.Sizeof(k))
	}
	ne := binary.NativeEndian
	pid := ne.Uint32(key[unsafe.Offsetof(k.Tgid):])
	h := probe.Histogram{
		Kind:       probe.KindRPCServer,
		PID:        pid,
		Series:     Call{Call: probe.Call{Kind: probe.KindRPCServer}, Code: ne.Uint32(key[unsafe.Offsetof(k.Code):])},
		NameHashed: true,
		NameHash:   ne.Uint64(key[unsafe.Offsetof(k.Method):]),
	}
	var err error
	if h.Buckets, h.SumNS, err = probe.SumHist(perCPU, len(bpfHist{}.Buckets)); err != nil {
		return probe.Histogram{}, fmt.Errorf("decoding rpc server metric: %w", err)
	}
	return h, nil
}

// decodeName reads the method of a series (never cut: a method longer
// than the probe keeps is sent as a record).
func decodeName(h *probe.Histogram, val []byte) error {
	n, err := probe.DecodeName(val)
	c, ok := h.Series.(Call)
	if err != nil || !ok {
		return errors.Join(err, fmt.Errorf("rpc server series of type %T", h.Series))
	}
	c.FullMethod = n.A
	h.Series = c
	return nil
}

// Decode turns one ring-buffer record into a Call.
func Decode(raw []byte) (probe.Event, error) { return DecodeCall(raw) }

// rejections are the starts of the messages grpc-go's handleStream writes
// for calls it answers itself (v1.x server.go: "malformed method name: %q",
// "unknown service %v", "unknown method %v for service %v"). A handler's
// own Unimplemented (the generated Unimplemented*Server says "method X not
// implemented") does not match.
var rejections = []string{"unknown service ", "unknown method ", "malformed method name"}

// DecodeCall is Decode with its concrete type.
func DecodeCall(raw []byte) (Call, error) {
	if len(raw) < HeaderSize {
		return Call{}, fmt.Errorf("decoding rpc server record: %d bytes, want at least %d", len(raw), HeaderSize)
	}
	var e bpfRpcServerEvent
	ne := binary.NativeEndian
	methodLen := int(ne.Uint16(raw[unsafe.Offsetof(e.MethodLen):]))
	stateLen := int(ne.Uint16(raw[unsafe.Offsetof(e.TracestateLen):]))
	if HeaderSize+methodLen+stateLen > len(raw) {
		return Call{}, fmt.Errorf("decoding rpc server record: %d bytes of method and %d of tracestate in a %d-byte record",
			methodLen, stateLen, len(raw))
	}
	msgLen := min(int(raw[unsafe.Offsetof(e.MessageLen)]), len(e.Message))
	flags := raw[unsafe.Offsetof(e.Flags)]
	c := Call{
		Call: probe.Call{
			Kind:    probe.KindRPCServer,
			PID:     ne.Uint32(raw[unsafe.Offsetof(e.Tgid):]),
			StartNS: ne.Uint64(raw[unsafe.Offsetof(e.StartNs):]),
			EndNS:   ne.Uint64(raw[unsafe.Offsetof(e.EndNs):]),
			Sampled: flags&flagSampled != 0,
		},
		FullMethod:      string(raw[HeaderSize : HeaderSize+methodLen]),
		MethodTruncated: flags&flagMethodTruncated != 0,
		Code:            ne.Uint32(raw[unsafe.Offsetof(e.Code):]),
	}
	if c.Sampled {
		c.TraceIDLow = ne.Uint64(raw[unsafe.Offsetof(e.TraceIdLow):])
		c.Trace = probe.DecodeTrace(raw[unsafe.Offsetof(e.Trace)],
			ne.Uint64(raw[unsafe.Offsetof(e.TraceIdHigh):]),
			ne.Uint64(raw[unsafe.Offsetof(e.SpanId):]),
			ne.Uint64(raw[unsafe.Offsetof(e.ParentSpanId):]), raw[HeaderSize+methodLen:][:stateLen])
	}
	if c.Code == codeUnimplemented {
		msg := string(raw[unsafe.Offsetof(e.Message):][:msgLen])
		for _, r := range rejections {
			if strings.HasPrefix(msg, r) {
				c.Rejected = true
			}
		}
	}
	return c, nil
}
