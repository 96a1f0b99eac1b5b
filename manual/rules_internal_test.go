package manual

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/health_rules.json is the one behaviour of this package's health
// code and obsd's internal/health, whose tests read the same file.
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
	b, err := os.ReadFile("testdata/health_rules.json")
	if err != nil {
		t.Fatal(err)
	}
	var r healthRules
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSharedHealthTexts(t *testing.T) {
	r := readRules(t)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	h := NewHealth(HealthOpts{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer h.Close()
	h.MustAdd(Readiness, "hung", func(context.Context) error { <-stuck; return nil }, CheckOpts{})
	h.MustAdd(Readiness, "buggy", func(context.Context) error { panic("boom") }, CheckOpts{})
	mux := http.NewServeMux()
	h.Routes(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var rep Report
	json.Unmarshal(rec.Body.Bytes(), &rep)
	if rep.Checks["hung"] != r.Texts.TimeoutAtDefault || rep.Checks["buggy"] != r.Texts.PanicBoom {
		t.Errorf("checks %v, shared texts %q and %q", rep.Checks, r.Texts.TimeoutAtDefault, r.Texts.PanicBoom)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz/nope", nil))
	json.Unmarshal(rec.Body.Bytes(), &rep)
	if rec.Code != 404 || rep.Checks["nope"] != r.Texts.UnknownCheck {
		t.Errorf("unknown check: %d %s, shared text %q", rec.Code, rec.Body, r.Texts.UnknownCheck)
	}
}

func TestSharedHealthRules(t *testing.T) {
	r := readRules(t)
	if len(r.Limits) == 0 || len(r.Heartbeats) == 0 {
		t.Fatal("shared health rules are empty")
	}
	if got := time.Duration(r.DefaultCheckTimeoutMS) * time.Millisecond; DefaultCheckTimeout != got || NewHealth(HealthOpts{}).timeout != got {
		t.Errorf("default check timeout %v, shared rule %v", DefaultCheckTimeout, got)
	}
	for _, l := range r.Limits {
		if got := overLimit(l.Value, l.Limit); got != l.Fail {
			t.Errorf("value %d, limit %d: fail=%v, rule says %v", l.Value, l.Limit, got, l.Fail)
		}
	}
	for _, h := range r.Heartbeats {
		maxAge := time.Duration(h.MaxAgeMS) * time.Millisecond
		hb := NewHeartbeat(HeartbeatOpts{MaxAge: maxAge})
		hb.last.Store(int64(time.Since(hb.base) - time.Duration(h.AgeMS)*time.Millisecond))
		err := hb.Check(context.Background())
		if (err != nil) != h.Fail {
			t.Errorf("age %dms, max %v: %v, rule says fail=%v", h.AgeMS, maxAge, err, h.Fail)
		}
	}
}

func TestHeartbeatUsesTheMonotonicClock(t *testing.T) {
	// time.Now's monotonic reading prints as "m=+…"; without it a forward
	// step of the wall clock would fail liveness.
	if s := NewHeartbeat(HeartbeatOpts{}).base.String(); !strings.Contains(s, " m=") {
		t.Errorf("heartbeat base %q has no monotonic reading", s)
	}
}
