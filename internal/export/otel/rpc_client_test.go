package otelexport

import (
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/codes"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	"github.com/obsd-dev/obsd/internal/export"
)

func TestRPCClientSpan(t *testing.T) {
	const m = "/grpc.testing.TestService/UnaryCall"
	tests := []struct {
		name      string
		call      client.Call
		wantName  string
		wantAttrs map[string]any
		wantCode  codes.Code
	}{{
		name:     "ok",
		call:     client.Call{Method: m, Authority: "127.0.0.1:50051"},
		wantName: "grpc.testing.TestService/UnaryCall",
		wantAttrs: map[string]any{"rpc.system.name": "grpc", "rpc.method": "grpc.testing.TestService/UnaryCall",
			"rpc.response.status_code": "OK", "server.address": "127.0.0.1", "server.port": int64(50051)},
	}, {
		name:     "deadline, no port",
		call:     client.Call{Method: m, Authority: "localhost", Code: 4},
		wantName: "grpc.testing.TestService/UnaryCall",
		wantAttrs: map[string]any{"rpc.system.name": "grpc", "rpc.method": "grpc.testing.TestService/UnaryCall",
			"rpc.response.status_code": "DEADLINE_EXCEEDED", "server.address": "localhost",
			"error.type": "DEADLINE_EXCEEDED"},
		wantCode: codes.Error,
	}, {
		name:     "malformed method, error of another type",
		call:     client.Call{Method: "NoSlash", Authority: "h:1", Code: 2, OtherError: true},
		wantName: "grpc",
		wantAttrs: map[string]any{"rpc.system.name": "grpc", "rpc.method": "_OTHER", "rpc.method_original": "NoSlash",
			"rpc.response.status_code": "UNKNOWN", "server.address": "h", "server.port": int64(1),
			"error.type": "UNKNOWN", "obsd.rpc.not_status_error": true},
		wantCode: codes.Error,
	}, {
		name:     "cut method",
		call:     client.Call{Method: "/pkg.S/Lo", Authority: "h:1", MethodTruncated: true},
		wantName: "grpc",
		wantAttrs: map[string]any{"rpc.system.name": "grpc", "rpc.method": "_OTHER", "rpc.method_original": "/pkg.S/Lo…",
			"rpc.response.status_code": "OK", "server.address": "h", "server.port": int64(1), "obsd.request.truncated": true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.call
			l := export.NewRPCBounds(nil).ClientLabels(export.Service{InstanceID: "h:1"}, c.Method, c.MethodTruncated, c.Authority, c.AuthorityTruncated, c.Code, 1)
			name, attrs, code := rpcClientSpan(c, l)
			if name != tt.wantName {
				t.Errorf("name = %q, want %q", name, tt.wantName)
			}
			if got := attrMap(attrs); !reflect.DeepEqual(got, tt.wantAttrs) {
				t.Errorf("attributes = %v, want %v", got, tt.wantAttrs)
			}
			if code != tt.wantCode {
				t.Errorf("status = %v, want %v", code, tt.wantCode)
			}
		})
	}
}
