package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/obsd-dev/obsd/bpf/github.com/gin-gonic/gin"
	chi "github.com/obsd-dev/obsd/bpf/github.com/go-chi/chi/v5"
	"github.com/obsd-dev/obsd/bpf/github.com/gorilla/mux"
	echo "github.com/obsd-dev/obsd/bpf/github.com/labstack/echo/v4"
	"github.com/obsd-dev/obsd/internal/offsets"
)

// A module's fields come from the probes' declarations, so a probe that
// declares one gets it in the table without a list here.
func TestModuleFields(t *testing.T) {
	tests := []struct {
		module string
		want   offsets.Key // one field its probe declares
	}{
		{grpcModule, offsets.Key{Module: grpcModule, Package: "google.golang.org/grpc/internal/transport", Struct: "Stream", Field: "method"}},
		{chi.Module, offsets.Key{Module: chi.Module, Package: chi.Module, Struct: "Context", Field: "RoutePatterns"}},
		{gin.Module, offsets.Key{Module: gin.Module, Package: gin.Module, Struct: "Context", Field: "fullPath"}},
		{echo.Module, offsets.Key{Module: echo.Module, Package: echo.Module, Struct: "context", Field: "path"}},
		{mux.Module, offsets.Key{Module: mux.Module, Package: mux.Module, Struct: "routeRegexp", Field: "template"}},
		{xnetModule, offsets.Key{Module: xnetModule, Package: "golang.org/x/net/http2", Struct: "responseWriterState", Field: "status"}},
	}
	for _, tt := range tests {
		ks := moduleFields(tt.module)
		if !slices.Contains(ks, tt.want) {
			t.Errorf("%s fields %v lack %v, which its probe declares", tt.module, ks, tt.want)
		}
		for _, k := range ks {
			if k.Module != tt.module {
				t.Errorf("%v listed as a field of %s", k, tt.module)
			}
		}
	}
}

// TestGRPCTableMatchesDWARF builds the grpc-go template against grpc-go
// releases on each side of the v1.69 and v1.77 layout changes and checks
// that the embedded table says for each exactly what the fresh binary's
// DWARF says, field by field, absent fields included. It needs the module
// proxy (or a module cache holding those releases).
func TestGRPCTableMatchesDWARF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpc-go programs")
	}
	for _, v := range []string{"v1.68.1", "v1.85.0"} {
		t.Run(v, func(t *testing.T) { checkTable(t, grpcModule, v, "") })
	}
}

// TestRouterTablesMatchDWARF does the same for each router's oldest listed
// release built with the oldest Go obsd supports (the table was made with
// the Go at hand, which is right only while no Go release moves the
// fields).
func TestRouterTablesMatchDWARF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds router programs")
	}
	for _, m := range []string{chi.Module, gin.Module, echo.Module, mux.Module} {
		mod, ok := findModule(m)
		if !ok {
			t.Fatalf("%s is not in modules()", m)
		}
		// The newest release of each, built stripped with the Go at hand,
		// is checked end to end (internal/test/e2e/routers), which fails on
		// a wrong offset; here the oldest, with the oldest Go.
		oldest := mod.versions[0]
		// Named by template: a "/" in a subtest name would split -run patterns.
		t.Run(mod.template+"@"+oldest+"-go1.21.13", func(t *testing.T) { checkTable(t, m, oldest, "go1.21.13") })
	}
}

// TestXNetTableMatchesDWARF does the same for x/net's oldest listed release
// built with go1.21.13, the oldest Go obsd supports (its go line, 1.18,
// allows it): the table was made with the Go at hand, right only while no
// Go release moves the HTTP/2 server's fields. The newest, stripped, is
// checked end to end (internal/test/e2e/nethttp TestHTTP2XNetStripped).
func TestXNetTableMatchesDWARF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an x/net program")
	}
	mod, ok := findModule(xnetModule)
	if !ok {
		t.Fatalf("%s is not in modules()", xnetModule)
	}
	oldest := mod.versions[0]
	t.Run(mod.template+"@"+oldest+"-go1.21.13", func(t *testing.T) { checkTable(t, xnetModule, oldest, "go1.21.13") })
}

// checkTable builds module's template against version with toolchain and
// compares every field a probe declares with the embedded table.
func checkTable(t *testing.T, module, version, toolchain string) {
	t.Helper()
	table, err := offsets.Load()
	if err != nil {
		t.Fatal(err)
	}
	mod, ok := findModule(module)
	if !ok {
		t.Fatalf("%s is not in modules()", module)
	}
	if !table.Known(module, version) {
		t.Fatalf("the table does not list %s %s", module, version)
	}
	keys := moduleFields(module)
	tmpl, err := filepath.Abs(filepath.Join("testdata", mod.template))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := moduleLayout(context.Background(), log, filepath.Join(t.TempDir(), "src"), module, tmpl, keys, version, toolchain)
	if err != nil {
		t.Fatal(err)
	}
	present := 0
	for _, k := range keys {
		got, ok := table.Get(k, version)
		want := l[k]
		switch {
		case want < 0 && ok:
			t.Errorf("%v: the table says %d in %s, DWARF has no such field", k, got, version)
		case want >= 0 && (!ok || got != uint64(want)):
			t.Errorf("%v: the table says %d (%v) in %s, DWARF says %d", k, got, ok, version, want)
		case want >= 0:
			present++
		}
	}
	if present == 0 {
		t.Errorf("no %s field found in %s", module, version)
	}
}

// TestTableListsModules: the embedded table lists, for every module of
// modules(), exactly the releases declared there (so a list edited without
// make offsets fails here), every field its probes declare, and nothing of
// a module not declared.
func TestTableListsModules(t *testing.T) {
	table, err := offsets.Load()
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{offsets.Std: true}
	for _, m := range modules() {
		declared[m.path] = true
		if len(m.versions) == 0 {
			t.Errorf("%s: no versions", m.path)
		}
		if files, _ := filepath.Glob(filepath.Join("testdata", m.template, "*.go")); len(files) == 0 {
			t.Errorf("%s: no template in testdata/%s", m.path, m.template)
		}
		keys := moduleFields(m.path)
		if len(keys) == 0 {
			t.Errorf("%s: no probe declares a field of it", m.path)
		}
		// A field may be missing from some releases (grpc-go's ServerStream
		// before v1.69), so the releases are those of any field.
		listed := map[string]bool{}
		for _, k := range keys {
			vs := table.Versions(k)
			if len(vs) == 0 {
				t.Errorf("%v: not in the table", k)
			}
			for _, v := range vs {
				listed[v] = true
			}
		}
		for _, v := range m.versions {
			if !listed[v] || !table.Known(m.path, v) {
				t.Errorf("%s %s: declared, not in the table", m.path, v)
			}
			delete(listed, v)
		}
		for v := range listed {
			t.Errorf("%s %s: in the table, not declared", m.path, v)
		}
	}
	for _, k := range table.Keys() {
		if !declared[k.Module] {
			t.Errorf("%v: module not in modules()", k)
		}
	}
}

func TestVersionsFlag(t *testing.T) {
	f := versionsFlag{}
	if err := f.Set(mux.Module + "=v1.8.0,v1.8.1"); err != nil {
		t.Fatal(err)
	}
	if got := f[mux.Module]; !slices.Equal(got, []string{"v1.8.0", "v1.8.1"}) {
		t.Errorf("versions %v", got)
	}
	for _, bad := range []string{"github.com/unknown/mod=v1.0.0", mux.Module, mux.Module + "=", "=v1.0.0"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("-versions %q accepted", bad)
		}
	}
	err := run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), filepath.Join(t.TempDir(), "o.json"), ".", nil, false, "github.com/unknown/mod", nil)
	if err == nil {
		t.Error("-module naming a module not in modules() accepted")
	}
}
