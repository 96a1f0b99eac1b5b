// Package mux is the probe for gorilla/mux's routes: for each request a
// Router matched, the route's path template (what
// mux.CurrentRoute(r).GetPathTemplate() reports), handed to the HTTP
// server probe's end on the same goroutine (bpf/include/route.h). One hit
// per request, in binaries that link gorilla/mux; a request the router
// matched no route for (its 404 or 405) has an empty route, as
// CurrentRoute(r) is nil for it.
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
			// What it matched nothing for: its 405, or its default 404
			// (net/http's NotFound, also whatever else in the binary
			// calls it: a request with no route either way).
			{Symbol: Module + ".methodNotAllowed", Program: "gorilla_unmatched", Optional: true},
			{Symbol: "net/http.NotFound", Program: "gorilla_notfound", Optional: true, VaddrConst: "notfound_site_vaddr", InlinedOK: true},
		},
		Consts: []probe.Const{
			{Name: "off_route_routeconf", Field: field("Route", "routeConf")},
			{Name: "off_routeconf_regexp", Field: field("routeConf", "regexp")},
			{Name: "off_group_path", Field: field("routeRegexpGroup", "path")},
			{Name: "off_regexp_template", Field: field("routeRegexp", "template")},
		},
		Funcs: []probe.FuncConst{
			{Name: "handlerfunc_serve", Symbol: "net/http.HandlerFunc.ServeHTTP", Optional: true},
		},
		Counters: probe.RouteCounters(uint32(bpfObsdCounterCNT_READ_FAILED)),
		Spec:     loadBpf,
		Feeds:    "net/http/server",
	}
}
