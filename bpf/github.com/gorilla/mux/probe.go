// Package mux is the probe for gorilla/mux's routes: for each request a
// Router matched, the route's path template (what
// mux.CurrentRoute(r).GetPathTemplate() reports), handed to the HTTP
// server probe's end on the same goroutine (bpf/include/route.h). One hit
// per matched request, in binaries that link gorilla/mux; a request the
// router matched no route for has none and gets the fallback route.
package mux

import "github.com/obsd-dev/obsd/bpf/probe"

// Module is gorilla/mux's module path; its offsets come from the binary's
// DWARF or the offsets table.
const Module = "github.com/gorilla/mux"

func field(typ, name string) probe.Field {
	return probe.Field{Module: Module, Package: Module, Struct: typ, Field: name}
}

// New returns the probe declaration.
func New() *probe.Probe {
	return &probe.Probe{
		Name:  "github.com/gorilla/mux",
		MinGo: "go1.21",
		Sites: []probe.Site{
			// (*Router).ServeHTTP calls it once, for a match only, before
			// the handler.
			{Symbol: Module + ".requestWithRoute", Program: "gorilla_route"},
		},
		Consts: []probe.Const{
			{Name: "off_route_routeconf", Field: field("Route", "routeConf")},
			{Name: "off_routeconf_regexp", Field: field("routeConf", "regexp")},
			{Name: "off_group_path", Field: field("routeRegexpGroup", "path")},
			{Name: "off_regexp_template", Field: field("routeRegexp", "template")},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
