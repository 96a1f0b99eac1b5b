package prom

import (
	"fmt"
	"testing"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

func TestFallbackRoute(t *testing.T) {
	tests := []struct{ path, want string }{
		{"", "/"},
		{"/", "/"},
		{"/health", "/health"},
		{"/api/users", "/api/users"},
		{"/api/users/42", "/api/users/*"},
		{"/api/v1/users/42", "/api/v1/*"},
		{"/orders/8f3a9c21", "/orders/*"},
		{"/42", "/*"},
		{"/42/edit", "/*"},
		{"/items/", "/items/"},
		{"/wp-login.php", "/wp-login.php"},
		{"/a%20b/c", "/*"},
		{"/0123456789012345678901234567890123456789", "/*"},
	}
	for _, tt := range tests {
		if got := fallbackRoute(tt.path); got != tt.want {
			t.Errorf("fallbackRoute(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestRoutePrefersPattern(t *testing.T) {
	rt := newRoutes()
	svc := export.Service{InstanceID: "h:1"}
	tests := []struct{ pattern, path, want string }{
		{"GET /items/{id}", "/items/7", "/items/{id}"},
		{"/status/{code}", "/status/500", "/status/{code}"},
		{"example.com/x/{y}", "/x/1", "/x/{y}"},
		{"", "/items/7", "/items/*"},
	}
	for _, tt := range tests {
		if got := rt.route(svc, probe.Request{Pattern: tt.pattern, Path: tt.path}); got != tt.want {
			t.Errorf("route(%q, %q) = %q, want %q", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestRouteCardinalityCap(t *testing.T) {
	rt := newRoutes()
	svc := export.Service{InstanceID: "h:1"}
	for i := range MaxFallbackRoutes + 10 {
		got := rt.route(svc, probe.Request{Path: fmt.Sprintf("/r%c%c/x", 'a'+i/26, 'a'+i%26)})
		if i >= MaxFallbackRoutes && got != OverflowRoute {
			t.Fatalf("route %d = %q, want %q past the cap", i, got, OverflowRoute)
		}
	}
	if n := rt.overflow[svc.InstanceID].n; n != 10 {
		t.Errorf("overflow count = %d, want 10", n)
	}
	// Another process has its own budget.
	if got := rt.route(export.Service{InstanceID: "h:2"}, probe.Request{Path: "/new"}); got != "/new" {
		t.Errorf("other instance route = %q", got)
	}
}
