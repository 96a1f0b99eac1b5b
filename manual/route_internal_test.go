package manual

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
)

// testdata/routes.json holds obsd's route and method rules; obsd's
// internal/export/prom tests read the same file.
func TestRoutesFollowObsdsRules(t *testing.T) {
	b, err := os.ReadFile("testdata/routes.json")
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		Routes  []struct{ Pattern, Path, Route string }
		Methods []struct{ Method, Label string }
	}
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Routes) == 0 || len(table.Methods) == 0 {
		t.Fatal("empty table")
	}
	for _, tt := range table.Routes {
		r := httptest.NewRequest("GET", tt.Path, nil)
		r.Pattern = tt.Pattern
		if got := newRouteSet().route(r); got != tt.Route {
			t.Errorf("pattern %q path %q: route %q, want %q", tt.Pattern, tt.Path, got, tt.Route)
		}
	}
	for _, tt := range table.Methods {
		if got := semconvMethod(tt.Method); got != tt.Label {
			t.Errorf("method %q: %q, want %q", tt.Method, got, tt.Label)
		}
	}
}

func TestFallbackRoutesAreBounded(t *testing.T) {
	rs := newRouteSet()
	for i := range MaxFallbackRoutes {
		r := httptest.NewRequest("GET", fmt.Sprintf("/w%c%c", 'a'+i/26, 'a'+i%26), nil)
		if got := rs.route(r); got == OverflowRoute {
			t.Fatalf("route %d overflowed", i)
		}
	}
	if got := rs.route(httptest.NewRequest("GET", "/one-more", nil)); got != OverflowRoute {
		t.Errorf("route past the limit %q, want %q", got, OverflowRoute)
	}
	if got := rs.route(httptest.NewRequest("GET", "/waa", nil)); got != "/waa" {
		t.Errorf("a route already seen %q, want /waa", got)
	}
}
