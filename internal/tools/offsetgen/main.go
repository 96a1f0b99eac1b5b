// Command offsetgen generates internal/offsets/offsets.json, the struct field offsets obsd uses for
// binaries without DWARF. It builds the template program testdata/std with Go toolchains (the go
// command downloads them through the module proxy), and one template per module of module.go
// (grpc-go, chi v5, gin, echo v4, gorilla/mux, x/net) against each listed release of that module,
// and reads the fields from the DWARF of the results with internal/inspect, the same code obsd
// reads targets with. Run from the repository:
//
//	go run ./internal/tools/offsetgen -out internal/offsets/offsets.json
//	go run ./internal/tools/offsetgen -out internal/offsets/offsets.json -module github.com/go-chi/chi/v5
//	go run ./internal/tools/offsetgen -out internal/offsets/offsets.json -module github.com/gorilla/mux -versions github.com/gorilla/mux=v1.8.1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/offsets"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// goMinors are the Go minors obsd supports. offsetgen lists their releases with
// `go list -m -versions golang.org/toolchain`, builds the first and last of each, and bisects
// between builds that disagree to find every release where a layout changes (patch releases do:
// a security fix moved net/http.response.status within Go 1.26). offsets.Table.Get fills in the
// releases between two that agree.
var goMinors = []string{"go1.21", "go1.22", "go1.23", "go1.24", "go1.25", "go1.26", "go1.27"}

// stdFields is what the table carries: every standard-library field a
// probe declares (internal/uprobes.Probes), plus fields the next probes
// (trace context, HTTP/2) will need, so that adding them needs no new
// table. A field missing from a Go version (Request.Pattern before 1.23) is
// left out for that version.
func stdFields() []offsets.Key {
	seen := map[offsets.Key]bool{}
	var ks []offsets.Key
	add := func(k offsets.Key) {
		if k.Module == offsets.Std && !seen[k] {
			seen[k] = true
			ks = append(ks, k)
		}
	}
	for _, p := range uprobes.Probes() {
		for _, c := range p.Consts {
			add(offsets.Key(c.Field))
		}
	}
	planned := []struct{ pkg, typ, field string }{
		{"net/http", "Request", "Proto"}, {"net/http", "Request", "Header"}, {"net/http", "Request", "Host"},
		{"net/http", "Request", "RemoteAddr"}, {"net/http", "Request", "ctx"},
		{"net/http", "response", "wroteHeader"}, {"runtime", "g", "goid"},
	}
	for _, f := range planned {
		add(offsets.Key{Module: offsets.Std, Package: f.pkg, Struct: f.typ, Field: f.field})
	}
	return ks
}

// versionsFlag is -versions module=v1,v2,…, repeatable: the releases to list for a module
// instead of module.go's.
type versionsFlag map[string][]string

func (f versionsFlag) String() string { return fmt.Sprint(map[string][]string(f)) }

func (f versionsFlag) Set(s string) error {
	path, list, ok := strings.Cut(s, "=")
	if !ok || path == "" || list == "" {
		return fmt.Errorf("%q: want module=v1,v2,…", s)
	}
	if _, ok := findModule(path); !ok {
		return fmt.Errorf("%q: not a module of the table (%s)", path, strings.Join(modulePaths(), ", "))
	}
	f[path] = strings.Split(list, ",")
	return nil
}

func modulePaths() []string {
	var ps []string
	for _, m := range modules() {
		ps = append(ps, m.path)
	}
	return ps
}

func main() {
	out := flag.String("out", "", "file to write the table to, e.g. internal/offsets/offsets.json")
	tcs := flag.String("toolchains", "", "comma-separated Go releases to choose from (default: every release of "+strings.Join(goMinors, ", ")+" the module proxy lists)")
	all := flag.Bool("all", false, "build every release instead of bisecting for layout changes")
	tmpl := flag.String("template", "", "template program directory (default: internal/tools/offsetgen/testdata/std of the enclosing module); each module's template is its sibling")
	only := flag.String("module", "", "regenerate only this module's fields (\"std\" or one of "+strings.Join(modulePaths(), ", ")+"), keeping the others from -out; default every module")
	versions := versionsFlag{}
	flag.Var(versions, "versions", "module=v1,v2,…: the releases to list for that module instead of module.go's (repeatable)")
	grpcVers := flag.String("grpc", "", "comma-separated grpc-go versions to list (the same as -versions "+grpcModule+"=…)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *grpcVers != "" {
		versions[grpcModule] = strings.Split(*grpcVers, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var releases []string
	if *tcs != "" {
		releases = strings.Split(*tcs, ",")
	}
	if err := run(ctx, log, *out, *tmpl, releases, *all, *only, versions); err != nil {
		log.Error("offsetgen failed", "err", err)
		os.Exit(1)
	}
}

// run writes the table to out: the standard library's fields from each release of releases (nil:
// every supported one), and each module's from its versions (module.go's unless versions names
// other ones); with only set, that module alone, the others kept from out.
func run(ctx context.Context, log *slog.Logger, out, tmpl string, releases []string, all bool, only string, versions map[string][]string) error {
	if out == "" {
		return errors.New("-out is required")
	}
	if _, ok := findModule(only); only != "" && only != offsets.Std && !ok {
		return fmt.Errorf("-module %q: want %q or one of %s", only, offsets.Std, strings.Join(modulePaths(), ", "))
	}
	root, err := moduleRoot()
	if err != nil && tmpl == "" {
		return err
	}
	if tmpl == "" {
		tmpl = filepath.Join(root, "internal", "tools", "offsetgen", "testdata", "std")
	}
	start := time.Now()
	table := &offsets.Table{}
	if only != "" {
		// Keep what the other modules have in the current table.
		data, err := os.ReadFile(out)
		if err != nil {
			return fmt.Errorf("read the table to keep its other modules: %w", err)
		}
		old, err := offsets.Parse(data)
		if err != nil {
			return err
		}
		if table, err = keepOthers(old, only); err != nil {
			return err
		}
	}
	if only == "" || only == offsets.Std {
		if releases == nil {
			if releases, err = listReleases(ctx, goMinors); err != nil {
				return err
			}
		}
		g, err := newGenerator(log, stdFields(), tmpl)
		if err != nil {
			return err
		}
		defer g.close()
		std, err := g.generate(ctx, releases, all)
		if err != nil {
			return err
		}
		for _, k := range std.Keys() {
			for _, v := range std.Versions(k) {
				off, _ := std.Get(k, v)
				if err := table.Set(k, v, off); err != nil {
					return err
				}
			}
		}
	}
	for _, m := range modules() {
		if only != "" && only != m.path {
			continue
		}
		vs := m.versions
		if o, ok := versions[m.path]; ok {
			vs = o
		}
		keys := moduleFields(m.path)
		if len(keys) == 0 {
			return fmt.Errorf("%s: no enabled probe declares a field of it", m.path)
		}
		layouts, err := moduleLayouts(ctx, log, m.path, filepath.Join(filepath.Dir(tmpl), m.template), keys, vs)
		if err != nil {
			return err
		}
		if err := setLayouts(table, keys, layouts); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(table, "", "  ")
	if err != nil {
		return fmt.Errorf("encode table: %w", err)
	}
	if err := writeFile(out, append(data, '\n')); err != nil {
		return err
	}
	log.Info("wrote offsets", "file", out, "fields", len(table.Keys()), "took", time.Since(start).Round(time.Second))
	return nil
}

// listReleases asks the module proxy for the linux/amd64 toolchain releases of minors, sorted.
func listReleases(ctx context.Context, minors []string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-versions", "golang.org/toolchain")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOWORK=off")
	cmd.Dir = os.TempDir() // outside any module: the listing needs none
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("list Go toolchains: %w", err)
	}
	var releases []string
	for _, f := range strings.Fields(string(out)) {
		v, ok := strings.CutPrefix(f, "v0.0.1-")
		if !ok {
			continue
		}
		if v, ok = strings.CutSuffix(v, ".linux-amd64"); !ok {
			continue
		}
		minor, ok := releaseMinor(v)
		if ok && slices.Contains(minors, minor) {
			releases = append(releases, v)
		}
	}
	slices.SortFunc(releases, compareReleases)
	for _, m := range minors {
		if !slices.ContainsFunc(releases, func(r string) bool { mm, _ := releaseMinor(r); return mm == m }) {
			return nil, fmt.Errorf("list Go toolchains: the proxy lists no release of %s", m)
		}
	}
	return releases, nil
}

// releaseMinor returns "go1.N" for a release "go1.N.P"; pre-releases are not releases.
func releaseMinor(v string) (string, bool) {
	parts := strings.Split(strings.TrimPrefix(v, "go"), ".")
	if !strings.HasPrefix(v, "go") || len(parts) != 3 {
		return "", false
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return "", false
		}
	}
	return "go" + parts[0] + "." + parts[1], true
}

func compareReleases(a, b string) int {
	pa := strings.Split(strings.TrimPrefix(a, "go"), ".")
	pb := strings.Split(strings.TrimPrefix(b, "go"), ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x - y
		}
	}
	return len(pa) - len(pb)
}

// generator builds the template with one toolchain after another and reads its fields.
type generator struct {
	log    *slog.Logger
	keys   []offsets.Key
	dir    string // work directory: the template's copy and the binaries
	src    string
	seen   map[string]layout // by release
	builds int
	// read returns the layout of a release: buildAndRead, or a stand-in in tests.
	read func(ctx context.Context, release string) (layout, error)
}

// layout is what one release says about each key: an offset, or -1 for a missing field.
type layout map[offsets.Key]int64

func newGenerator(log *slog.Logger, keys []offsets.Key, tmpl string) (*generator, error) {
	for _, k := range keys {
		if k.Module != offsets.Std {
			return nil, fmt.Errorf("%v: only standard-library fields can be generated yet", k)
		}
	}
	dir, err := os.MkdirTemp("", "offsetgen-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	g := &generator{log: log, keys: keys, dir: dir, src: filepath.Join(dir, "src"), seen: map[string]layout{}}
	g.read = g.buildAndRead
	if err := copyTemplate(tmpl, g.src); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

func (g *generator) close() { os.RemoveAll(g.dir) }

// generate reads the layout of enough releases to pin every change down to two consecutive
// releases, or of all of them, and returns the table of the releases read. It takes the keys as a
// parameter (through newGenerator) so that they can come from the probes' declarations.
func (g *generator) generate(ctx context.Context, releases []string, all bool) (*offsets.Table, error) {
	byMinor := map[string][]string{}
	var minors []string
	for _, r := range releases {
		m, ok := releaseMinor(r)
		if !ok {
			return nil, fmt.Errorf("%q is not a Go release (go1.N.P)", r)
		}
		if byMinor[m] == nil {
			minors = append(minors, m)
		}
		byMinor[m] = append(byMinor[m], r)
	}
	for _, m := range minors {
		rs := byMinor[m]
		slices.SortFunc(rs, compareReleases)
		if all {
			for _, r := range rs {
				if _, err := g.layout(ctx, r); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := g.bisect(ctx, rs); err != nil {
			return nil, err
		}
	}

	table := &offsets.Table{}
	found := map[offsets.Key]bool{}
	for r, l := range g.seen {
		for k, off := range l {
			if off < 0 {
				continue
			}
			if err := table.Set(k, r, uint64(off)); err != nil {
				return nil, err
			}
			found[k] = true
		}
	}
	// A field found in no release is a typo or a type the template failed to keep alive.
	for _, k := range g.keys {
		if !found[k] {
			return nil, fmt.Errorf("%v: in the DWARF of no release built", k)
		}
	}
	return table, nil
}

// bisect reads the first and last of rs and, where they differ, the middle, recursively. Releases
// between two that agree are assumed to agree too: a layout changed by a patch is not changed back.
func (g *generator) bisect(ctx context.Context, rs []string) error {
	first, err := g.layout(ctx, rs[0])
	if err != nil || len(rs) == 1 {
		return err
	}
	last, err := g.layout(ctx, rs[len(rs)-1])
	if err != nil {
		return err
	}
	if maps.Equal(first, last) || len(rs) == 2 {
		return nil
	}
	mid := len(rs) / 2
	if err := g.bisect(ctx, rs[:mid+1]); err != nil {
		return err
	}
	return g.bisect(ctx, rs[mid:])
}

// layout returns the layout of release r, reading it once.
func (g *generator) layout(ctx context.Context, r string) (layout, error) {
	if l, ok := g.seen[r]; ok {
		return l, nil
	}
	l, err := g.read(ctx, r)
	if err != nil {
		return nil, err
	}
	g.builds++
	g.seen[r] = l
	return l, nil
}

// buildAndRead builds the template with release r and reads every key from its DWARF.
func (g *generator) buildAndRead(ctx context.Context, r string) (layout, error) {
	t0 := time.Now()
	bin := filepath.Join(g.dir, "std-"+r)
	if err := build(ctx, g.src, bin, r); err != nil {
		return nil, err
	}
	defer os.Remove(bin)
	b, err := inspect.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("open template built with %s: %w", r, err)
	}
	defer b.Close()
	// GOTOOLCHAIN could be overridden (a go.work, a newer go line); trust only what the binary says.
	if b.GoVersion != r {
		return nil, fmt.Errorf("template built with GOTOOLCHAIN=%s reports %s", r, b.GoVersion)
	}
	l := layout{}
	n := 0
	for _, k := range g.keys {
		off, err := b.FieldOffset(k.Package, k.Struct, k.Field)
		switch {
		case errors.Is(err, inspect.ErrNoField):
			l[k] = -1
		case err != nil:
			return nil, fmt.Errorf("read %v from template built with %s: %w", k, r, err)
		default:
			l[k] = int64(off)
			n++
		}
	}
	g.log.Info("read offsets", "release", r, "fields", n, "of", len(g.keys), "took", time.Since(t0).Round(100*time.Millisecond))
	return l, nil
}

// build compiles the template with toolchain tc for linux/amd64, the only target obsd attaches to.
func build(ctx context.Context, src, bin, tc string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(),
		"GOTOOLCHAIN="+tc, "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build template with %s: %w\n%s", tc, err, out)
	}
	return nil
}

// copyTemplate copies the template's Go files and gives them a go.mod of their own: the repository's
// go line would make older toolchains refuse to build.
func copyTemplate(from, to string) error {
	files, err := filepath.Glob(filepath.Join(from, "*.go"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("find template Go files in %s: none (%v)", from, err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return fmt.Errorf("copy template: %w", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("copy template: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), data, 0o644); err != nil {
			return fmt.Errorf("copy template: %w", err)
		}
	}
	mod := "module obsd.invalid/offsetgen/std\n\ngo 1.21\n"
	if err := os.WriteFile(filepath.Join(to, "go.mod"), []byte(mod), 0o644); err != nil {
		return fmt.Errorf("copy template: %w", err)
	}
	return nil
}

// moduleRoot finds the directory of the go.mod enclosing the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory; pass -template")
		}
		dir = parent
	}
}

// writeFile replaces path atomically, so an interrupted run leaves the old table.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".offsets-*.json")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
