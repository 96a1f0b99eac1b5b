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
		Routes    []struct{ Pattern, Path, Route string }
		Sequences [][]struct{ Path, Route string }
		Methods   []struct{ Method, Label string }
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
	for i, seq := range table.Sequences {
		rs := newRouteSet()
		for _, tt := range seq {
			if got := rs.route(httptest.NewRequest("GET", tt.Path, nil)); got != tt.Route {
				t.Errorf("sequence %d, path %q: route %q, want %q", i, tt.Path, got, tt.Route)
			}
		}
	}
	for _, tt := range table.Methods {
		if got := semconvMethod(tt.Method); got != tt.Label {
			t.Errorf("method %q: %q, want %q", tt.Method, got, tt.Label)
		}
	}
}

func TestRoutesAreBounded(t *testing.T) {
	rs := newRouteSet()
	// Distinct routes that the fallback keeps: 20 words at each of two
	// positions give up to 400 routes, past the limit.
	n := 0
	for i := 0; n < MaxRoutes; i++ {
		r := httptest.NewRequest("GET", fmt.Sprintf("/w%c/x%c", 'a'+i/LearnAfter, 'a'+i%LearnAfter), nil)
		if got := rs.route(r); got == OverflowRoute {
			t.Fatalf("route %d (%s) overflowed", n, r.URL.Path)
		}
		n++
	}
	if got := rs.route(httptest.NewRequest("GET", "/one/more", nil)); got != OverflowRoute {
		t.Errorf("route past the limit %q, want %q", got, OverflowRoute)
	}
	r := httptest.NewRequest("GET", "/x/y", nil)
	r.Pattern = "GET /items/{id}"
	if got := rs.route(r); got != OverflowRoute {
		t.Errorf("a new pattern past the limit %q, want %q: one limit for every route", got, OverflowRoute)
	}
	if got := rs.route(httptest.NewRequest("GET", "/wa/xa", nil)); got != "/wa/xa" {
		t.Errorf("a route already seen %q, want /wa/xa", got)
	}
}
