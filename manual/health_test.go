package manual_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHealthServer serves h's probe routes on a loopback server.
func newHealthServer(t *testing.T, h *manual.Health) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { h.Close() })
	return srv
}

type probeAnswer struct {
	code        int
	contentType string
	body        string
	report      manual.Report
}

func probe(t *testing.T, url string) probeAnswer {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	a := probeAnswer{code: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(b)}
	if err := json.Unmarshal(b, &a.report); err != nil {
		t.Fatalf("GET %s: body %q is not JSON: %v", url, b, err)
	}
	return a
}

func TestProbeAnswers(t *testing.T) {
	ok := func(context.Context) error { return nil }
	bad := func(context.Context) error { return errors.New("connection refused") }
	tests := []struct {
		name     string
		live     map[string]manual.Check
		ready    map[string]manual.Check
		path     string
		wantCode int
		wantBody string
	}{
		{"liveness ok lists every check", map[string]manual.Check{"a": ok}, nil, "/healthz", 200, `{"status":"ok","checks":{"a":"ok"}}`},
		{"liveness ok, two checks", map[string]manual.Check{"a": ok, "b": ok}, nil, "/healthz", 200, `{"status":"ok","checks":{"a":"ok","b":"ok"}}`},
		{"readiness ok lists shutdown too", nil, map[string]manual.Check{"db": ok}, "/readyz", 200, `{"status":"ok","checks":{"db":"ok","shutdown":"ok"}}`},
		{"readiness failure lists every check", nil, map[string]manual.Check{"db": bad, "redis": ok}, "/readyz", 503, `{"status":"failure","checks":{"db":"connection refused","redis":"ok","shutdown":"ok"}}`},
		{"exclude the failing check", nil, map[string]manual.Check{"db": bad, "redis": ok}, "/readyz?exclude=db", 200, `{"status":"ok","checks":{"redis":"ok","shutdown":"ok"}}`},
		{"sub-path of a failing check", nil, map[string]manual.Check{"db": bad, "redis": ok}, "/readyz/db", 503, `{"status":"failure","checks":{"db":"connection refused"}}`},
		{"sub-path of a passing check", nil, map[string]manual.Check{"db": bad, "redis": ok}, "/readyz/redis", 200, `{"status":"ok","checks":{"redis":"ok"}}`},
		{"unknown sub-path", nil, map[string]manual.Check{"db": ok}, "/readyz/nope", 404, `{"status":"failure","checks":{"nope":"unknown check"}}`},
		{"readiness does not run liveness checks", map[string]manual.Check{"heap": bad}, nil, "/readyz", 200, `{"status":"ok","checks":{"shutdown":"ok"}}`},
		{"liveness does not run readiness checks", nil, map[string]manual.Check{"db": bad}, "/healthz", 200, `{"status":"ok","checks":{}}`},
		{"liveness sub-path", map[string]manual.Check{"heap": bad}, nil, "/healthz/heap", 503, `{"status":"failure","checks":{"heap":"connection refused"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
			for n, c := range tt.live {
				h.MustAdd(manual.Liveness, n, c, manual.CheckOpts{})
			}
			for n, c := range tt.ready {
				h.MustAdd(manual.Readiness, n, c, manual.CheckOpts{})
			}
			srv := newHealthServer(t, h)
			a := probe(t, srv.URL+tt.path)
			if a.code != tt.wantCode {
				t.Errorf("status %d, want %d", a.code, tt.wantCode)
			}
			if a.contentType != "application/json" {
				t.Errorf("Content-Type %q, want application/json", a.contentType)
			}
			if got := strings.TrimSpace(a.body); got != tt.wantBody {
				t.Errorf("body\n got %s\nwant %s", got, tt.wantBody)
			}
		})
	}
}

func TestSlowCheckTimesOut(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Timeout: 200 * time.Millisecond, Logger: quietLogger()})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	// One check ignores its context entirely, one honours it.
	h.MustAdd(manual.Readiness, "stuck", func(context.Context) error { <-release; return nil }, manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "polite", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "fast", func(context.Context) error { return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)

	start := time.Now()
	a := probe(t, srv.URL+"/readyz?verbose")
	took := time.Since(start)
	if took > 900*time.Millisecond {
		t.Errorf("probe took %s; a slow check must not block it past its 200ms deadline", took)
	}
	if a.code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", a.code)
	}
	if got := a.report.Checks["stuck"]; got != "timed out after 200ms" {
		t.Errorf("stuck check reported %q", got)
	}
	if got := a.report.Checks["polite"]; !strings.HasPrefix(got, "timed out after 200ms") {
		t.Errorf("polite check reported %q", got)
	}
	if got := a.report.Checks["fast"]; got != "ok" {
		t.Errorf("fast check reported %q", got)
	}
}

func TestDefaultTimeoutIsUnderTheKubeletsSecond(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.MustAdd(manual.Readiness, "hung", func(context.Context) error { <-release; return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)
	// The kubelet's default: timeoutSeconds 1. The 503 must beat it.
	client := &http.Client{Timeout: time.Second}
	start := time.Now()
	resp, err := client.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatalf("probe with the kubelet's 1 s timeout: %v (the 503 came too late)", err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if took < manual.DefaultCheckTimeout || took > 950*time.Millisecond {
		t.Errorf("hung check answered after %s, want between %s and 950ms", took, manual.DefaultCheckTimeout)
	}
}

func TestPanickingCheckFailsTheProbe(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	h.MustAdd(manual.Liveness, "buggy", func(context.Context) error { panic("boom") }, manual.CheckOpts{})
	h.MustAdd(manual.Liveness, "fine", func(context.Context) error { return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)
	for range 2 { // the process survives the first panic and answers again
		a := probe(t, srv.URL+"/healthz")
		if a.code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", a.code)
		}
		if got := a.report.Checks["buggy"]; got != "check panicked: boom" {
			t.Fatalf("buggy check reported %q", got)
		}
	}
}

func TestDrainFailsReadinessOnly(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	h.MustAdd(manual.Liveness, "goroutines", manual.GoroutineCheck(100_000), manual.CheckOpts{})
	h.MustAdd(manual.Readiness, "config", func(context.Context) error { return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)

	if a := probe(t, srv.URL+"/readyz"); a.code != 200 {
		t.Fatalf("before drain: readyz %d", a.code)
	}
	h.Drain()
	if !h.Draining() {
		t.Error("Draining() false after Drain")
	}
	a := probe(t, srv.URL+"/readyz")
	if a.code != 503 || a.report.Checks[manual.ShutdownCheckName] != "process is shutting down" {
		t.Errorf("after drain: readyz %d %s", a.code, a.body)
	}
	if a := probe(t, srv.URL+"/readyz/shutdown"); a.code != 503 {
		t.Errorf("after drain: readyz/shutdown %d", a.code)
	}
	if a := probe(t, srv.URL+"/healthz"); a.code != 200 {
		t.Errorf("after drain: healthz %d %s, want 200", a.code, a.body)
	}
}

func TestBackgroundCheckServesCachedResult(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	var runs atomic.Int32
	var healthy atomic.Bool
	gate := make(chan struct{})
	h.MustAdd(manual.Readiness, "expensive", func(context.Context) error {
		if runs.Add(1) == 1 {
			<-gate // hold the first run so the pending state is visible
		}
		if !healthy.Load() {
			return errors.New("not healthy")
		}
		return nil
	}, manual.CheckOpts{Interval: 30 * time.Millisecond})
	srv := newHealthServer(t, h)

	a := probe(t, srv.URL+"/readyz/expensive")
	if a.code != 503 || a.report.Checks["expensive"] != "check has not completed yet" {
		t.Fatalf("before the first run: %d %s", a.code, a.body)
	}
	healthy.Store(true)
	close(gate)
	waitFor(t, 2*time.Second, func() bool { return probe(t, srv.URL+"/readyz").code == 200 })

	// Probes do not run the check: many probes, few runs.
	before, began := runs.Load(), time.Now()
	for range 50 {
		probe(t, srv.URL+"/readyz")
	}
	allowed := int32(time.Since(began)/(30*time.Millisecond)) + 3
	if d := runs.Load() - before; d > allowed {
		t.Errorf("50 probes caused %d runs (interval allows %d); a background check must run on its interval only", d, allowed)
	}
	healthy.Store(false)
	waitFor(t, 2*time.Second, func() bool { return probe(t, srv.URL+"/readyz").code == 503 })

	h.Close()
	stopped := runs.Load()
	time.Sleep(100 * time.Millisecond)
	if runs.Load() != stopped {
		t.Error("background check still runs after Close")
	}
}

func TestStuckCheckRunsOnceForConcurrentProbes(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Timeout: 300 * time.Millisecond, Logger: quietLogger()})
	var runs atomic.Int32
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.MustAdd(manual.Readiness, "stuck", func(context.Context) error {
		runs.Add(1)
		<-release
		return nil
	}, manual.CheckOpts{})
	srv := newHealthServer(t, h)

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if a := probe(t, srv.URL+"/readyz"); a.code != 503 {
				t.Errorf("status %d, want 503", a.code)
			}
		})
	}
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Errorf("20 concurrent probes started %d runs of a stuck check, want 1", n)
	}
}

func TestAddRejectsBadInput(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name  string
		kind  manual.Kind
		check string
		fn    manual.Check
		opts  manual.CheckOpts
		want  string
	}{
		{"empty name", manual.Readiness, "", ok, manual.CheckOpts{}, "name must match"},
		{"slash in name", manual.Readiness, "a/b", ok, manual.CheckOpts{}, "name must match"},
		{"nil check", manual.Liveness, "x", nil, manual.CheckOpts{}, "check is nil"},
		{"reserved shutdown", manual.Readiness, manual.ShutdownCheckName, ok, manual.CheckOpts{}, "already registered"},
		{"unknown kind", manual.Kind(7), "x", ok, manual.CheckOpts{}, "unknown kind"},
		{"negative timeout", manual.Liveness, "x", ok, manual.CheckOpts{Timeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := manual.NewHealth(manual.HealthOpts{})
			defer h.Close()
			err := h.Add(tt.kind, tt.check, tt.fn, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Add: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	h := manual.NewHealth(manual.HealthOpts{})
	h.MustAdd(manual.Liveness, "dup", ok, manual.CheckOpts{})
	if err := h.AddLiveness("dup", ok, manual.CheckOpts{}); err == nil {
		t.Error("duplicate name accepted")
	}
	if err := h.AddReadiness("dup", ok, manual.CheckOpts{}); err != nil {
		t.Errorf("same name in the other kind: %v", err)
	}
	h.Close()
	if err := h.AddLiveness("late", ok, manual.CheckOpts{}); err == nil {
		t.Error("Add after Close accepted")
	}
}

func TestProcessLocalChecks(t *testing.T) {
	hb := manual.NewHeartbeat(manual.HeartbeatOpts{MaxAge: 50 * time.Millisecond})
	tests := []struct {
		name    string
		check   manual.Check
		prepare func()
		wantErr string
	}{
		{"goroutines under limit", manual.GoroutineCheck(1_000_000), nil, ""},
		{"goroutines over limit", manual.GoroutineCheck(1), nil, "goroutines, limit 1"},
		{"heap under limit", manual.HeapCheck(1 << 40), nil, ""},
		{"heap over limit", manual.HeapCheck(1), nil, "limit 1"},
		{"fresh heartbeat", hb.Check, hb.Beat, ""},
		{"stale heartbeat", hb.Check, func() { time.Sleep(80 * time.Millisecond) }, "no heartbeat for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare()
			}
			err := tt.check(context.Background())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDependencyChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	db := sql.OpenDB(tcpConnector{addr: addr})
	t.Cleanup(func() { db.Close() })
	db.SetMaxIdleConns(0) // every ping dials, so a closed listener shows at once

	var loaded atomic.Bool
	checks := map[string]manual.Check{
		"dial": manual.DialCheck("tcp", addr),
		"db":   manual.PingCheck(db),
		"flag": manual.FlagCheck(&loaded, "configuration load"),
	}
	ctx := context.Background()
	for name, c := range checks {
		if name == "flag" {
			if err := c(ctx); err == nil || err.Error() != "configuration load not yet done" {
				t.Errorf("flag before Store: %v", err)
			}
			loaded.Store(true)
		}
		if err := c(ctx); err != nil {
			t.Errorf("%s with the dependency up: %v", name, err)
		}
	}
	ln.Close()
	for _, name := range []string{"dial", "db"} {
		if err := checks[name](ctx); err == nil {
			t.Errorf("%s with the dependency down: no error", name)
		}
	}
}

// tcpConnector is a database/sql driver whose connections are TCP
// connections, so that PingCheck runs against a real *sql.DB and a real
// socket.
type tcpConnector struct{ addr string }

func (c tcpConnector) Connect(ctx context.Context) (driver.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	return tcpConn{nc}, nil
}

func (c tcpConnector) Driver() driver.Driver { return nil }

type tcpConn struct{ net.Conn }

func (tcpConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (tcpConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }
func (c tcpConn) Ping(context.Context) error        { return nil }
func (c tcpConn) Close() error                      { return c.Conn.Close() }

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
