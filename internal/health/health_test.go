package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// get serves one request through a mux with the real routes and decodes
// the body strictly: exactly the keys "status" and "checks".
func get(t *testing.T, c *Checker, path string) (int, Response, time.Duration) {
	t.Helper()
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	start := time.Now()
	res, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	took := time.Since(start)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&raw); err != nil {
		t.Fatalf("decoding body: %v", err)
	}
	if len(raw) != 2 || raw["status"] == nil || raw["checks"] == nil {
		t.Fatalf("body keys = %v, want exactly status and checks", raw)
	}
	var resp Response
	if err := json.Unmarshal(raw["status"], &resp.Status); err != nil {
		t.Fatalf("status is not a string: %s", raw["status"])
	}
	if err := json.Unmarshal(raw["checks"], &resp.Checks); err != nil {
		t.Fatalf("checks is not an object of strings: %s", raw["checks"])
	}
	return res.StatusCode, resp, took
}

func TestHandlers(t *testing.T) {
	ok := func(context.Context) error { return nil }
	fail := func(context.Context) error { return errors.New("db: connection refused") }
	// ignoresCtx overruns the deadline and does not listen to ctx.
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	ignoresCtx := func(context.Context) error { <-stuck; return nil }
	honoursCtx := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	panics := func(context.Context) error { panic("boom") }
	degraded := func(context.Context) error { return Degraded(errors.New("headers refused")) }
	// Only Degraded's own error is informational: wrapped or joined with
	// another, it may carry a real failure.
	wrappedDegraded := func(context.Context) error { return fmt.Errorf("db: %w", Degraded(errors.New("slow"))) }
	joinedDegraded := func(context.Context) error { return errors.Join(errors.New("db down"), Degraded(errors.New("slow"))) }
	nilDegraded := func(context.Context) error { return Degraded(nil) }
	ownDeadline := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		<-ctx.Done()
		return ctx.Err()
	}

	type named struct {
		name string
		f    Check
	}
	tests := []struct {
		name       string
		live       []named
		ready      []named
		path       string
		wantCode   int
		wantStatus string
		wantChecks map[string]string
	}{
		{name: "no checks", path: "/readyz", wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{}},
		{name: "all ok", ready: []named{{"a", ok}, {"b", ok}}, path: "/readyz",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"a": "ok", "b": "ok"}},
		{name: "one fails", ready: []named{{"config", ok}, {"db", fail}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"config": "ok", "db": "db: connection refused"}},
		{name: "timeout, check ignores ctx", ready: []named{{"slow", ignoresCtx}, {"fast", ok}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"slow": "timed out after 100ms", "fast": "ok"}},
		{name: "timeout, check honours ctx", ready: []named{{"slow", honoursCtx}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"slow": "timed out after 100ms"}},
		{name: "check's own deadline is its error", ready: []named{{"q", ownDeadline}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"q": "context deadline exceeded"}},
		{name: "panic is a failure", live: []named{{"p", panics}, {"g", ok}}, path: "/healthz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"p": "check panicked: boom", "g": "ok"}},
		{name: "liveness ignores readiness", live: []named{{"g", ok}}, ready: []named{{"db", fail}}, path: "/healthz",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"g": "ok"}},
		{name: "readiness ignores liveness", live: []named{{"p", panics}}, ready: []named{{"db", ok}}, path: "/readyz",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"db": "ok"}},
		{name: "sub-path runs one check", ready: []named{{"db", ok}, {"cache", fail}}, path: "/readyz/db",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"db": "ok"}},
		{name: "sub-path failing check", ready: []named{{"db", ok}, {"cache", fail}}, path: "/readyz/cache",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"cache": "db: connection refused"}},
		{name: "sub-path unknown check", ready: []named{{"db", ok}}, path: "/readyz/nope",
			wantCode: 404, wantStatus: "failure", wantChecks: map[string]string{"nope": "unknown check"}},
		{name: "degraded keeps readiness", ready: []named{{"db", ok}, {"propagation", degraded}}, path: "/readyz",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"db": "ok", "propagation": "degraded: headers refused"}},
		{name: "degraded beside a failure", ready: []named{{"db", fail}, {"propagation", degraded}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"db": "db: connection refused", "propagation": "degraded: headers refused"}},
		{name: "degraded sub-path", ready: []named{{"propagation", degraded}}, path: "/readyz/propagation",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"propagation": "degraded: headers refused"}},
		{name: "wrapped degraded fails", ready: []named{{"db", wrappedDegraded}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"db": "db: degraded: slow"}},
		{name: "joined degraded fails", ready: []named{{"db", joinedDegraded}}, path: "/readyz",
			wantCode: 503, wantStatus: "failure", wantChecks: map[string]string{"db": "db down\ndegraded: slow"}},
		{name: "Degraded(nil) is ok", ready: []named{{"x", nilDegraded}}, path: "/readyz",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"x": "ok"}},
		{name: "liveness sub-path", live: []named{{"g", ok}}, path: "/healthz/g",
			wantCode: 200, wantStatus: "ok", wantChecks: map[string]string{"g": "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(100 * time.Millisecond)
			for _, n := range tt.live {
				c.AddLiveness(n.name, n.f)
			}
			for _, n := range tt.ready {
				c.AddReadiness(n.name, n.f)
			}
			code, resp, took := get(t, c, tt.path)
			if code != tt.wantCode || resp.Status != tt.wantStatus || !reflect.DeepEqual(resp.Checks, tt.wantChecks) {
				t.Errorf("GET %s = %d %+v, want %d %s %v", tt.path, code, resp, tt.wantCode, tt.wantStatus, tt.wantChecks)
			}
			// Nothing may hold the response past the deadline.
			if took > time.Second {
				t.Errorf("response took %v with a 100ms check timeout", took)
			}
		})
	}
}

func TestChecksRunConcurrently(t *testing.T) {
	c := New(time.Second)
	for _, name := range []string{"a", "b", "c", "d"} {
		c.AddReadiness(name, func(ctx context.Context) error {
			select {
			case <-time.After(200 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	code, resp, took := get(t, c, "/readyz")
	if code != 200 || resp.Status != "ok" {
		t.Fatalf("GET /readyz = %d %+v", code, resp)
	}
	if took >= 600*time.Millisecond {
		t.Errorf("4 checks of 200ms took %v; they did not run concurrently", took)
	}
}

func TestHungCheckNotRestarted(t *testing.T) {
	c := New(50 * time.Millisecond)
	release := make(chan struct{})
	var runs atomic.Int32
	c.AddLiveness("loop", func(context.Context) error { runs.Add(1); <-release; return nil })

	_, first, _ := get(t, c, "/healthz")
	_, second, _ := get(t, c, "/healthz")
	if first.Checks["loop"] != "timed out after 50ms" ||
		second.Checks["loop"] != "timed out after 50ms" {
		t.Errorf("checks = %q then %q", first.Checks["loop"], second.Checks["loop"])
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("hung check started %d times, want 1", n)
	}
	close(release)
	// Once it returns, the next probe runs it again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, resp, _ := get(t, c, "/healthz")
		if code == 200 && resp.Checks["loop"] == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check never recovered: %d %+v", code, resp)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("check started %d times, want 2", n)
	}
}

func TestBareHandlers(t *testing.T) {
	// Mounted without a {check} wildcard, the handlers run everything.
	c := New(0)
	if c.timeout != DefaultTimeout {
		t.Errorf("New(0) timeout = %v, want %v", c.timeout, DefaultTimeout)
	}
	c.AddReadiness("r", func(context.Context) error { return nil })
	c.AddLiveness("l", func(context.Context) error { return errors.New("bad") })
	for _, tt := range []struct {
		h        http.Handler
		wantCode int
		wantBody string
	}{
		{c.Readyz(), 200, `{"status":"ok","checks":{"r":"ok"}}` + "\n"},
		{c.Healthz(), 503, `{"status":"failure","checks":{"l":"bad"}}` + "\n"},
	} {
		rec := httptest.NewRecorder()
		tt.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/anything", nil))
		if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
			t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
		}
	}
}

func TestAddRefusesBadChecks(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name    string
		check   string
		f       Check
		wantMsg string
	}{
		{"empty name", "", ok, "empty name"},
		{"slash", "a/b", ok, `"a/b" contains '/'`},
		{"nil", "x", nil, `"x" is nil`},
		{"twice", "dup", ok, `"dup" added twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(0)
			c.AddReadiness("dup", ok)
			c.AddLiveness("dup", ok) // the two lists are separate
			defer func() {
				p := recover()
				if s, _ := p.(string); !strings.Contains(s, tt.wantMsg) {
					t.Errorf("panic = %v, want one containing %q", p, tt.wantMsg)
				}
			}()
			c.AddReadiness(tt.check, tt.f)
		})
	}
}

func TestProcessChecks(t *testing.T) {
	hb := NewHeartbeat(50 * time.Millisecond)
	tests := []struct {
		name    string
		f       Check
		wantErr string
	}{
		{"goroutines below a high limit", GoroutineLimit(1 << 20), ""},
		{"goroutines over a limit of 1", GoroutineLimit(1), "goroutines, limit 1"},
		{"heap below 1 TiB", HeapLimit(1 << 40), ""},
		{"heap over 1 byte", HeapLimit(1), "bytes, limit 1"},
		{"fresh heartbeat", hb.Check, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f(t.Context())
			if tt.wantErr == "" && err != nil {
				t.Fatalf("check = %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("check = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	hb := NewHeartbeat(50 * time.Millisecond)
	if err := hb.Check(t.Context()); err != nil {
		t.Fatalf("right after creation: %v", err)
	}
	time.Sleep(80 * time.Millisecond)
	if err := hb.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "no heartbeat for") {
		t.Fatalf("after 80ms without a beat: %v, want a failure", err)
	}
	hb.Beat()
	if err := hb.Check(t.Context()); err != nil {
		t.Fatalf("after a beat: %v", err)
	}
	if d := NewHeartbeat(0).maxAge; d != time.Minute {
		t.Errorf("NewHeartbeat(0) max age = %v, want 1m", d)
	}
}

func TestHeapLimitTracksAllocation(t *testing.T) {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	keep := make([]byte, 64<<20)
	limit := before + 32<<20
	if err := HeapLimit(limit)(t.Context()); err == nil {
		t.Errorf("heap with a live 64 MiB slice passed a limit of %d (heap before %d)", limit, before)
	}
	runtime.KeepAlive(keep)
}
