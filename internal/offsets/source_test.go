package offsets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestTableMatchesSource checks the embedded table against a source that
// shares nothing with the DWARF reader (internal/inspect) that generated it:
// each Go toolchain's own standard-library sources, type-checked with go/types
// and laid out by types.SizesFor("gc", "amd64"), the compiler's layout rules.
// The toolchain decides which files make each package (go list, CGO_ENABLED=0,
// linux/amd64); go/types decides the offsets.
//
// Toolchains checked: the one running the test, alwaysChecked, every Go
// toolchain already in the module cache, and those named in
// OBSD_OFFSETS_TOOLCHAINS (comma-separated, e.g. "go1.23.0,go1.25.14"). The
// go command downloads a missing one through the module proxy.
func TestTableMatchesSource(t *testing.T) {
	tb := load(t)
	toolchains := append([]string{"local"}, alwaysChecked...)
	toolchains = append(toolchains, cachedToolchains(t)...)
	if env := os.Getenv("OBSD_OFFSETS_TOOLCHAINS"); env != "" {
		toolchains = append(toolchains, strings.Split(env, ",")...)
	}
	slices.Sort(toolchains[1:])
	toolchains = slices.Compact(toolchains)
	seen := map[string]bool{}
	for _, tc := range toolchains {
		t.Run(tc, func(t *testing.T) {
			src := loadStdSource(t, tc)
			if seen[src.version] {
				t.Logf("%s already checked", src.version)
				return
			}
			seen[src.version] = true
			if !tb.Known(Std, src.version) {
				t.Fatalf("the table does not cover %s; regenerate it (make offsets)", src.version)
			}
			checked := 0
			for _, k := range tb.Keys() {
				if k.Module != Std {
					continue
				}
				want, ok := tb.Get(k, src.version)
				got, err := src.offset(k)
				switch {
				case ok && err != nil:
					t.Errorf("%v: table says %d for %s, source: %v", k, want, src.version, err)
				case ok && got != want:
					t.Errorf("%v: table says %d for %s, go/types on its sources says %d", k, want, src.version, got)
				case !ok && !errors.Is(err, errNoField):
					t.Errorf("%v: not in the table for %s, but its sources give %d, %v", k, src.version, got, err)
				}
				checked++
			}
			if checked == 0 {
				t.Fatal("no standard-library field in the table")
			}
			t.Logf("%s: %d fields agree with go/types on %s", src.version, checked, src.goroot)
		})
	}
}

// alwaysChecked are checked even on a fresh machine: the oldest and newest
// minors and the three releases the e2e tests build with, plus go1.26.11,
// whose security fix moved response.status within a minor.
var alwaysChecked = []string{"go1.21.13", "go1.22.12", "go1.26.11", "go1.27.3"}

// cachedToolchains lists the GOTOOLCHAIN values of the Go toolchains in the
// module cache, e.g. "go1.21.13".
func cachedToolchains(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	dirs, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "golang.org", "toolchain@v0.0.1-go*.linux-amd64"))
	var tcs []string
	for _, d := range dirs {
		v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(d), "toolchain@v0.0.1-"), ".linux-amd64")
		tcs = append(tcs, v)
	}
	sort.Strings(tcs)
	return tcs
}

var errNoField = errors.New("no such field")

// stdSource is one toolchain's standard library, type-checked from source.
type stdSource struct {
	version, goroot string
	fset            *token.FileSet
	list            map[string]*listedPackage // by import path as go list resolved it
	pkgs            map[string]*types.Package
	sizes           types.Sizes
	errs            []error // type errors, for the failure message
}

type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	ImportMap  map[string]string
}

// loadStdSource asks toolchain tc ("local" or a GOTOOLCHAIN value) which
// files make net/http and its dependencies for linux/amd64 without cgo.
func loadStdSource(t *testing.T, tc string) *stdSource {
	t.Helper()
	dir := t.TempDir() // outside any module, so an older toolchain is not refused by our go line
	env := append(os.Environ(), "GOTOOLCHAIN="+tc, "GOWORK=off", "GOFLAGS=", "GO111MODULE=",
		"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	run := func(args ...string) []byte {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOTOOLCHAIN=%s go %s: %v\n%s", tc, strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}
	s := &stdSource{
		fset:  token.NewFileSet(),
		list:  map[string]*listedPackage{},
		pkgs:  map[string]*types.Package{},
		sizes: types.SizesFor("gc", "amd64"),
	}
	vars := strings.Fields(string(run("env", "GOVERSION", "GOROOT")))
	if len(vars) != 2 {
		t.Fatalf("go env GOVERSION GOROOT: %q", vars)
	}
	s.version, s.goroot = vars[0], vars[1]
	dec := json.NewDecoder(bytes.NewReader(run("list", "-deps", "-json=ImportPath,Dir,GoFiles,ImportMap", "net/http", "net/url", "runtime")))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		s.list[p.ImportPath] = &p
	}
	return s
}

// offset returns k's byte offset in its struct, or errNoField.
func (s *stdSource) offset(k Key) (uint64, error) {
	if s.list[k.Package] == nil {
		// A package this release does not have (net/http/internal/http2
		// before Go 1.27), rather than one go list failed to give.
		return 0, fmt.Errorf("package %s: %w", k.Package, errNoField)
	}
	pkg, err := s.check(k.Package)
	if err != nil {
		return 0, err
	}
	obj := pkg.Scope().Lookup(k.Struct)
	if obj == nil {
		return 0, fmt.Errorf("%s.%s: no such type: %w", k.Package, k.Struct, errNoField)
	}
	st, ok := obj.Type().Underlying().(*types.Struct)
	if !ok {
		return 0, fmt.Errorf("%s.%s is not a struct", k.Package, k.Struct)
	}
	var fields []*types.Var
	for i := range st.NumFields() {
		fields = append(fields, st.Field(i))
	}
	offs := s.sizes.Offsetsof(fields)
	for i, f := range fields {
		// A field type go/types could not resolve would have a made-up size,
		// and so would every offset after it.
		if !valid(f.Type(), 0) {
			return 0, fmt.Errorf("%s.%s.%s has an unresolved type %v (type errors: %v)", k.Package, k.Struct, f.Name(), f.Type(), errors.Join(s.errs...))
		}
		if f.Name() == k.Field {
			return uint64(offs[i]), nil
		}
	}
	return 0, fmt.Errorf("%s.%s.%s: %w", k.Package, k.Struct, k.Field, errNoField)
}

// check type-checks path (as go list resolved it) and its imports, without
// function bodies: only declarations decide a layout. Errors in code the
// running go/types does not understand are ignored unless the package ends
// up incomplete.
func (s *stdSource) check(path string) (*types.Package, error) {
	if path == "unsafe" {
		return types.Unsafe, nil
	}
	if p := s.pkgs[path]; p != nil {
		return p, nil
	}
	lp := s.list[path]
	if lp == nil {
		return nil, fmt.Errorf("package %s not listed by go list", path)
	}
	var files []*ast.File
	for _, name := range lp.GoFiles {
		f, err := parser.ParseFile(s.fset, filepath.Join(lp.Dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
		files = append(files, f)
	}
	conf := types.Config{
		Importer:         importerFunc(func(imp string) (*types.Package, error) { return s.check(resolve(lp, imp)) }),
		Sizes:            s.sizes,
		IgnoreFuncBodies: true,
		FakeImportC:      true,
		Error:            func(err error) { s.errs = append(s.errs, err) },
	}
	pkg, _ := conf.Check(path, s.fset, files, nil)
	s.pkgs[path] = pkg
	return pkg, nil
}

// valid reports whether t's size is known: no invalid type inside it.
func valid(t types.Type, depth int) bool {
	if depth > 8 {
		return true
	}
	switch u := t.Underlying().(type) {
	case *types.Basic:
		return u.Kind() != types.Invalid
	case *types.Array:
		return valid(u.Elem(), depth+1)
	case *types.Struct:
		for i := range u.NumFields() {
			if !valid(u.Field(i).Type(), depth+1) {
				return false
			}
		}
	}
	return true // pointers, slices, maps, funcs, interfaces, chans: fixed sizes
}

func resolve(lp *listedPackage, imp string) string {
	if r, ok := lp.ImportMap[imp]; ok {
		return r
	}
	return imp
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }
