package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/obsd-dev/obsd/bpf/github.com/gin-gonic/gin"
	chi "github.com/obsd-dev/obsd/bpf/github.com/go-chi/chi/v5"
	"github.com/obsd-dev/obsd/bpf/github.com/gorilla/mux"
	echo "github.com/obsd-dev/obsd/bpf/github.com/labstack/echo/v4"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/offsets"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// grpcModule is grpc-go's module path: its fields are keyed by its own version.
const grpcModule = "google.golang.org/grpc"

// grpcVersions are the grpc-go releases the table lists: a spread over the two years before
// v1.85, with the releases on each side of every layout change a probe depends on:
// v1.68.1 | v1.69.0 (transport.Stream split into ServerStream{*Stream}, WriteStatus became
// writeStatus) … v1.76.0 | v1.77.0 (ServerStream embeds Stream by value) … v1.82.1 (client
// header frames renamed), v1.84.0 (processRPC), v1.85.0. A stripped binary of any other release
// is refused (unsupported_version): module layouts are not interpolated between releases. Each is
// built with the Go at hand only: the fields the probes read follow pointer-sized fields alone (no
// standard-library struct before them), so no Go release moves them; the gRPC e2e test checks
// stripped builds made with other toolchains against this table.
var grpcVersions = []string{"v1.68.1", "v1.69.0", "v1.69.4", "v1.76.0", "v1.77.0", "v1.82.1", "v1.84.0", "v1.85.0"}

// xnetModule is golang.org/x/net, whose HTTP/2 server (http2.ConfigureServer, h2c.NewHandler,
// Server.ServeConn) the HTTP server probe follows (bpf/net/http/server, constants off_xh2_*).
const xnetModule = "golang.org/x/net"

// xnetVersions are every x/net release of the two years before 2026-11-30 (the proxy's .info
// times: v0.32.0 of 2024-12-04 to v0.62.0 of 2026-10-27; x/net tags about one release a month,
// never a patch release). The fields the probe reads (responseWriter.rws, responseWriterState.{stream,conn,
// status}, stream.{sc,id}) follow only pointers, maps, slices and integers, so each release is
// built with the Go at hand; TestXNetTableMatchesDWARF checks the oldest built with go1.21.13.
// A stripped binary of another release keeps its other requests: these fields are Secondary,
// and its x/net HTTP/2 requests count as lost (read_failed).
var xnetVersions = []string{
	"v0.32.0", "v0.33.0", "v0.34.0", "v0.35.0", "v0.36.0", "v0.37.0", "v0.38.0", "v0.39.0", "v0.40.0", "v0.41.0",
	"v0.42.0", "v0.43.0", "v0.44.0", "v0.45.0", "v0.46.0", "v0.47.0", "v0.48.0", "v0.49.0", "v0.50.0", "v0.51.0",
	"v0.52.0", "v0.53.0", "v0.54.0", "v0.55.0", "v0.56.0", "v0.57.0", "v0.58.0", "v0.59.0", "v0.60.0", "v0.61.0",
	"v0.62.0",
}

// module is a Go module whose fields the table carries beside the standard library's, keyed by
// the module's own version: the template program offsetgen builds against each listed release
// and reads the fields from. Which fields is not listed here: every field of the module the
// enabled probes declare (moduleFields). Adding a module is one entry of modules.
type module struct {
	path string
	// template is the directory, beside testdata/std, of a main package importing the module
	// and keeping the probed types reachable, so that the linker describes them in DWARF.
	template string
	// versions are the releases the table lists, as the module proxy names them; a stripped
	// binary of any other release is refused (unsupported_version), never interpolated.
	versions []string
}

// modules are the modules of the table besides the standard library. A router's list is every
// release the module proxy lists (go list -m -versions) with a release time (the proxy's .info)
// in the two years before 2026-11-30, chi's from v5.2.0 of 2024-12-14, echo's from v4.13.2 of
// 2024-12-12, plus the older releases the router e2e tests build: gin v1.10.0 (2024-05),
// gorilla/mux v1.8.0 (2020; v1.8.1 of 2023-10 is its newest). No router moved a probed field
// within these lists. Each release is built with the Go at hand, as grpc-go's: the fields the
// router probes read follow only pointers, interfaces, strings, slices, maps, integers and (echo)
// a sync.RWMutex, whose sizes no Go release 1.21–1.27 changes; TestRouterTablesMatchDWARF checks
// the oldest release of each router built with go1.21.13 against the table.
func modules() []module {
	return []module{
		{path: grpcModule, template: "grpc", versions: grpcVersions},
		{path: chi.Module, template: "chi",
			versions: []string{"v5.2.0", "v5.2.1", "v5.2.2", "v5.2.3", "v5.2.4", "v5.2.5", "v5.3.0", "v5.3.1", "v5.3.2", "v5.4.0", "v5.5.0"}},
		{path: gin.Module, template: "gin",
			versions: []string{"v1.10.0", "v1.10.1", "v1.11.0", "v1.12.0"}},
		{path: echo.Module, template: "echo",
			versions: []string{"v4.13.2", "v4.13.3", "v4.13.4", "v4.14.0", "v4.15.0", "v4.15.1", "v4.15.4", "v4.16.0", "v4.16.4", "v4.16.5"}},
		{path: mux.Module, template: "gorillamux", versions: []string{"v1.8.0", "v1.8.1"}},
		{path: xnetModule, template: "xnet", versions: xnetVersions},
	}
}

// findModule returns the entry of modules for path.
func findModule(path string) (module, bool) {
	for _, m := range modules() {
		if m.path == path {
			return m, true
		}
	}
	return module{}, false
}

// moduleFields lists, sorted by declaration, the fields of module that the enabled probes
// declare (internal/uprobes.Probes): a probe that adds a field gets it in the table at the next
// make offsets, with no list to edit here.
func moduleFields(module string) []offsets.Key {
	seen := map[offsets.Key]bool{}
	var ks []offsets.Key
	for _, p := range uprobes.Probes() {
		for _, c := range p.Consts {
			k := offsets.Key(c.Field)
			if k.Module == module && !seen[k] {
				seen[k] = true
				ks = append(ks, k)
			}
		}
	}
	return ks
}

// moduleLayouts builds the template tmpl (a main package importing module) against each version
// of module with the Go at hand and reads keys from each binary's DWARF: -1 for a field the
// version lacks.
func moduleLayouts(ctx context.Context, log *slog.Logger, module, tmpl string, keys []offsets.Key, versions []string) (map[string]layout, error) {
	dir, err := os.MkdirTemp("", "offsetgen-mod-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	out := map[string]layout{}
	for _, v := range versions {
		l, err := moduleLayout(ctx, log, filepath.Join(dir, v), module, tmpl, keys, v, "")
		if err != nil {
			return nil, err
		}
		out[v] = l
	}
	return out, nil
}

// moduleLayout builds tmpl in dir against module at version with toolchain (a GOTOOLCHAIN value
// such as "go1.21.13", or "" for the Go at hand) and reads keys from the binary's DWARF.
func moduleLayout(ctx context.Context, log *slog.Logger, dir, module, tmpl string, keys []offsets.Key, version, toolchain string) (layout, error) {
	t0 := time.Now()
	bin, err := buildModuleTemplate(ctx, dir, module, tmpl, version, toolchain)
	if err != nil {
		return nil, err
	}
	b, err := inspect.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("open template built with %s %s: %w", module, version, err)
	}
	defer b.Close()
	// go mod tidy could have chosen another version (a replace, a newer requirement), and a go
	// line could have switched toolchains; trust only what the binary says.
	if got := b.Modules[module]; got != version {
		return nil, fmt.Errorf("template built with %s %s reports %q", module, version, got)
	}
	if toolchain != "" && b.GoVersion != toolchain {
		return nil, fmt.Errorf("template built with GOTOOLCHAIN=%s reports %s", toolchain, b.GoVersion)
	}
	l := layout{}
	n := 0
	for _, k := range keys {
		off, err := b.FieldOffset(k.Package, k.Struct, k.Field)
		switch {
		case errors.Is(err, inspect.ErrNoField):
			l[k] = -1
		case err != nil:
			return nil, fmt.Errorf("read %v from template built with %s %s: %w", k, module, version, err)
		default:
			l[k] = int64(off)
			n++
		}
	}
	log.Info("read offsets", "module", module, "version", version, "go", b.GoVersion, "fields", n, "of", len(keys), "took", time.Since(t0).Round(100*time.Millisecond))
	return l, nil
}

// buildModuleTemplate copies tmpl into dir with a go.mod requiring module at version, resolves the
// rest through the module proxy (go mod tidy) and builds it with toolchain ("" is the Go at hand),
// which must be at least as new as the go lines of the version and its requirements. It returns
// the binary's path.
func buildModuleTemplate(ctx context.Context, dir, module, tmpl, version, toolchain string) (string, error) {
	if err := copyTemplate(tmpl, dir); err != nil {
		return "", err
	}
	// go 1.21, the oldest Go obsd supports: tidy raises it to what the requirements need.
	mod := fmt.Sprintf("module obsd.invalid/offsetgen/%s\n\ngo 1.21\n\nrequire %s %s\n", filepath.Base(tmpl), module, version)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		return "", fmt.Errorf("write template go.mod: %w", err)
	}
	tc := "GOTOOLCHAIN=local"
	if toolchain != "" {
		tc = "GOTOOLCHAIN=" + toolchain
	}
	env := append(os.Environ(), tc, "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0", "GOWORK=off",
		"GOFLAGS=-buildvcs=false -mod=mod")
	bin := filepath.Join(dir, "template")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", bin, "."}} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %v for %s %s: %w\n%s", args, module, version, err, out)
		}
	}
	return bin, nil
}

// setLayouts adds the layouts to table and checks that every key is in at least one version.
func setLayouts(table *offsets.Table, keys []offsets.Key, layouts map[string]layout) error {
	found := map[offsets.Key]bool{}
	for v, l := range layouts {
		for k, off := range l {
			if off < 0 {
				continue
			}
			if err := table.Set(k, v, uint64(off)); err != nil {
				return err
			}
			found[k] = true
		}
	}
	for _, k := range keys {
		if !found[k] {
			return fmt.Errorf("%v: in the DWARF of no version built", k)
		}
	}
	return nil
}

// keepOthers copies into a new table every field of old whose module is not module: regenerating
// one module leaves the others as they were.
func keepOthers(old *offsets.Table, module string) (*offsets.Table, error) {
	t := &offsets.Table{}
	for _, k := range old.Keys() {
		if k.Module == module {
			continue
		}
		for _, v := range old.Versions(k) {
			off, _ := old.Get(k, v)
			if err := t.Set(k, v, off); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}
