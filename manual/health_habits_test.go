package manual_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFailureThresholdToleratesAFewFailures(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	var healthy atomic.Bool
	h.MustAdd(manual.Readiness, "flaky", func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("refused")
	}, manual.CheckOpts{FailureThreshold: 3})
	srv := newHealthServer(t, h)
	for i, want := range []int{200, 200, 503, 503} {
		a := probe(t, srv.URL+"/readyz?verbose")
		if a.code != want {
			t.Fatalf("probe %d: %d %s, want %d", i+1, a.code, a.body, want)
		}
		d := a.report.Details["flaky"]
		if d.ConsecutiveFailures != i+1 || d.Error != "refused" {
			t.Errorf("probe %d details %+v, want %d consecutive failures and the error", i+1, d, i+1)
		}
	}
	healthy.Store(true)
	a := probe(t, srv.URL+"/readyz?verbose")
	if a.code != 200 || a.report.Details["flaky"].ConsecutiveFailures != 0 || a.report.Details["flaky"].LastSuccess == nil {
		t.Errorf("after a success: %d %s", a.code, a.body)
	}
	healthy.Store(false)
	if a := probe(t, srv.URL+"/readyz"); a.code != 200 {
		t.Errorf("one failure after a success must be tolerated again: %d %s", a.code, a.body)
	}
}

func TestNonCriticalCheckIsShownNotCounted(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	h.MustAdd(manual.Readiness, "recommendations", func(context.Context) error { return errors.New("down") }, manual.CheckOpts{NonCritical: true})
	srv := newHealthServer(t, h)
	a := probe(t, srv.URL+"/readyz")
	if a.code != 200 || strings.TrimSpace(a.body) != `{"status":"ok","checks":{"recommendations":"down","shutdown":"ok"}}` {
		t.Errorf("got %d %s", a.code, a.body)
	}
	a = probe(t, srv.URL+"/readyz/recommendations?verbose")
	if a.code != 200 || a.report.Details["recommendations"].Critical || a.report.Details["recommendations"].Status != "failure" {
		t.Errorf("sub-path: %d %s", a.code, a.body)
	}
}

func TestVerboseDetailsHaveDurationsAndTimestamps(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	h.MustAdd(manual.Liveness, "slowish", func(context.Context) error { time.Sleep(30 * time.Millisecond); return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)
	before := time.Now()
	a := probe(t, srv.URL+"/healthz?verbose")
	d, ok := a.report.Details["slowish"]
	if !ok {
		t.Fatalf("no details in %s", a.body)
	}
	if d.DurationSeconds < 0.030 || d.DurationSeconds > 0.5 {
		t.Errorf("duration %vs, want the 30 ms the check slept", d.DurationSeconds)
	}
	if d.CheckedAt == nil || d.CheckedAt.Before(before) || d.LastSuccess == nil || d.Status != "ok" || !d.Critical {
		t.Errorf("details %+v", d)
	}
	if !strings.Contains(a.body, `"checked_at":"`) || !strings.Contains(a.body, `Z"`) {
		t.Errorf("timestamps are not RFC 3339 UTC: %s", a.body)
	}
	if b := probe(t, srv.URL+"/healthz").body; strings.Contains(b, "details") {
		t.Errorf("details without ?verbose: %s", b)
	}
}

func TestPerCheckMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger(), Registerer: reg, Timeout: 100 * time.Millisecond})
	var healthy atomic.Bool
	healthy.Store(true)
	h.MustAdd(manual.Readiness, "db", func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("refused")
	}, manual.CheckOpts{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.MustAdd(manual.Liveness, "hung", func(context.Context) error { <-release; return nil }, manual.CheckOpts{})
	srv := newHealthServer(t, h)

	probe(t, srv.URL+"/readyz")
	healthy.Store(false)
	probe(t, srv.URL+"/readyz")
	probe(t, srv.URL+"/healthz")
	probe(t, srv.URL+"/healthz") // the run is still stuck: a second timeout

	want := `
# HELP health_check_status 1 when the health check passes (after its failure threshold), 0 when it fails.
# TYPE health_check_status gauge
health_check_status{check="db",kind="readiness"} 0
health_check_status{check="hung",kind="liveness"} 0
health_check_status{check="shutdown",kind="readiness"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "health_check_status"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "health_check_duration_seconds"); n != 3 {
		t.Errorf("%d duration series, want 3", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "health_check_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "check" {
					counts[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if counts["db"] != 2 || counts["hung"] != 2 || counts["shutdown"] != 2 {
		t.Errorf("runs per check %v, want db 2, hung 2, shutdown 2", counts)
	}
}
