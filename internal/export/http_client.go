package export

import (
	"net"
	"strconv"
	"strings"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
)

// OverflowServerAddress replaces a server address past MaxServerAddresses
// (rpc.go: one bound for HTTP and gRPC clients),
// and one the probe could not copy whole.
const OverflowServerAddress = "_OTHER"

// ServerTarget returns semconv server.address and server.port of a client
// request from its URL's scheme and host ("host", "host:port", "[v6]:port"):
// the port is the URL's, else the scheme's default (80, 443), else "".
func ServerTarget(scheme, host string) (address, port string) {
	if h, p, err := net.SplitHostPort(host); err == nil {
		return strings.ToLower(h), p
	}
	address = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	switch strings.ToLower(scheme) {
	case "http":
		port = "80"
	case "https":
		port = "443"
	}
	return address, port
}

// HTTPClientLabels are the labels of one http_client_request_duration_seconds
// series besides the service's, already bounded: the agent derives them once
// per request so that the span carries the same values.
type HTTPClientLabels struct {
	Method, Status, ErrorType, Address, Port, Protocol string
}

// NewHTTPClientLabels derives the labels of r; address is the server
// address already admitted by the process's LabelSet (see Addresses).
func NewHTTPClientLabels(r client.Request, address, port string) HTTPClientLabels {
	l := HTTPClientLabels{Method: Method(r.Method), ErrorType: r.Err.String(), Address: address, Port: port}
	if r.Status != 0 {
		l.Status = strconv.Itoa(r.Status)
		l.Protocol = ProtocolVersion(r.ProtoMajor, r.ProtoMinor)
	}
	return l
}

// ProtocolVersion is semconv network.protocol.version: "1.1", "1.0", "2".
func ProtocolVersion(major, minor int) string {
	if major >= 2 {
		return strconv.Itoa(major)
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}
