package prom

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// manual/ (a module of its own) copies obsd's route and method rules so
// that its http_server_request_duration_seconds joins obsd's; both test
// suites read manual/testdata/routes.json.
func TestManualSharesTheRouteRules(t *testing.T) {
	b, err := os.ReadFile("../../../manual/testdata/routes.json")
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
		got := export.NewRoutes(nil).Route(export.Service{InstanceID: "i"}, probe.Request{Pattern: tt.Pattern, Path: tt.Path}).Value
		if got != tt.Route {
			t.Errorf("pattern %q path %q: route %q, want %q", tt.Pattern, tt.Path, got, tt.Route)
		}
	}
	for i, seq := range table.Sequences {
		rt := export.NewRoutes(nil)
		for _, tt := range seq {
			got := rt.Route(export.Service{InstanceID: "i"}, probe.Request{Path: tt.Path}).Value
			if got != tt.Route {
				t.Errorf("sequence %d, path %q: route %q, want %q", i, tt.Path, got, tt.Route)
			}
		}
	}
	for _, tt := range table.Methods {
		if got := export.Method(tt.Method); got != tt.Label {
			t.Errorf("method %q: %q, want %q", tt.Method, got, tt.Label)
		}
	}
}
