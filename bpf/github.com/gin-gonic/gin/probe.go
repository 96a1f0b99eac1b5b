// Package gin is the probe for gin's routes: for each request a gin Engine
// served, the route gin reports to its own middleware (Context.FullPath()),
// handed to the HTTP server probe's end on the same goroutine
// (bpf/include/route.h). One hit per request, in binaries that link gin.
package gin

import "github.com/obsd-dev/obsd/bpf/probe"

// Module is gin's module path; its offsets come from the binary's DWARF or
// the offsets table.
const Module = "github.com/gin-gonic/gin"

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "github.com/gin-gonic/gin",
		MinGo: "go1.21",
		Sites: []probe.Site{
			// After handleHTTPRequest (routing and every handler), before
			// the Context goes back to the pool.
			{Symbol: Module + ".(*Engine).ServeHTTP", Calls: "sync.(*Pool).Put", Program: "gin_route"},
		},
		Consts: []probe.Const{
			{Name: "off_context_fullpath", Field: probe.Field{Module: Module, Package: Module, Struct: "Context", Field: "fullPath"}},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
