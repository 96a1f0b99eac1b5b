// Package server is the probe for net/http servers: every HTTP/1 request
// net/http parsed, from serverHandler.ServeHTTP (or sendExpectationFailed)
// to (*response).finishRequest, Hijack, or the connection's close; and
// every HTTP/2 request of net/http's own HTTP/2 server (bundled up to Go
// 1.26, net/http/internal/http2 from 1.27) or golang.org/x/net/http2's,
// from ServeHTTP (or x/net's runHandler) to handlerDone, or the stream's
// reset after a panic (see probe.bpf.c for what each end reports).
package server

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// Record flags, as set by probe.bpf.c.
const (
	flagPathTruncated    = 1
	flagPatternTruncated = 2
	flagReadFailed       = 4
	flagSampled          = 8
	flagTLS              = 16
	flagMethodTruncated  = 128
)

// Methods as the probe numbers them in in-kernel keys (enum method_id);
// index 0 is any other method.
var methodNames = [...]string{"_OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// Per-process budgets in the maps every process on the node shares, as
// probe.bpf.c sets them (budget_slots, budget_series; a test checks).
const (
	// BudgetSlots bounds a process's in-flight slots (one per HTTP/1
	// connection); past it, requests of new connections are lost, counted.
	BudgetSlots = 32768
	// BudgetSeries bounds a process's in-kernel series; past it, requests
	// of new series are sent as records (nothing lost), counted.
	BudgetSeries = 2048
)

// HeaderSize is the fixed part of a record; the pattern and the path
// follow it.
const HeaderSize = int(unsafe.Sizeof(bpfHttpServerEvent{}))

func field(pkg, typ, name string) probe.Field {
	return probe.Field{Module: "std", Package: pkg, Struct: typ, Field: name}
}

// xnetModule is the module of x/net's HTTP/2 server: its offsets come
// from the binary's DWARF only (the offsets table is std's).
const xnetModule = "golang.org/x/net"

// h2Consts binds the HTTP/2 server's offsets: net/http's own, whose types
// are net/http.http2* up to Go 1.26 and net/http/internal/http2's from
// 1.27 (one constant each, set by whichever the binary has), and x/net's.
func h2Consts() []probe.Const {
	type f struct{ c, typ, name string }
	fields := []f{
		{"w_rws", "responseWriter", "rws"},
		{"rws_stream", "responseWriterState", "stream"},
		{"rws_conn", "responseWriterState", "conn"},
		{"rws_status", "responseWriterState", "status"},
		{"stream_sc", "stream", "sc"},
		{"stream_id", "stream", "id"},
		{"sc_conn", "serverConn", "conn"}, // --propagate=tcp only
	}
	var cs []probe.Const
	for _, x := range fields {
		secondary := x.c == "sc_conn" // only --propagate=tcp needs it
		cs = append(cs,
			probe.Const{Name: "off_h2_" + x.c, Field: field("net/http", "http2"+x.typ, x.name), Optional: true, Secondary: secondary},
			probe.Const{Name: "off_h2_" + x.c, Field: field("net/http/internal/http2", x.typ, x.name), Optional: true, Secondary: secondary},
			probe.Const{Name: "off_xh2_" + x.c, Optional: true, Secondary: true, Field: probe.Field{
				Module: xnetModule, Package: "golang.org/x/net/http2", Struct: x.typ, Field: x.name}},
		)
	}
	return cs
}

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "net/http/server",
		MinGo: "go1.21",
		Sites: []probe.Site{
			{Symbol: "net/http.serverHandler.ServeHTTP", Program: "http_server_start", VaddrConst: "start_site_vaddr"},
			{Symbol: "net/http.(*response).finishRequest", Program: "http_server_end", VaddrConst: "end_site_vaddr"},
			{Symbol: "net/http.(*response).sendExpectationFailed", Program: "http_server_expect", VaddrConst: "expect_site_vaddr"},
			{Symbol: "net/http.(*conn).close", Program: "http_server_close", VaddrConst: "close_site_vaddr"},
			{Symbol: "net/http.(*response).Hijack", Program: "http_server_hijack", VaddrConst: "hijack_site_vaddr", Optional: true},
			// HTTP/2. A binary has net/http's bundled types (Go 1.21-1.26)
			// or net/http/internal/http2's (1.27), never both; one program
			// and constant serve both. x/net's server may be there too.
			{Symbol: "net/http.(*http2responseWriter).handlerDone", Program: "http_server_h2_end", VaddrConst: "h2_end_site_vaddr", Optional: true},
			{Symbol: "net/http/internal/http2.(*responseWriter).handlerDone", Program: "http_server_h2_end", VaddrConst: "h2_end_site_vaddr", Optional: true},
			{Symbol: "net/http.http2handlerPanicRST.writeFrame", Program: "http_server_h2_panic", VaddrConst: "h2_panic_site_vaddr", Optional: true},
			{Symbol: "net/http/internal/http2.handlerPanicRST.writeFrame", Program: "http_server_h2_panic", VaddrConst: "h2_panic_site_vaddr", Optional: true},
			{Symbol: "golang.org/x/net/http2.(*serverConn).runHandler", Program: "http_server_xh2_start", VaddrConst: "xh2_start_site_vaddr", Optional: true},
			{Symbol: "golang.org/x/net/http2.(*responseWriter).handlerDone", Program: "http_server_xh2_end", VaddrConst: "xh2_end_site_vaddr", Optional: true},
			{Symbol: "golang.org/x/net/http2.handlerPanicRST.writeFrame", Program: "http_server_xh2_panic", VaddrConst: "xh2_panic_site_vaddr", Optional: true},
		},
		Consts: append([]probe.Const{
			{Name: "off_request_method", Field: field("net/http", "Request", "Method")},
			{Name: "off_request_url", Field: field("net/http", "Request", "URL")},
			{Name: "off_request_pattern", Field: field("net/http", "Request", "Pattern"), Optional: true},
			{Name: "off_request_pat", Field: field("net/http", "Request", "pat"), Optional: true},
			{Name: "off_pattern_str", Field: field("net/http", "pattern", "str"), Optional: true},
			// Optional until the offsets table carries it: without it, a
			// stripped binary's spans say url.scheme "http".
			{Name: "off_request_tls", Field: field("net/http", "Request", "TLS"), Optional: true},
			{Name: "off_url_path", Field: field("net/url", "URL", "Path")},
			{Name: "off_response_req", Field: field("net/http", "response", "req")},
			{Name: "off_response_status", Field: field("net/http", "response", "status")},
			{Name: "off_request_proto_major", Field: field("net/http", "Request", "ProtoMajor")},
			{Name: "off_request_proto_minor", Field: field("net/http", "Request", "ProtoMinor")},
			// Trace context only; secondary, as it is not needed otherwise.
			{Name: "off_request_header", Field: field("net/http", "Request", "Header"), Optional: true, Secondary: true},
			{Name: "off_request_ctx", Field: field("net/http", "Request", "ctx"), Optional: true, Secondary: true},
			// --propagate=tcp only: the request's connection.
			{Name: "off_response_conn", Field: field("net/http", "response", "conn"), Optional: true, Secondary: true},
			{Name: "off_conn_rwc", Field: field("net/http", "conn", "rwc"), Optional: true, Secondary: true},
		}, slices.Concat(h2Consts(), probe.TraceConsts(), probe.TCPConnConsts())...),
		Funcs: probe.TCPConnFuncs(),
		ITabs: []probe.ITabConst{{
			Name:      "response_writer_itab",
			Type:      "*net/http.response",
			Interface: "net/http.ResponseWriter",
			Methods: []string{
				"net/http.(*response).Header",
				"net/http.(*response).Write",
				"net/http.(*response).WriteHeader",
			},
		}},
		Counters: []probe.Counter{
			{Index: uint32(bpfObsdCounterCNT_RINGBUF_FULL), Reason: "ringbuf_full", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_FULL), Reason: "inflight_map_full", Lost: true},
			// An end without its start: obsd attached while the request
			// was in flight (nothing else can cause it: in-flight slots
			// are never evicted).
			{Index: uint32(bpfObsdCounterCNT_UNMATCHED_END), Reason: "end_without_start"},
			// A start found the goroutine's previous request never ended.
			{Index: uint32(bpfObsdCounterCNT_STALE_START), Reason: "start_without_end", Lost: true},
			// Target memory could not be read: no status, pattern or path
			// to trust.
			{Index: uint32(bpfObsdCounterCNT_READ_FAILED), Reason: "read_failed", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_METRICS_FULL), Reason: "metrics_map_full"},
			// The process has its budget of in-flight slots in the
			// node-wide map.
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_BUDGET), Reason: "inflight_budget", Lost: true},
			// The process has its budget of in-kernel series: sent as
			// records.
			{Index: uint32(bpfObsdCounterCNT_METRICS_BUDGET), Reason: "metrics_budget"},
			// An incoming traceparent was malformed, oversized or repeated:
			// the span started a new trace (W3C Trace Context 4.3).
			{Index: uint32(bpfObsdCounterCNT_TRACEPARENT_INVALID), Reason: "traceparent_invalid"},
			// The request's headers could not be walked for trace context
			// (too many, or a map layout obsd does not know): a new trace.
			{Index: uint32(bpfObsdCounterCNT_TRACECTX_UNREAD), Reason: "trace_context_unread"},
			// The node-wide map of in-process parents is full: client calls
			// made while serving the request start new traces.
			{Index: uint32(bpfObsdCounterCNT_CTX_MAP_FULL), Reason: "trace_parent_map_full"},
			// --propagate=tcp: a request's connection is not a TCP one obsd
			// can name (a wrapped net.Conn): its caller's context cannot
			// be joined.
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_CONN), Reason: "tcp_context_conn_unknown"},
			// --propagate=tcp: an HTTP/2 stream whose connection's latest
			// context was another stream's (bpf/include/goconn.h): a root.
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_STREAM), Reason: "tcp_context_other_stream"},
		},
		ProcessMaps: map[string]int{
			"http_server_inflight":    int(unsafe.Offsetof(bpfInflightKey{}.Tgid)),
			"http_server_budget":      0,
			probe.CtxSpansMap:         probe.CtxSpansTGIDOffset,
			"http_server_route_names": int(unsafe.Offsetof(bpfRouteNameKey{}.Tgid)),
			// Shared with the router probes, which write it (route.h).
			"obsd_shared_http_routes": 8,
		},
		Active: probe.ActiveSlots{
			Map:             "http_server_inflight",
			TGIDOffset:      int(unsafe.Offsetof(bpfInflightKey{}.Tgid)),
			StartOffset:     int(unsafe.Offsetof(bpfInflight{}.StartNs)),
			MethodLenOffset: int(unsafe.Offsetof(bpfInflight{}.MethodLen)),
			MethodOffset:    int(unsafe.Offsetof(bpfInflight{}.Method)),
		},
		Metrics: probe.MetricsMap{
			Map:              "http_server_metrics",
			Kind:             probe.KindHTTPServer,
			BoundsConst:      "duration_bounds_ns",
			RodataStartConst: "rodata_start",
			RodataEndConst:   "rodata_end",
			Decode:           DecodeMetric,
			Names:            "http_server_route_names",
			Name: func(h *probe.Histogram, val []byte) error {
				var err error
				h.Pattern, h.PatternTruncated, err = DecodeRouteName(val)
				return err
			},
		},
		Spec:   loadBpf,
		Decode: Decode,
	}
}

// DecodeMetric sums one in-kernel series over the CPUs.
func DecodeMetric(key []byte, perCPU [][]byte) (probe.Histogram, error) {
	var k bpfHttpServerMetricKey
	var v bpfHttpServerMetric
	if len(key) != int(unsafe.Sizeof(k)) {
		return probe.Histogram{}, fmt.Errorf("decoding http server metric: %d-byte key, want %d", len(key), unsafe.Sizeof(k))
	}
	ne := binary.NativeEndian
	id := int(key[unsafe.Offsetof(k.Method)])
	if id >= len(methodNames) {
		return probe.Histogram{}, fmt.Errorf("decoding http server metric: method number %d", id)
	}
	status := int(ne.Uint16(key[unsafe.Offsetof(k.Status):]))
	if status == 0 {
		return probe.Histogram{}, fmt.Errorf("decoding http server metric: status 0")
	}
	if kind := key[unsafe.Offsetof(k.RouteKind)]; kind != 0 && probe.RouterName(kind) == "" {
		return probe.Histogram{}, fmt.Errorf("decoding http server metric: router number %d", kind)
	}
	h := probe.Histogram{
		Kind:        probe.KindHTTPServer,
		PID:         ne.Uint32(key[unsafe.Offsetof(k.Tgid):]),
		Method:      methodNames[id],
		Status:      status,
		PatternAddr: ne.Uint64(key[unsafe.Offsetof(k.Pattern):]),
		PatternLen:  int(ne.Uint32(key[unsafe.Offsetof(k.PatternLen):])),
		Router:      probe.RouterName(key[unsafe.Offsetof(k.RouteKind)]),
		Protocol:    protocolVersion(key[unsafe.Offsetof(k.Proto)]),
	}
	if h.Router != "" {
		// The key holds the route's hash: its name is in the route names.
		h.NameHashed, h.NameHash, h.PatternAddr, h.PatternLen = true, h.PatternAddr, 0, 0
	}
	var err error
	if h.Buckets, h.SumNS, err = probe.SumHist(perCPU, len(v.Buckets)); err != nil {
		return probe.Histogram{}, fmt.Errorf("decoding http server metric: %w", err)
	}
	return h, nil
}

// Decode turns one ring-buffer record into a Request. It reads fields at
// their offsets in the generated struct rather than through reflection: it
// runs once per request.
func Decode(raw []byte) (probe.Event, error) { return DecodeRequest(raw) }

// DecodeRequest is Decode with its concrete type.
func DecodeRequest(raw []byte) (probe.Request, error) {
	if len(raw) < HeaderSize {
		return probe.Request{}, fmt.Errorf("decoding http server record: %d bytes, want at least %d", len(raw), HeaderSize)
	}
	var e bpfHttpServerEvent
	ne := binary.NativeEndian
	flags := raw[unsafe.Offsetof(e.Flags)]
	methodLen := min(int(raw[unsafe.Offsetof(e.MethodLen)]), len(e.Method))
	if flags&flagReadFailed != 0 {
		// The probe counts these as lost and sends none.
		return probe.Request{}, fmt.Errorf("decoding http server record: target memory unreadable")
	}
	patternLen := int(ne.Uint16(raw[unsafe.Offsetof(e.PatternLen):]))
	pathLen := int(ne.Uint16(raw[unsafe.Offsetof(e.PathLen):]))
	if HeaderSize+patternLen+pathLen > len(raw) {
		return probe.Request{}, fmt.Errorf("decoding http server record: %d bytes of strings in a %d-byte record", patternLen+pathLen, len(raw))
	}
	status := int(ne.Uint16(raw[unsafe.Offsetof(e.Status):]))
	if status == 0 {
		// The probe writes the 200 of a handler that wrote nothing.
		return probe.Request{}, fmt.Errorf("decoding http server record: status 0")
	}
	method := unsafe.Offsetof(e.Method)
	data := raw[HeaderSize:]
	r := probe.Request{
		Kind:       probe.KindHTTPServer,
		PID:        ne.Uint32(raw[unsafe.Offsetof(e.Tgid):]),
		StartNS:    ne.Uint64(raw[unsafe.Offsetof(e.StartNs):]),
		EndNS:      ne.Uint64(raw[unsafe.Offsetof(e.EndNs):]),
		Method:     internMethod(raw[method : method+uintptr(methodLen)]),
		Pattern:    string(data[:patternLen]),
		Router:     probe.RouterName(raw[unsafe.Offsetof(e.RouteKind)]),
		Path:       string(data[patternLen : patternLen+pathLen]),
		Status:     status,
		Truncated:  flags&(flagPathTruncated|flagPatternTruncated) != 0,
		TLS:        flags&flagTLS != 0,
		Protocol:   protocolVersion(raw[unsafe.Offsetof(e.Proto)]),
		Sampled:    flags&flagSampled != 0,
		TraceIDLow: ne.Uint64(raw[unsafe.Offsetof(e.TraceIdLow):]),
	}
	if r.Sampled {
		state := data[patternLen+pathLen:]
		if n := int(ne.Uint16(raw[unsafe.Offsetof(e.TracestateLen):])); n <= len(state) {
			state = state[:n]
		} else {
			return probe.Request{}, fmt.Errorf("decoding http server record: %d bytes of tracestate in a %d-byte record", n, len(raw))
		}
		r.Trace = probe.DecodeTrace(raw[unsafe.Offsetof(e.Trace)],
			ne.Uint64(raw[unsafe.Offsetof(e.TraceIdHigh):]),
			ne.Uint64(raw[unsafe.Offsetof(e.SpanId):]),
			ne.Uint64(raw[unsafe.Offsetof(e.ParentSpanId):]), state)
	}
	r.PathTruncated = flags&flagPathTruncated != 0
	r.PatternTruncated = flags&flagPatternTruncated != 0
	r.MethodTruncated = flags&flagMethodTruncated != 0
	return r, nil
}

// protocolVersion names the probe's protocol byte (major << 4 | minor) as
// semconv's network.protocol.version: "1.0", "1.1", "2"; "" when unknown.
func protocolVersion(b byte) string {
	switch b {
	case 0x10:
		return "1.0"
	case 0x11:
		return "1.1"
	case 0x20:
		return "2"
	case 0:
		return ""
	}
	if b&0x0f == 0 {
		return strconv.Itoa(int(b >> 4))
	}
	return strconv.Itoa(int(b>>4)) + "." + strconv.Itoa(int(b&0x0f))
}

// internMethod saves an allocation per request for the usual methods.
func internMethod(b []byte) string {
	switch string(b) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(b)
}

// DecodeRouteName reads one value of http_server_route_names: a router's
// route as the probe recorded it (struct route in bpf/include/route.h).
func DecodeRouteName(val []byte) (string, bool, error) {
	var r bpfRoute
	if len(val) != int(unsafe.Sizeof(r)) {
		return "", false, fmt.Errorf("decoding route name: %d bytes, want %d", len(val), unsafe.Sizeof(r))
	}
	n := int(binary.NativeEndian.Uint16(val[unsafe.Offsetof(r.Len):]))
	if n > len(r.Name) {
		return "", false, fmt.Errorf("decoding route name: length %d of at most %d", n, len(r.Name))
	}
	name := val[unsafe.Offsetof(r.Name):]
	return string(name[:n]), val[unsafe.Offsetof(r.Flags)]&routeTruncated != 0, nil
}

// routeTruncated is ROUTE_TRUNCATED of bpf/include/route.h.
const routeTruncated = 1
