package health

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// healthRules is manual/testdata/health_rules.json: the one behaviour that
// obsd's health code and manual/'s share. manual/ is a module of its own
// and may not import this package, so both test suites read one table.
type healthRules struct {
	DefaultCheckTimeoutMS int `json:"default_check_timeout_ms"`
	Texts                 struct {
		TimeoutAtDefault string `json:"timeout_at_default"`
		PanicBoom        string `json:"panic_boom"`
		UnknownCheck     string `json:"unknown_check"`
	} `json:"texts"`
	Limits []struct {
		Limit, Value uint64
		Fail         bool
	} `json:"limits"`
	Heartbeats []struct {
		MaxAgeMS int64 `json:"max_age_ms"`
		AgeMS    int64 `json:"age_ms"`
		Fail     bool
	} `json:"heartbeats"`
}

func readRules(t *testing.T) healthRules {
	t.Helper()
	b, err := os.ReadFile("../../manual/testdata/health_rules.json")
	if err != nil {
		t.Fatalf("reading the shared health rules: %v", err)
	}
	var r healthRules
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("decoding the shared health rules: %v", err)
	}
	if len(r.Limits) == 0 || len(r.Heartbeats) == 0 {
		t.Fatal("shared health rules are empty")
	}
	return r
}

func TestSharedHealthRules(t *testing.T) {
	r := readRules(t)
	if got := time.Duration(r.DefaultCheckTimeoutMS) * time.Millisecond; DefaultTimeout != got || New(0).timeout != got {
		t.Errorf("default check timeout %v, shared rule %v", DefaultTimeout, got)
	}
	for _, l := range r.Limits {
		if got := overLimit(l.Value, l.Limit); got != l.Fail {
			t.Errorf("value %d, limit %d: fail=%v, rule says %v", l.Value, l.Limit, got, l.Fail)
		}
	}
	for _, h := range r.Heartbeats {
		maxAge := time.Duration(h.MaxAgeMS) * time.Millisecond
		hb := NewHeartbeat(maxAge)
		// Place the latest beat age ago on the heartbeat's own clock.
		hb.last.Store(int64(time.Since(hb.base) - time.Duration(h.AgeMS)*time.Millisecond))
		err := hb.Check(t.Context())
		if (err != nil) != h.Fail {
			t.Errorf("age %dms, max %v: %v, rule says fail=%v", h.AgeMS, maxAge, err, h.Fail)
		}
	}
}

func TestHeartbeatUsesTheMonotonicClock(t *testing.T) {
	// A time.Time read by time.Now carries a monotonic reading, printed as
	// "m=+…"; without one, a wall-clock step would move every age.
	if s := NewHeartbeat(time.Second).base.String(); !strings.Contains(s, " m=") {
		t.Errorf("heartbeat base %q has no monotonic reading", s)
	}
}

func TestLimitChecksAtTheBoundary(t *testing.T) {
	if err := GoroutineLimit(-1)(t.Context()); err == nil {
		t.Error("GoroutineLimit(-1) passed")
	}
	if err := HeapLimit(0)(t.Context()); err == nil {
		t.Error("HeapLimit(0) passed with a non-empty heap")
	}
	if err := GoroutinesBelow(1)(t.Context()); err == nil || !strings.Contains(err.Error(), "limit 0") {
		t.Errorf("GoroutinesBelow(1) = %v, want the failure of GoroutineLimit(0)", err)
	}
}

func TestSharedHealthTexts(t *testing.T) {
	r := readRules(t)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	c := New(0)
	c.AddReadiness("hung", func(context.Context) error { <-stuck; return nil })
	c.AddReadiness("buggy", func(context.Context) error { panic("boom") })
	_, resp, _ := get(t, c, "/readyz")
	if resp.Checks["hung"] != r.Texts.TimeoutAtDefault || resp.Checks["buggy"] != r.Texts.PanicBoom {
		t.Errorf("checks %v, shared texts %q and %q", resp.Checks, r.Texts.TimeoutAtDefault, r.Texts.PanicBoom)
	}
	if code, resp, _ := get(t, c, "/readyz/nope"); code != 404 || resp.Checks["nope"] != r.Texts.UnknownCheck {
		t.Errorf("unknown check: %d %v, shared text %q", code, resp.Checks, r.Texts.UnknownCheck)
	}
}
