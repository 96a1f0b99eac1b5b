// Package servemux is the probe for the route of a net/http ServeMux hidden
// behind middleware that copied the request: it leaves the request the
// innermost mux routed for the HTTP server probe's end, which reads that
// request's pattern (bpf/include/route.h). One hit per mux a request passes
// through, so it is attached on demand: to a process whose requests show
// that a mux may be hidden (see internal/agent).
package servemux

import "github.com/obsd-dev/obsd/bpf/probe"

// Name is the probe's name, by which the agent enables it for a process.
const Name = "net/http/servemux"

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:     Name,
		MinGo:    "go1.21", // the site exists from 1.22 (ServeMux patterns); older binaries lack it
		OnDemand: true,
		// The server probe's end looks requests up by context only then.
		EnabledFlag: "obsd_shared_route_ctx_on",
		Sites: []probe.Site{
			{Symbol: "net/http.(*ServeMux).findHandler", Program: "servemux_route"},
		},
		Consts: []probe.Const{
			// Only for a mux on a goroutine of its own; without it, the
			// goroutine's hand-over still works.
			{Name: "off_request_ctx", Field: probe.Field{Module: "std", Package: "net/http", Struct: "Request", Field: "ctx"}, Optional: true, Secondary: true},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
