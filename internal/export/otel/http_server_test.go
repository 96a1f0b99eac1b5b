package otelexport

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

func TestHTTPServerSpan(t *testing.T) {
	tests := []struct {
		name      string
		req       probe.Request
		wantName  string
		wantAttrs map[string]any
		wantCode  codes.Code
	}{
		{
			name:     "matched pattern with method",
			req:      probe.Request{Method: "GET", Path: "/items/42", Pattern: "GET /items/{id}", Status: 200},
			wantName: "GET /items/{id}",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/items/42",
				"http.response.status_code": int64(200), "http.route": "/items/{id}", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "over TLS",
			req:      probe.Request{Method: "GET", Path: "/items/42", Pattern: "GET /items/{id}", Status: 200, TLS: true},
			wantName: "GET /items/{id}",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "https", "url.path": "/items/42",
				"http.response.status_code": int64(200), "http.route": "/items/{id}", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "over HTTP/2",
			req:      probe.Request{Method: "GET", Path: "/items/42", Pattern: "GET /items/{id}", Status: 200, TLS: true, Protocol: "2"},
			wantName: "GET /items/{id}",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "https", "url.path": "/items/42", "network.protocol.version": "2",
				"http.response.status_code": int64(200), "http.route": "/items/{id}", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "pattern with host",
			req:      probe.Request{Method: "POST", Path: "/a/b", Pattern: "POST example.com/a/", Status: 201},
			wantName: "POST /a/",
			wantAttrs: map[string]any{
				"http.request.method": "POST", "url.scheme": "http", "url.path": "/a/b",
				"http.response.status_code": int64(201), "http.route": "/a/", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "no pattern: the fallback route, as in metrics",
			req:      probe.Request{Method: "DELETE", Path: "/x/42", Status: 404},
			wantName: "DELETE /x/{param}",
			wantAttrs: map[string]any{
				"http.request.method": "DELETE", "url.scheme": "http", "url.path": "/x/42",
				"http.response.status_code": int64(404), "http.route": "/x/{param}", "obsd.route.source": "fallback",
			},
		},
		{
			name:     "non-standard method",
			req:      probe.Request{Method: "PURGE", Path: "/cache", Pattern: "/cache", Status: 204},
			wantName: "HTTP /cache",
			wantAttrs: map[string]any{
				"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
				"url.scheme": "http", "url.path": "/cache",
				"http.response.status_code": int64(204), "http.route": "/cache", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "non-standard method without pattern",
			req:      probe.Request{Method: "get", Path: "/", Status: 200},
			wantName: "HTTP /",
			wantAttrs: map[string]any{
				"http.request.method": "_OTHER", "http.request.method_original": "get",
				"url.scheme": "http", "url.path": "/", "http.response.status_code": int64(200),
				"http.route": "/", "obsd.route.source": "fallback",
			},
		},
		{
			name:     "5xx is an error",
			req:      probe.Request{Method: "GET", Path: "/boom", Pattern: "/boom", Status: 503},
			wantName: "GET /boom",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/boom",
				"http.response.status_code": int64(503), "http.route": "/boom", "error.type": "503", "obsd.route.source": "pattern",
			},
			wantCode: codes.Error,
		},
		{
			name:     "4xx stays unset",
			req:      probe.Request{Method: "GET", Path: "/nope", Status: 499},
			wantName: "GET /nope",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/nope",
				"http.response.status_code": int64(499), "http.route": "/nope", "obsd.route.source": "fallback",
			},
		},
		{
			name:     "truncated path is marked",
			req:      probe.Request{Method: "GET", Path: "/very/long", Status: 200, Truncated: true, PathTruncated: true},
			wantName: "GET /very/*",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/very/long…",
				"http.response.status_code": int64(200), "obsd.request.truncated": true,
				"http.route": "/very/*", "obsd.route.source": "fallback",
			},
		},
		{
			// The probe cut the path inside 本 (3 bytes: E6 9C AC).
			name:     "path cut inside a character",
			req:      probe.Request{Method: "GET", Path: "/日\xe6\x9c", Status: 200, Truncated: true, PathTruncated: true},
			wantName: "GET /*",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/日…",
				"http.response.status_code": int64(200), "obsd.request.truncated": true,
				"http.route": "/*", "obsd.route.source": "fallback",
			},
		},
		{
			name:     "invalid bytes in path and pattern",
			req:      probe.Request{Method: "GET", Path: "/a\xffb/", Pattern: "/a\xffb/", Status: 301},
			wantName: "GET /a\uFFFDb/",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/a\uFFFDb/",
				"http.response.status_code": int64(301), "http.route": "/a\uFFFDb/", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "method cut by the probe",
			req:      probe.Request{Method: "ABCDEFGHIJKLMNOP", Path: "/", Pattern: "/", Status: 200, MethodTruncated: true},
			wantName: "HTTP /",
			wantAttrs: map[string]any{
				"http.request.method": "_OTHER", "http.request.method_original": "ABCDEFGHIJKLMNOP…",
				"url.scheme": "http", "url.path": "/",
				"http.response.status_code": int64(200), "http.route": "/", "obsd.route.source": "pattern",
			},
		},
		{
			name:     "malformed pattern gives the overflow route",
			req:      probe.Request{Method: "GET", Path: "/p", Pattern: "GET nohost", Status: 200},
			wantName: "GET /*",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/p",
				"http.response.status_code": int64(200), "http.route": "/*", "obsd.route.source": "overflow",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := export.NewRoutes(nil).Route(export.Service{InstanceID: "h:1"}, tt.req)
			name, attrs, code := httpServerSpan(tt.req, route)
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

func attrMap(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		if _, dup := m[string(kv.Key)]; dup {
			m["DUPLICATE "+string(kv.Key)] = true
		}
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// monoNow reads the clock bpf_ktime_get_ns reads.
func monoNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatalf("reading CLOCK_MONOTONIC: %v", err)
	}
	return uint64(ts.Nano())
}

func TestClock(t *testing.T) {
	c, err := newClock()
	if err != nil {
		t.Fatal(err)
	}
	checkNear := func(t *testing.T) {
		t.Helper()
		m := monoNow(t)
		got := c.wall(m)
		if d := time.Since(got); d < -time.Millisecond || d > time.Millisecond {
			t.Fatalf("wall(now) is %v off time.Now()", d)
		}
	}
	checkNear(t)

	// A stale sync with a wrong offset must be corrected by the next
	// conversion of a later timestamp.
	m := monoNow(t)
	c.offset.Store(c.offset.Load() + int64(time.Hour))
	c.synced.Store(int64(m) - int64(2*resyncEvery))
	checkNear(t)

	// A timestamp from before the last sync converts with the current offset.
	off := c.offset.Load()
	if got, want := c.wall(m-uint64(time.Second)), time.Unix(0, int64(m)-int64(time.Second)+off); !got.Equal(want) {
		t.Fatalf("wall(earlier) = %v, want %v", got, want)
	}
}

// TestCleanResource: the OTLP exporter's protobuf refuses strings that are
// not UTF-8, which costs the whole batch; a resource built from a target's
// environment may hold any bytes.
func TestCleanResource(t *testing.T) {
	long := strings.Repeat("長", 100) // 300 bytes
	res := cleanResource(resource.NewSchemaless(
		attribute.String("service.name", "shop-\xff"),
		attribute.String("k\xfe", "v"),
		attribute.String("note", long),
		attribute.Int("process.pid", 7),
	))
	want := map[string]any{
		"service.name": "shop-\uFFFD",
		"k\uFFFD":      "v",
		"note":         long[:252] + export.CutMark,
		"process.pid":  int64(7),
	}
	if got := attrMap(res.Attributes()); !reflect.DeepEqual(got, want) {
		t.Errorf("cleanResource = %v, want %v", got, want)
	}
	clean := resource.NewSchemaless(attribute.String("a", "b"))
	if cleanResource(clean) != clean {
		t.Error("a clean resource was rebuilt")
	}
}
