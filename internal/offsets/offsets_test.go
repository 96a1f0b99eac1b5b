package offsets

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/obsd-dev/obsd/internal/inspect"
)

func load(t *testing.T) *Table {
	t.Helper()
	tb, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return tb
}

func TestLoad(t *testing.T) {
	tb := load(t)
	if len(tb.Keys()) == 0 {
		t.Fatal("embedded table is empty")
	}
	method := Key{Std, "net/http", "Request", "Method"}
	vs := tb.Versions(method)
	if len(vs) < 7 {
		t.Errorf("Request.Method known for %v, want the seven minors go1.21 to go1.27", vs)
	}
	for _, v := range vs {
		if off, ok := tb.Get(method, v); !ok || off != 0 {
			t.Errorf("Request.Method in %s at %d, %v; want 0", v, off, ok)
		}
	}
}

// The embedded file must be exactly what MarshalJSON writes: generated, not edited by hand.
func TestEmbeddedIsCanonical(t *testing.T) {
	data, err := json.MarshalIndent(load(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(append(data, '\n')) != string(embedded) {
		t.Error("offsets.json differs from its re-encoding; regenerate it with go run ./internal/tools/offsetgen -out internal/offsets/offsets.json")
	}
}

// TestTableMatchesDWARF builds the offsetgen template with the toolchain at hand and checks every
// field of the table for that Go version against the binary's DWARF: present fields must agree,
// absent ones must be absent.
func TestTableMatchesDWARF(t *testing.T) {
	tb := load(t)
	b := buildTemplate(t)
	if !tb.Known(Std, b.GoVersion) {
		t.Fatalf("the table does not cover %s, the toolchain at hand; regenerate it (make offsets)", b.GoVersion)
	}
	checked := 0
	for _, k := range tb.Keys() {
		if k.Module != Std {
			continue
		}
		want, ok := tb.Get(k, b.GoVersion)
		got, err := b.FieldOffset(k.Package, k.Struct, k.Field)
		switch {
		case ok && err != nil:
			t.Errorf("%v: table says %d for %s, DWARF: %v", k, want, b.GoVersion, err)
		case ok && got != want:
			t.Errorf("%v: table says %d for %s, DWARF says %d", k, want, b.GoVersion, got)
		case !ok && !errors.Is(err, inspect.ErrNoField):
			t.Errorf("%v: not in the table for %s, but DWARF gives %d, %v", k, b.GoVersion, got, err)
		}
		checked++
	}
	t.Logf("checked %d fields for %s", checked, b.GoVersion)
}

func buildTemplate(t *testing.T) *inspect.Binary {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "tools", "offsetgen", "testdata", "std", "main.go")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Its own go.mod, as offsetgen gives it, so the build does not depend on the repository's.
	for name, content := range map[string]string{
		"main.go": string(data),
		"go.mod":  "module obsd.invalid/offsetgen/std\n\ngo 1.21\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "std")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build template: %v\n%s", err, out)
	}
	b, err := inspect.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A small table: Method everywhere; Pattern from 1.23 (absent in 1.22, moved within 1.23); status
// moved within 1.26; a module field.
const testTable = `[
  {"module": "google.golang.org/grpc", "packages": [{"package": "google.golang.org/grpc", "structs": [
    {"struct": "ClientConn", "fields": [{"field": "target", "offsets": [
      {"offset": 24, "versions": ["1.63.0", "1.64.0"]}, {"offset": 32, "versions": ["1.65.0"]}]}]}]}]},
  {"module": "std", "packages": [{"package": "net/http", "structs": [
    {"struct": "Request", "fields": [
      {"field": "Method", "offsets": [{"offset": 0, "versions": ["1.22.0", "1.22.12", "1.23.0", "1.23.6", "1.23.7", "1.23.12", "1.25rc1"]}]},
      {"field": "Pattern", "offsets": [
        {"offset": null, "versions": ["1.22.0"]},
        {"offset": 232, "versions": ["1.23.0", "1.23.6"]},
        {"offset": 240, "versions": ["1.23.7", "1.23.12", "1.25rc1"]}]}]},
    {"struct": "response", "fields": [
      {"field": "status", "offsets": [{"offset": 120, "versions": ["1.26.0", "1.26.8"]}, {"offset": 128, "versions": ["1.26.11"]}]}]}]}]}
]`

func TestGet(t *testing.T) {
	tb, err := Parse([]byte(testTable))
	if err != nil {
		t.Fatal(err)
	}
	method := Key{Std, "net/http", "Request", "Method"}
	pattern := Key{Std, "net/http", "Request", "Pattern"}
	status := Key{Std, "net/http", "response", "status"}
	target := Key{"google.golang.org/grpc", "google.golang.org/grpc", "ClientConn", "target"}
	tests := []struct {
		name    string
		k       Key
		version string
		want    uint64
		ok      bool
		known   bool // Known(k.Module, version)
	}{
		{"exact", method, "go1.23.12", 0, true, true},
		{"exact bare", pattern, "1.23.12", 240, true, true},
		{"between agreeing releases", pattern, "go1.23.3", 232, true, true},
		{"between agreeing releases, later", pattern, "go1.23.9", 240, true, true},
		{"between agreeing releases of another field", method, "go1.22.5", 0, true, true},
		{"exact at a change", status, "go1.26.8", 120, true, true},
		{"between releases that disagree", status, "go1.26.9", 0, false, false},
		{"before a change", status, "go1.26.4", 120, true, true},
		{"newer than any listed patch", status, "go1.26.12", 0, false, false},
		{"newer than any listed patch, stable field", method, "go1.23.13", 0, false, false},
		{".0 spelt without patch", pattern, "go1.23", 232, true, true},
		{"absent in a listed release", pattern, "go1.22.0", 0, false, true},
		{"absent between releases", pattern, "go1.22.3", 0, false, true},
		{"unknown minor", method, "go1.27.1", 0, false, false},
		{"unknown older minor", method, "go1.21.13", 0, false, false},
		{"pre-release exact", pattern, "go1.25rc1", 240, true, true},
		{"pre-release not listed", method, "go1.24rc1", 0, false, false},
		{"devel", method, "go1.23-abcdef", 0, false, false},
		{"malformed", method, "latest", 0, false, false},
		{"wrong prefix", method, "v1.23.12", 0, false, false},
		{"unknown field", Key{Std, "net/http", "Request", "Nope"}, "go1.23.12", 0, false, true},
		{"module exact", target, "v1.64.0", 24, true, true},
		{"module later version", target, "v1.65.0", 32, true, true},
		{"module versions are never bracketed", target, "v1.63.5", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tb.Get(tt.k, tt.version)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Get(%v, %s) = %d, %v; want %d, %v", tt.k, tt.version, got, ok, tt.want, tt.ok)
			}
			if known := tb.Known(tt.k.Module, tt.version); known != tt.known {
				t.Errorf("Known(%s, %s) = %v, want %v", tt.k.Module, tt.version, known, tt.known)
			}
		})
	}
}

func TestVersions(t *testing.T) {
	tb, err := Parse([]byte(testTable))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		k    Key
		want []string
	}{
		{Key{Std, "net/http", "Request", "Pattern"}, []string{"go1.23.0", "go1.23.6", "go1.23.7", "go1.23.12", "go1.25rc1"}},
		{Key{"google.golang.org/grpc", "google.golang.org/grpc", "ClientConn", "target"}, []string{"v1.63.0", "v1.64.0", "v1.65.0"}},
		{Key{Std, "net/http", "Request", "Nope"}, []string{}},
	}
	for _, tt := range tests {
		if got := tb.Versions(tt.k); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Versions(%v) = %q, want %q", tt.k, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, json string }{
		{"not JSON", `{`},
		{"not a list", `{"module": "std"}`},
		{"unknown field", `[{"module": "std", "pkgs": []}]`},
		{"malformed version", `[{"module": "std", "packages": [{"package": "p", "structs": [{"struct": "S", "fields": [{"field": "f", "offsets": [{"offset": 1, "versions": ["one"]}]}]}]}]}]`},
		{"version twice", `[{"module": "std", "packages": [{"package": "p", "structs": [{"struct": "S", "fields": [{"field": "f", "offsets": [{"offset": 1, "versions": ["1.22.1"]}, {"offset": 2, "versions": ["1.22.1"]}]}]}]}]}]`},
		{"empty name", `[{"module": "std", "packages": [{"package": "", "structs": [{"struct": "S", "fields": [{"field": "f", "offsets": []}]}]}]}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.json)); err == nil {
				t.Error("Parse succeeded")
			}
		})
	}
}

// Set then MarshalJSON then Parse gives the same table, with offsets grouped and versions sorted.
func TestRoundTrip(t *testing.T) {
	var tb Table
	k := Key{Std, "runtime", "g", "goid"}
	for v, off := range map[string]uint64{"go1.25.14": 152, "go1.23.12": 160, "go1.21.13": 152, "go1.24.13": 160} {
		if err := tb.Set(k, v, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Set(k, "go1.23.12", 8); err == nil {
		t.Error("Set accepted a second offset for a version")
	}
	data, err := json.Marshal(&tb)
	if err != nil {
		t.Fatal(err)
	}
	const want = `[{"module":"std","packages":[{"package":"runtime","structs":[{"struct":"g","fields":[{"field":"goid","offsets":[` +
		`{"offset":152,"versions":["1.21.13","1.25.14"]},{"offset":160,"versions":["1.23.12","1.24.13"]}]}]}]}]}]`
	if string(data) != want {
		t.Errorf("MarshalJSON:\n%s\nwant\n%s", data, want)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.fields, tb.fields) {
		t.Errorf("round trip: %v, want %v", back.fields, tb.fields)
	}
}
