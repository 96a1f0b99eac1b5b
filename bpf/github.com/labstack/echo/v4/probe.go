// Package echo is the probe for echo v4's routes: for each request an Echo
// served, the route echo reports to its own middleware (Context.Path()),
// handed to the HTTP server probe's end on the same goroutine
// (bpf/include/route.h). One hit per request, in binaries that link echo.
package echo

import "github.com/obsd-dev/obsd/bpf/probe"

// Module is echo v4's module path; its offsets come from the binary's
// DWARF or the offsets table.
const Module = "github.com/labstack/echo/v4"

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "github.com/labstack/echo/v4",
		MinGo: "go1.21",
		Sites: []probe.Site{
			// After the router and the handler chain ran, before the
			// context goes back to the pool.
			{Symbol: Module + ".(*Echo).ServeHTTP", Calls: "sync.(*Pool).Put", Program: "echo_route"},
		},
		Consts: []probe.Const{
			{Name: "off_context_path", Field: probe.Field{Module: Module, Package: Module, Struct: "context", Field: "path"}},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
