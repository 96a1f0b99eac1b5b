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
// of module and reads keys from each binary's DWARF: -1 for a field the version lacks.
func moduleLayouts(ctx context.Context, log *slog.Logger, module, tmpl string, keys []offsets.Key, versions []string) (map[string]layout, error) {
	dir, err := os.MkdirTemp("", "offsetgen-mod-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	out := map[string]layout{}
	for _, v := range versions {
		l, err := moduleLayout(ctx, log, filepath.Join(dir, v), module, tmpl, keys, v)
		if err != nil {
			return nil, err
		}
		out[v] = l
	}
	return out, nil
}

func moduleLayout(ctx context.Context, log *slog.Logger, dir, module, tmpl string, keys []offsets.Key, version string) (layout, error) {
	t0 := time.Now()
	bin, err := buildModuleTemplate(ctx, dir, module, tmpl, version)
	if err != nil {
		return nil, err
	}
	b, err := inspect.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("open template built with %s %s: %w", module, version, err)
	}
	defer b.Close()
	// go mod tidy could have chosen another version (a replace, a newer requirement); trust only
	// what the binary says.
	if got := b.Modules[module]; got != version {
		return nil, fmt.Errorf("template built with %s %s reports %q", module, version, got)
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
// rest through the module proxy (go mod tidy) and builds it with the Go at hand, which must be at
// least as new as the version's go line. It returns the binary's path.
func buildModuleTemplate(ctx context.Context, dir, module, tmpl, version string) (string, error) {
	if err := copyTemplate(tmpl, dir); err != nil {
		return "", err
	}
	mod := fmt.Sprintf("module obsd.invalid/offsetgen/%s\n\ngo 1.22\n\nrequire %s %s\n", filepath.Base(tmpl), module, version)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		return "", fmt.Errorf("write template go.mod: %w", err)
	}
	env := append(os.Environ(), "GOTOOLCHAIN=local", "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0", "GOWORK=off",
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
