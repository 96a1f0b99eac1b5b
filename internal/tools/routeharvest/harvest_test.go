package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-routeharvest-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build is one build of a router test service (testdata/routers), as the
// routers e2e test builds it.
type build struct {
	router, module, version, toolchain string
	stripped, pie                      bool
}

func (b build) name() string {
	n := b.router + "-" + b.version
	if b.toolchain != "" {
		n += "-" + b.toolchain
	}
	if b.stripped {
		n += "-stripped"
	}
	if b.pie {
		n += "-pie"
	}
	return n
}

func (b build) path(t testing.TB) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "router-" + b.router,
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "routers", b.router),
		Toolchain: b.toolchain,
		Flavour:   e2e.Flavour{Stripped: b.stripped, PIE: b.pie},
		Require:   []string{b.module + " " + b.version},
	})
}

// The releases of the routers e2e test (internal/test/e2e/routers), normal
// and stripped, old Go and new.
var services = []build{
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.2.3", toolchain: "go1.21.13"},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.5.0"},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.5.0", stripped: true},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.2.0", toolchain: "go1.21.13", stripped: true, pie: true},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.5.0", pie: true},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.10.0", toolchain: "go1.21.13"},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.12.0"},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.12.0", stripped: true},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.11.0", pie: true},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.13.2", toolchain: "go1.21.13"},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.16.0"},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.16.5", stripped: true},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.15.0", stripped: true, pie: true},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.0", toolchain: "go1.21.13"},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.1"},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.1", stripped: true},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.1", stripped: true, pie: true},
}

// literals are the path literals each service's main.go passes to its
// router, in source order, written out here from the source (not from
// any harvest): "METHOD literal" for routes, "group literal" for prefixes.
var literals = map[string][]string{
	"chi": {
		"GET /", "GET /healthz", "group /orders", "GET /", "group /{oid}", "GET /", "GET /items/{iid}",
		"POST /items", "GET /items/{sku}", "closure", "GET /users/{name}", "mount /api/v1",
		"GET /users/{uid:[0-9]+}", "GET /files/*",
	},
	"gin": {
		"GET /", "GET /healthz", "group /orders", "GET /", "GET /:oid", "GET /:oid/items/:iid",
		"POST /:oid/items", "group /api/v1", "GET /items/:sku", "group /users", "GET /:name",
		"GET /users/:uid", "GET /files/*path",
	},
	"echo": {
		"GET /", "GET /healthz", "group /orders", "GET ", "GET /:oid", "GET /:oid/items/:iid",
		"POST /:oid/items", "group /api/v1", "GET /items/:sku", "group /users", "GET /:name",
		"GET /users/:uid", "GET /files/*",
	},
	"gorillamux": {
		"GET /", "* /healthz", "group /orders", "GET /{oid}", "GET /{oid}/items/{iid}", "POST /{oid}/items",
		"group /api/v1", "* /items/{sku}", "group /users", "* /{name}", "* /users/{uid:[0-9]+}", "* /files/",
		"* /things/{id}",
	},
}

// templates are the full templates the services' routers report for their
// routes (the routers e2e test's tally, read off once and checked by
// TestAccuracy), in registration order.
var templates = map[string][]string{
	"chi": {"GET /", "GET /healthz", "GET /orders", "GET /orders/{oid}", "GET /orders/{oid}/items/{iid}",
		"POST /orders/{oid}/items", "GET /api/v1/items/{sku}", "GET /api/v1/users/{name}",
		"GET /users/{uid:[0-9]+}", "GET /files/*"},
	"gin": {"GET /", "GET /healthz", "GET /orders/", "GET /orders/:oid", "GET /orders/:oid/items/:iid",
		"POST /orders/:oid/items", "GET /api/v1/items/:sku", "GET /api/v1/users/:name", "GET /users/:uid",
		"GET /files/*path"},
	"echo": {"GET /", "GET /healthz", "GET /orders", "GET /orders/:oid", "GET /orders/:oid/items/:iid",
		"POST /orders/:oid/items", "GET /api/v1/items/:sku", "GET /api/v1/users/:name", "GET /users/:uid",
		"GET /files/*"},
	"gorillamux": {"GET /", "* /healthz", "GET /orders/{oid}", "GET /orders/{oid}/items/{iid}",
		"POST /orders/{oid}/items", "* /api/v1/items/{sku}", "* /api/v1/users/{name}",
		"* /users/{uid:[0-9]+}", "* /files/", "* /things/{id}"},
}

// harvested lists a result's registrations in the literals' form.
func harvested(res *Result, router string) (lits, full []string) {
	for _, g := range res.Registrations {
		if g.Router != router {
			continue
		}
		m := g.Method
		if m == "" {
			m = "*"
		}
		switch {
		case g.kind == kClosure:
			lits = append(lits, "closure")
		case g.kind == kMount:
			lits = append(lits, "mount "+g.Literal)
		case g.kind == kGroup || g.obj != nil && g.obj.hasSub:
			lits = append(lits, "group "+g.Literal)
		case router == "gorillamux":
			lits = append(lits, m+" "+g.Literal)
		default:
			lits = append(lits, g.Method+" "+g.Literal)
		}
		if g.kind == kRoute && !(g.obj != nil && g.obj.hasSub) {
			f := g.Full
			if !g.FullKnown {
				f = "(untied) " + f
			}
			full = append(full, m+" "+f)
		}
	}
	return lits, full
}

// TestHarvestLiterals: from each service build, normal and stripped, the
// harvest finds exactly the literals its source passes, in order, and
// joins them into the templates the router reports.
func TestHarvestLiterals(t *testing.T) {
	for _, b := range services {
		t.Run(b.name(), func(t *testing.T) {
			res, err := Harvest(b.path(t))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(res.Routers, []string{b.router}) {
				t.Errorf("routers %v, want [%s]", res.Routers, b.router)
			}
			lits, full := harvested(res, b.router)
			if want := literals[b.router]; !reflect.DeepEqual(lits, want) {
				t.Errorf("literals:\n got %q\nwant %q", lits, want)
			}
			if want := templates[b.router]; !reflect.DeepEqual(full, want) {
				t.Errorf("templates:\n got %q\nwant %q", full, want)
			}
			if res.Unresolved != 0 {
				t.Errorf("%d unreadable arguments, want 0", res.Unresolved)
			}
		})
	}
}

// TestHarvestNoRouter: a binary linking none of the routers yields none.
func TestHarvestNoRouter(t *testing.T) {
	bin := builds.HTTPServer(t, e2e.Variant{Name: "plain"})
	res, err := Harvest(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Routers) != 0 || len(res.Registrations) != 0 {
		t.Errorf("routers %v, %d registrations in a plain net/http server, want none", res.Routers, len(res.Registrations))
	}
}

func TestHarvestNotGo(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Harvest(f); err == nil || !strings.Contains(err.Error(), "ELF") {
		t.Errorf("Harvest of a script: %v, want an error naming ELF", err)
	}
}

func ExampleMatcher() {
	m, _ := NewMatcher("chi", []Template{{Route: "/users/{id}"}, {Route: "/users/me"}})
	fmt.Println(m.Match("GET", "/users/me"))
	fmt.Println(m.Match("GET", "/users/42"))
	// Output:
	// /users/me true
	// /users/{id} true
}
