package export

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// grpcCodeNames are the gRPC status codes' names as the gRPC specification
// writes them (doc/statuscodes.md), which the semantic conventions use for
// rpc.response.status_code of gRPC.
var grpcCodeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// GRPCCodeName returns the rpc.response.status_code of a gRPC status code:
// "OK", "DEADLINE_EXCEEDED", …; a code outside the specification's 0–16
// (a peer may send any number) is its decimal value.
func GRPCCodeName(code uint32) string {
	if int(code) < len(grpcCodeNames) {
		return grpcCodeNames[code]
	}
	return strconv.FormatUint(uint64(code), 10)
}

// GRPCMethod returns the semconv rpc.method of a gRPC full method: the
// path without its leading slash ("/pkg.Service/Method" →
// "pkg.Service/Method"), and ok false when the full method is not of that
// form (then rpc.method is OtherMethod and the original goes only into
// spans, as rpc.method_original).
func GRPCMethod(full string) (method string, ok bool) {
	m, found := strings.CutPrefix(full, "/")
	i := strings.IndexByte(m, '/')
	if !found || i <= 0 || i == len(m)-1 || strings.IndexByte(m[i+1:], '/') >= 0 {
		return OtherMethod, false
	}
	return m, true
}

// Bounds on the label values of RPC series per process.
const (
	// MaxRPCMethods bounds the distinct rpc_method values of one process
	// and side.
	MaxRPCMethods = 1000
	// MaxServerAddresses bounds the distinct server_address and
	// server_port pairs of one process.
	MaxServerAddresses = 100
	// MaxOtherCodes bounds the distinct rpc_response_status_code values
	// outside the gRPC specification's 0–16 of one process.
	MaxOtherCodes = 16
)

// RPCLabels are the request-derived label values of one RPC series (and
// the attributes of its span): every one bounded per process.
type RPCLabels struct {
	// Method is rpc.method: "pkg.Service/Method", or OtherMethod for a
	// malformed method or past MaxRPCMethods.
	Method string
	// Code is rpc.response.status_code (GRPCCodeName), or OtherMethod for
	// a code outside 0–16 past MaxOtherCodes.
	Code string
	// Address and Port are server.address and server.port, from the
	// call's authority; Port is "" when the authority has none. Past
	// MaxServerAddresses, Address is OtherMethod and Port "".
	Address, Port string
}

// RPCBounds keeps, per process, the label values RPC series may take:
// the first values seen are admitted for the life of the process, the
// rest replaced by an overflow value and counted (Overflows), each label's
// first overflow in a process logged once. Safe for concurrent use.
type RPCBounds struct {
	methods, addresses, codes *Bounded
}

// NewRPCBounds creates the bounds; a nil log means slog.Default().
func NewRPCBounds(log *slog.Logger) *RPCBounds {
	return &RPCBounds{
		methods:   NewBounded("rpc_method", MaxRPCMethods, OtherMethod, log),
		addresses: NewBounded("server_address", MaxServerAddresses, OtherMethod, log),
		codes:     NewBounded("rpc_response_status_code", MaxOtherCodes, OtherMethod, log),
	}
}

// ClientLabels derives the labels of n client calls of svc to fullMethod
// (truncated says the probe cut it) on authority, ended with code: n is 1
// for a call observed alone, what a series counted in the kernel counted
// since it was last labelled otherwise (an overflow counts n).
func (b *RPCBounds) ClientLabels(svc Service, fullMethod string, truncated bool, authority string, authorityCut bool, code uint32, n uint64) RPCLabels {
	var l RPCLabels
	if m, ok := GRPCMethod(fullMethod); ok && !truncated {
		l.Method, _ = b.methods.Set(svc).AdmitN(Clean(m, MaxValueLen, false), n)
	} else {
		l.Method = OtherMethod
	}
	l.Code = GRPCCodeName(code)
	if int(code) >= len(grpcCodeNames) {
		l.Code, _ = b.codes.Set(svc).AdmitN(l.Code, n)
	}
	if authority != "" && !authorityCut {
		host, port := SplitAuthority(authority)
		if v, ok := b.addresses.Set(svc).AdmitN(Clean(host, MaxValueLen, false)+"\xff"+port, n); ok {
			l.Address, l.Port, _ = strings.Cut(v, "\xff")
		} else {
			l.Address = OtherMethod
		}
	} else if authority != "" {
		l.Address = OtherMethod
	}
	return l
}

// SplitAuthority splits a gRPC :authority into server.address and
// server.port: "host:port", "[v6]:port", or a host alone (port "").
func SplitAuthority(authority string) (host, port string) {
	if h, p, err := net.SplitHostPort(authority); err == nil {
		if _, err := strconv.ParseUint(p, 10, 16); err == nil {
			return h, p
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]"), ""
}

// Forget drops an exited process's sets.
func (b *RPCBounds) Forget(instance string) {
	b.methods.Forget(instance)
	b.addresses.Forget(instance)
	b.codes.Forget(instance)
}

// Overflows returns, per process and label, how many values were replaced.
func (b *RPCBounds) Overflows() []Overflow {
	out := b.methods.Overflows()
	out = append(out, b.addresses.Overflows()...)
	return append(out, b.codes.Overflows()...)
}

// GRPCServerError says whether a gRPC server call with this code is an
// error, per the semantic conventions for gRPC: on the server side
// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
// DATA_LOSS are; the other codes are the client's doing. A code outside
// the defined ones is an error.
func GRPCServerError(code uint32) bool {
	switch code {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return int(code) >= len(grpcCodeNames)
}

// RPCMethod returns the semconv rpc.method of a gRPC full method
// ("/pkg.Service/Method" → "pkg.Service/Method"), every value valid UTF-8
// and bounded in length; truncated says the probe cut it.
func RPCMethod(full string, truncated bool) string {
	return Clean(strings.TrimPrefix(full, "/"), MaxValueLen, truncated)
}
