package otelexport

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
)

func TestRPCServerSpan(t *testing.T) {
	tests := []struct {
		name     string
		call     server.Call
		method   string
		wantName string
		want     map[attribute.Key]string
		status   codes.Code
	}{
		{
			name: "ok", call: server.Call{FullMethod: "/a.B/C"}, method: "a.B/C", wantName: "a.B/C",
			want: map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "a.B/C", "rpc.response.status_code": "OK"},
		},
		{
			name: "client's fault is no server error", call: server.Call{FullMethod: "/a.B/C", Code: 5}, method: "a.B/C", wantName: "a.B/C",
			want: map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "a.B/C", "rpc.response.status_code": "NOT_FOUND"},
		},
		{
			name: "internal", call: server.Call{FullMethod: "/a.B/C", Code: 13}, method: "a.B/C", wantName: "a.B/C",
			want:   map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "a.B/C", "rpc.response.status_code": "INTERNAL", "error.type": "INTERNAL"},
			status: codes.Error,
		},
		{
			name: "unknown service", call: server.Call{FullMethod: "/no.such.S/M", Code: 12, Rejected: true}, method: "_OTHER", wantName: "grpc",
			want: map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "_OTHER", "rpc.method_original": "no.such.S/M",
				"rpc.response.status_code": "UNIMPLEMENTED", "error.type": "UNIMPLEMENTED"},
			status: codes.Error,
		},
		{
			name: "code outside the defined ones", call: server.Call{FullMethod: "/a.B/C", Code: 99}, method: "a.B/C", wantName: "a.B/C",
			want:   map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "a.B/C", "rpc.response.status_code": "99", "error.type": "99"},
			status: codes.Error,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, attrs, status := rpcServerSpan(tt.call, tt.method)
			if name != tt.wantName || rpcServerSpanName(tt.method) != tt.wantName {
				t.Errorf("name %q, want %q", name, tt.wantName)
			}
			got := map[attribute.Key]string{}
			for _, a := range attrs {
				got[a.Key] = a.Value.Emit()
			}
			if len(got) != len(tt.want) {
				t.Errorf("attributes %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if status != tt.status {
				t.Errorf("status %v, want %v", status, tt.status)
			}
		})
	}
}
