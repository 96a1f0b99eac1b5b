package export

import (
	"strconv"
	"strings"
)

// MaxRPCMethods bounds the distinct rpc_method values of one process (a
// server's registered methods are few; past the bound, new methods are
// OtherMethod and counted).
const MaxRPCMethods = 500

// grpcCodes are the names of gRPC status codes 0..16 as the semantic
// conventions' rpc.response.status_code gives them ("OK",
// "DEADLINE_EXCEEDED"): the upper-case names of grpc/status.proto.
var grpcCodes = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// GRPCCodeName returns the semconv rpc.response.status_code of a gRPC code:
// its name, or its decimal value for a code outside the 17 defined ones.
func GRPCCodeName(code uint32) string {
	if int(code) < len(grpcCodes) {
		return grpcCodes[code]
	}
	return strconv.FormatUint(uint64(code), 10)
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
	return int(code) >= len(grpcCodes)
}

// RPCMethod returns the semconv rpc.method of a gRPC full method
// ("/pkg.Service/Method" → "pkg.Service/Method"), every value valid UTF-8
// and bounded in length; truncated says the probe cut it.
func RPCMethod(full string, truncated bool) string {
	return Clean(strings.TrimPrefix(full, "/"), MaxValueLen, truncated)
}
