// Package chi is the probe for chi v5's routes: for each request a chi Mux
// served, the route chi reports to its own middleware
// (Context.RoutePattern(), with every sub-router's and mount's part),
// handed to the HTTP server probe's end on the same goroutine
// (bpf/include/route.h). One hit per request however deep the routers
// nest (only the outermost Mux puts the Context back), in binaries that
// link chi.
package chi

import "github.com/obsd-dev/obsd/bpf/probe"

// Module is chi v5's module path; its offsets come from the binary's DWARF
// or the offsets table.
const Module = "github.com/go-chi/chi/v5"

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "github.com/go-chi/chi/v5",
		MinGo: "go1.21",
		Sites: []probe.Site{
			{Symbol: Module + ".(*Mux).ServeHTTP", Calls: "sync.(*Pool).Put", Program: "chi_route"},
		},
		Consts: []probe.Const{
			{Name: "off_context_routepatterns", Field: probe.Field{Module: Module, Package: Module, Struct: "Context", Field: "RoutePatterns"}},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
