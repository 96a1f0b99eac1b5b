package manual

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/health_rules.json is the one behaviour of this package's health
// code and obsd's internal/health, whose tests read the same file.
type healthRules struct {
	DefaultCheckTimeoutMS int `json:"default_check_timeout_ms"`
	Limits                []struct {
		Limit, Value uint64
		Fail         bool
	} `json:"limits"`
	Heartbeats []struct {
		MaxAgeMS int64 `json:"max_age_ms"`
		AgeMS    int64 `json:"age_ms"`
		Fail     bool
	} `json:"heartbeats"`
}

func TestSharedHealthRules(t *testing.T) {
	b, err := os.ReadFile("testdata/health_rules.json")
	if err != nil {
		t.Fatal(err)
	}
	var r healthRules
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
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
