package otelexport

import (
	"testing"

	"go.opentelemetry.io/otel/codes"

	"github.com/obsd-dev/obsd/bpf/net/http/client"
	"github.com/obsd-dev/obsd/internal/export"
)

func TestURLFull(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    client.Request
		want string
	}{
		{"no query", client.Request{Scheme: "https", Host: "api:8443", Path: "/v1"}, "https://api:8443/v1"},
		{"values redacted", client.Request{Scheme: "http", Host: "h", Path: "/p", RawQuery: "token=secret&a=1&flag"},
			"http://h/p?token=REDACTED&a=REDACTED&flag"},
		{"cut parameter dropped", client.Request{Scheme: "http", Host: "h", Path: "/", RawQuery: "a=1&tok", QueryTruncated: true},
			"http://h/?a=REDACTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := URLFull(tc.r); got != tc.want {
				t.Errorf("URLFull = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTPClientSpan(t *testing.T) {
	ok := client.Request{Method: "GET", Scheme: "http", Host: "h:81", Path: "/x", Status: 503, ProtoMajor: 1, ProtoMinor: 1}
	refused := client.Request{Method: "PURGE", Scheme: "http", Host: "h:81", Path: "/x", Err: client.ErrConnectionRefused}
	for _, tc := range []struct {
		name   string
		r      client.Request
		want   map[string]string
		status codes.Code
	}{
		{"5xx", ok, map[string]string{"http.request.method": "GET", "http.response.status_code": "503",
			"network.protocol.version": "1.1", "server.address": "h", "server.port": "81", "url.full": "http://h:81/x"}, codes.Error},
		{"refused", refused, map[string]string{"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
			"error.type": "connection_refused", "server.address": "h", "server.port": "81"}, codes.Error},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := export.NewHTTPClientLabels(tc.r, "h", "81")
			attrs, status := httpClientSpan(tc.r, l)
			got := map[string]string{}
			for _, a := range attrs {
				got[string(a.Key)] = a.Value.Emit()
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
			if status != tc.status {
				t.Errorf("status %v, want %v", status, tc.status)
			}
		})
	}
}
