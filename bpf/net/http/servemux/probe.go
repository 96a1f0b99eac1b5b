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
		Sites: []probe.Site{
			{Symbol: "net/http.(*ServeMux).findHandler", Program: "servemux_route"},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
