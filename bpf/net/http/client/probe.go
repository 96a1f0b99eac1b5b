package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// Record flags, as set by probe.bpf.c.
const (
	flagSampled         = 1
	flagMethodTruncated = 2
	flagHostTruncated   = 4
	flagPathTruncated   = 8
	flagQueryTruncated  = 16
)

// ErrorKind says why a round trip got no response (enum error_kind in
// probe.bpf.c). Its String is the semconv error.type value obsd exports.
type ErrorKind uint8

const (
	// ErrNone: a response came (Request.Status is set).
	ErrNone ErrorKind = iota
	// ErrOther is any error the probe does not classify.
	ErrOther
	// ErrTimeout is a deadline: context.DeadlineExceeded (http.Client's
	// Timeout, a context deadline), a dial or I/O deadline, or net/http's
	// own timeouts (response headers, TLS handshake).
	ErrTimeout
	// ErrConnectionRefused is a connect that got ECONNREFUSED.
	ErrConnectionRefused
	// ErrContextCanceled is context.Canceled (the request's context was
	// canceled), also as net's "operation was canceled" for a dial.
	ErrContextCanceled
	// ErrTLS is a TLS handshake failure: certificate verification, an
	// alert from the peer, or a peer that does not speak TLS.
	ErrTLS
)

// String returns the error.type value, "" for ErrNone.
func (k ErrorKind) String() string {
	switch k {
	case ErrNone:
		return ""
	case ErrTimeout:
		return "timeout"
	case ErrConnectionRefused:
		return "connection_refused"
	case ErrContextCanceled:
		return "context_canceled"
	case ErrTLS:
		return "tls"
	}
	return "_OTHER"
}

// Request is one round trip of an http.Transport (probe.KindHTTPClient):
// one hop, so a redirected http.Client request is several.
type Request struct {
	probe.Call
	// Method is the request method as sent (METHOD_MAX bytes at most, see
	// MethodTruncated).
	Method string
	// Scheme and Host are the request URL's (url.URL.Scheme and Host):
	// Host is "host" or "host:port", never the userinfo.
	Scheme, Host string
	// Path and RawQuery are the URL's, copied for sampled requests only.
	Path, RawQuery string
	// Status is the response's status code; 0 when Err says why none came.
	Status int
	// ProtoMajor and ProtoMinor are the response's HTTP version (1.1,
	// 2.0); 0 without a response.
	ProtoMajor, ProtoMinor int
	Err                    ErrorKind
	// Truncation of the strings above, each cut to the record's size.
	MethodTruncated, HostTruncated, PathTruncated, QueryTruncated bool
}

// HeaderSize is the fixed part of a record; the path and query follow.
const HeaderSize = int(unsafe.Sizeof(bpfHttpClientEvent{}))

func field(pkg, typ, name string) probe.Field {
	return probe.Field{Module: "std", Package: pkg, Struct: typ, Field: name}
}

// h2ClientConsts are --propagate=tcp's offsets for HTTP/2 round trips: the
// h2 client stream and connection (net/http.http2* up to Go 1.26,
// net/http/internal/http2's from 1.27: one constant each, set by whichever
// the binary has), and the goroutine ids that lead from the stream's
// writer to the round trip's caller (runtime.g, Go 1.21+).
func h2ClientConsts() []probe.Const {
	var cs []probe.Const
	for _, x := range []struct{ c, typ, name string }{
		{"off_h2cs_cc", "clientStream", "cc"},
		{"off_h2cs_id", "clientStream", "ID"},
		{"off_h2cc_tconn", "ClientConn", "tconn"},
	} {
		cs = append(cs,
			probe.Const{Name: x.c, Field: field("net/http", "http2"+x.typ, x.name), Optional: true, Secondary: true},
			probe.Const{Name: x.c, Field: field("net/http/internal/http2", x.typ, x.name), Optional: true, Secondary: true})
	}
	return append(cs,
		probe.Const{Name: "off_g_goid", Field: field("runtime", "g", "goid"), Optional: true, Secondary: true},
		probe.Const{Name: "off_g_parentgoid", Field: field("runtime", "g", "parentGoid"), Optional: true, Secondary: true})
}

// New returns the probe declaration.
func New() *probe.Probe {
	const roundTrip = "net/http.(*Transport).roundTrip"
	return &probe.Probe{
		Name:  "net/http/client",
		MinGo: "go1.21",
		Sites: []probe.Site{
			{Symbol: roundTrip, Program: "http_client_start", VaddrConst: "start_site_vaddr"},
			{Symbol: roundTrip, Program: "http_client_end", Returns: true},
			{Symbol: "net/http.(*persistConn).roundTrip", Program: "http_client_conn", VaddrConst: "conn_site_vaddr", Optional: true, When: probe.TCPPropagateConst},
			// HTTP/2: the bundled h2 client up to Go 1.26, internal/http2 in 1.27.
			{Symbol: "net/http.(*http2clientStream).encodeAndWriteHeaders", Program: "http_client_h2", VaddrConst: "h2_site_vaddr",
				Optional: true, When: probe.TCPStreamsWhen},
			{Symbol: "net/http/internal/http2.(*clientStream).encodeAndWriteHeaders", Program: "http_client_h2", VaddrConst: "h2_site_vaddr",
				Optional: true, When: probe.TCPStreamsWhen},
		},
		Consts: append([]probe.Const{
			{Name: "off_request_method", Field: field("net/http", "Request", "Method")},
			{Name: "off_request_url", Field: field("net/http", "Request", "URL")},
			{Name: "off_url_scheme", Field: field("net/url", "URL", "Scheme")},
			{Name: "off_url_host", Field: field("net/url", "URL", "Host")},
			{Name: "off_url_path", Field: field("net/url", "URL", "Path")},
			{Name: "off_url_rawquery", Field: field("net/url", "URL", "RawQuery")},
			{Name: "off_response_statuscode", Field: field("net/http", "Response", "StatusCode")},
			{Name: "off_response_protomajor", Field: field("net/http", "Response", "ProtoMajor")},
			{Name: "off_response_protominor", Field: field("net/http", "Response", "ProtoMinor")},
			// Optional: without them, the errors they classify are _OTHER.
			{Name: "off_operror_err", Field: field("net", "OpError", "Err"), Optional: true},
			{Name: "off_syscallerror_err", Field: field("os", "SyscallError", "Err"), Optional: true},
			{Name: "off_httperror_timeout", Field: field("net/http", "httpError", "timeout"), Optional: true},
			// Trace context only: the request's context, walked for the
			// server span it was made under.
			{Name: "off_request_ctx", Field: field("net/http", "Request", "ctx"), Optional: true, Secondary: true},
			// --propagate=tcp only: the round trip's HTTP/1 connection.
			{Name: "off_persistconn_conn", Field: field("net/http", "persistConn", "conn"), Optional: true, Secondary: true},
		}, slices.Concat(h2ClientConsts(), probe.TCPConnConsts())...),
		Funcs: append([]probe.FuncConst{
			{Name: "fn_op_error", Symbol: "net.(*OpError).Error", Optional: true},
			{Name: "fn_syscall_error", Symbol: "os.(*SyscallError).Error", Optional: true},
			{Name: "fn_poll_deadline", Symbol: "internal/poll.(*DeadlineExceededError).Error", Optional: true},
			{Name: "fn_net_timeout", Symbol: "net.(*timeoutError).Error", Optional: true},
			{Name: "fn_ctx_deadline", Symbol: "context.(*deadlineExceededError).Error", Optional: true},
			{Name: "fn_error_string", Symbol: "errors.(*errorString).Error", Optional: true},
			{Name: "fn_http_error", Symbol: "net/http.(*httpError).Error", Optional: true},
			{Name: "fn_tls_verify", Symbol: "crypto/tls.(*CertificateVerificationError).Error", Optional: true},
			{Name: "fn_tls_record", Symbol: "crypto/tls.(*RecordHeaderError).Error", Optional: true},
			{Name: "fn_tls_alert", Symbol: "crypto/tls.(*AlertError).Error", Optional: true},
			{Name: "fn_x509_unknown_ca", Symbol: "crypto/x509.(*UnknownAuthorityError).Error", Optional: true},
			{Name: "fn_x509_hostname", Symbol: "crypto/x509.(*HostnameError).Error", Optional: true},
		}, probe.TCPConnFuncs()...),
		Counters: []probe.Counter{
			{Index: uint32(bpfObsdCounterCNT_RINGBUF_FULL), Reason: "ringbuf_full", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_INFLIGHT_FULL), Reason: "inflight_map_full", Lost: true},
			// A return without its entry: obsd attached mid-call.
			{Index: uint32(bpfObsdCounterCNT_UNMATCHED_END), Reason: "end_without_start"},
			{Index: uint32(bpfObsdCounterCNT_STALE_START), Reason: "start_without_end", Lost: true},
			{Index: uint32(bpfObsdCounterCNT_READ_FAILED), Reason: "read_failed", Lost: true},
			// In-kernel series (metrics.h): the node's map full, or the
			// process past its budget of series: sent as records instead.
			{Index: uint32(bpfObsdCounterCNT_METRICS_FULL), Reason: "metrics_map_full"},
			{Index: uint32(bpfObsdCounterCNT_METRICS_BUDGET), Reason: "metrics_budget"},
			// A context chain deeper than the walk for the call's parent
			// reads (bpf/include/tracectx.h): the call may start a new trace.
			{Index: uint32(bpfObsdCounterCNT_CTX_WALK_DEEP), Reason: "trace_parent_too_deep"},
			// --propagate=tcp: a round trip whose connection obsd cannot
			// name (a custom DialContext's wrapped net.Conn, an HTTP/2
			// stream whose layout is unknown), or a full obsd_tcp_out or
			// goroutine map: its server starts a new trace.
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_CONN), Reason: "tcp_context_conn_unknown"},
			{Index: uint32(bpfObsdCounterCNT_TCPCTX_OUT_FULL), Reason: "tcp_context_map_full"},
		},
		ProcessMaps: map[string]int{
			"http_client_inflight": int(unsafe.Offsetof(bpfInflightKey{}.Tgid)),
			"http_client_goids":    int(unsafe.Offsetof(bpfGoidKey{}.Tgid)),
			probe.CtxSpansMap:      probe.CtxSpansTGIDOffset,
			"http_client_metrics":  int(unsafe.Offsetof(bpfHttpClientMetricKey{}.Tgid)),
			"http_client_names":    int(unsafe.Offsetof(bpfNameKey{}.Tgid)),
			"http_client_series":   0,
		},
		Metrics: probe.MetricsMap{
			Map:         "http_client_metrics",
			Kind:        probe.KindHTTPClient,
			BoundsConst: "duration_bounds_ns",
			Decode:      DecodeMetric,
			Names:       "http_client_names",
			Name:        decodeName,
		},
		Spec:   loadBpf,
		Decode: Decode,
	}
}

// DecodeMetric reads one in-kernel series (a round trip not sampled for a
// span), summed over the CPUs; its method, scheme and host are still a
// hash.
func DecodeMetric(key []byte, perCPU [][]byte) (probe.Histogram, error) {
	var k bpfHttpClientMetricKey
	if len(key) != int(unsafe.Sizeof(k)) {
		return probe.Histogram{}, fmt.Errorf("decoding http client metric: %d-byte key, want %d", len(key), unsafe.Sizeof(k))
	}
	ne := binary.NativeEndian
	proto := key[unsafe.Offsetof(k.Proto)]
	r := Request{Call: probe.Call{Kind: probe.KindHTTPClient}, Status: int(ne.Uint16(key[unsafe.Offsetof(k.Status):])),
		ProtoMajor: int(proto >> 4), ProtoMinor: int(proto & 15), Err: ErrorKind(key[unsafe.Offsetof(k.ErrorKind)])}
	h := probe.Histogram{
		Kind:       probe.KindHTTPClient,
		PID:        ne.Uint32(key[unsafe.Offsetof(k.Tgid):]),
		Series:     r,
		NameHashed: true,
		NameHash:   ne.Uint64(key[unsafe.Offsetof(k.Names):]),
	}
	var err error
	if h.Buckets, h.SumNS, err = probe.SumHist(perCPU, len(bpfHist{}.Buckets)); err != nil {
		return probe.Histogram{}, fmt.Errorf("decoding http client metric: %w", err)
	}
	return h, nil
}

// Schemes of a series, in its name's flags (NAME_SCHEME_* of probe.bpf.c):
// the probe counts only these two in the kernel.
var nameSchemes = map[uint8]string{1: "http", 2: "https"}

// decodeName reads the method, host and scheme of a series (never cut: a
// round trip with a longer method or host is sent as a record).
func decodeName(h *probe.Histogram, val []byte) error {
	n, err := probe.DecodeName(val)
	r, ok := h.Series.(Request)
	if err != nil || !ok {
		return errors.Join(err, fmt.Errorf("http client series of type %T", h.Series))
	}
	if r.Scheme, ok = nameSchemes[n.Flags]; !ok {
		return fmt.Errorf("http client series with scheme number %d", n.Flags)
	}
	r.Method, r.Host = n.A, n.B
	h.Series = r
	return nil
}

// Decode turns one ring-buffer record into a Request.
func Decode(raw []byte) (probe.Event, error) { return DecodeRequest(raw) }

// DecodeRequest is Decode with its concrete type.
func DecodeRequest(raw []byte) (Request, error) {
	var e bpfHttpClientEvent
	if len(raw) < HeaderSize {
		return Request{}, fmt.Errorf("decoding http client record: %d bytes, want at least %d", len(raw), HeaderSize)
	}
	ne := binary.NativeEndian
	pathLen := int(ne.Uint16(raw[unsafe.Offsetof(e.PathLen):]))
	queryLen := int(ne.Uint16(raw[unsafe.Offsetof(e.QueryLen):]))
	if HeaderSize+pathLen+queryLen > len(raw) {
		return Request{}, fmt.Errorf("decoding http client record: %d bytes of strings in a %d-byte record", pathLen+queryLen, len(raw))
	}
	str := func(off uintptr, n, max int) string {
		return string(raw[off : off+uintptr(min(n, max))])
	}
	flags := raw[unsafe.Offsetof(e.Flags)]
	status := int(ne.Uint16(raw[unsafe.Offsetof(e.Status):]))
	kind := ErrorKind(raw[unsafe.Offsetof(e.ErrorKind)])
	if kind > ErrTLS {
		return Request{}, fmt.Errorf("decoding http client record: error kind %d", kind)
	}
	if (status == 0) == (kind == ErrNone) {
		return Request{}, fmt.Errorf("decoding http client record: status %d with error kind %d", status, kind)
	}
	data := raw[HeaderSize:]
	r := Request{
		Call: probe.Call{
			Kind:       probe.KindHTTPClient,
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
		Method:          internMethod(raw[unsafe.Offsetof(e.Method) : unsafe.Offsetof(e.Method)+uintptr(min(int(raw[unsafe.Offsetof(e.MethodLen)]), len(e.Method)))]),
		Scheme:          str(unsafe.Offsetof(e.Scheme), int(raw[unsafe.Offsetof(e.SchemeLen)]), len(e.Scheme)),
		Host:            str(unsafe.Offsetof(e.Host), int(raw[unsafe.Offsetof(e.HostLen)]), len(e.Host)),
		Path:            string(data[:pathLen]),
		RawQuery:        string(data[pathLen : pathLen+queryLen]),
		Status:          status,
		ProtoMajor:      int(raw[unsafe.Offsetof(e.ProtoMajor)]),
		ProtoMinor:      int(raw[unsafe.Offsetof(e.ProtoMinor)]),
		Err:             kind,
		MethodTruncated: flags&flagMethodTruncated != 0,
		HostTruncated:   flags&flagHostTruncated != 0,
		PathTruncated:   flags&flagPathTruncated != 0,
		QueryTruncated:  flags&flagQueryTruncated != 0,
	}
	return r, nil
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
	}
	return string(b)
}
