// Package offsets holds the struct field offsets obsd falls back on when a target binary has no
// DWARF (linked with -w). The table is offsets.json, embedded, in the shape OpenTelemetry Go
// auto-instrumentation uses (module -> packages -> structs -> fields -> list of {offset, versions}).
// It is generated, never hand-edited:
//
//	go run ./internal/tools/offsetgen -out internal/offsets/offsets.json
//
// Versions are stored bare ("1.26.11", "1.64.0") as in OpenTelemetry's table; the API takes and
// returns them as obsd sees them: "go1.26.11" for the standard library, "v1.64.0" for a module.
//
// offsetgen imports this package, so offsets.json must exist for it to build: "[]" is an empty table.
package offsets

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Std is the Module of standard-library keys; their versions are Go versions.
const Std = "std"

// Key names a struct field: Package is an import path, Struct the type name within it.
type Key struct {
	Module, Package, Struct, Field string
}

func (k Key) String() string {
	return k.Module + ":" + k.Package + "." + k.Struct + "." + k.Field
}

//go:embed offsets.json
var embedded []byte

// Table maps fields and versions to offsets. The zero value is an empty table ready for Set; a
// Table is safe for concurrent reads, not for reads concurrent with Set.
type Table struct {
	fields   map[Key]map[string]uint64  // bare version -> offset
	versions map[string]map[string]bool // module -> every bare version any of its fields lists
}

// Load parses the embedded table.
func Load() (*Table, error) {
	t, err := Parse(embedded)
	if err != nil {
		return nil, fmt.Errorf("load embedded offsets.json: %w", err)
	}
	return t, nil
}

// The JSON shape, as in OpenTelemetry Go auto's offset_results.json.
type (
	jsonModule struct {
		Module   string        `json:"module"`
		Packages []jsonPackage `json:"packages"`
	}
	jsonPackage struct {
		Package string       `json:"package"`
		Structs []jsonStruct `json:"structs"`
	}
	jsonStruct struct {
		Struct string      `json:"struct"`
		Fields []jsonField `json:"fields"`
	}
	jsonField struct {
		Field   string       `json:"field"`
		Offsets []jsonOffset `json:"offsets"`
	}
	jsonOffset struct {
		// Offset is null in OpenTelemetry's table for versions lacking the field; obsd's
		// generator leaves such versions out, and Parse ignores null entries.
		Offset   *uint64  `json:"offset"`
		Versions []string `json:"versions"`
	}
)

// Parse reads a table in the JSON shape above. It refuses duplicate or malformed versions and a
// version listed with two offsets for one field.
func Parse(data []byte) (*Table, error) {
	var mods []jsonModule
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mods); err != nil {
		return nil, fmt.Errorf("parse offsets table: %w", err)
	}
	t := &Table{}
	for _, m := range mods {
		for _, p := range m.Packages {
			for _, s := range p.Structs {
				for _, f := range s.Fields {
					k := Key{Module: m.Module, Package: p.Package, Struct: s.Struct, Field: f.Field}
					if k.Module == "" || k.Package == "" || k.Struct == "" || k.Field == "" {
						return nil, fmt.Errorf("parse offsets table: incomplete key %v", k)
					}
					for _, o := range f.Offsets {
						if o.Offset == nil {
							continue
						}
						for _, v := range o.Versions {
							if err := t.set(k, v, *o.Offset, true); err != nil {
								return nil, fmt.Errorf("parse offsets table: %w", err)
							}
						}
					}
				}
			}
		}
	}
	return t, nil
}

// Set records that k is at off in version (bare or prefixed, as Get takes it).
func (t *Table) Set(k Key, version string, off uint64) error {
	return t.set(k, version, off, false)
}

func (t *Table) set(k Key, version string, off uint64, strict bool) error {
	bare, err := bareVersion(k.Module, version)
	if err != nil {
		return fmt.Errorf("%v: %w", k, err)
	}
	if t.fields == nil {
		t.fields = map[Key]map[string]uint64{}
		t.versions = map[string]map[string]bool{}
	}
	if t.versions[k.Module] == nil {
		t.versions[k.Module] = map[string]bool{}
	}
	t.versions[k.Module][bare] = true
	vs := t.fields[k]
	if vs == nil {
		vs = map[string]uint64{}
		t.fields[k] = vs
	}
	if old, dup := vs[bare]; dup && (strict || old != off) {
		return fmt.Errorf("%v: version %s listed twice (offsets %d and %d)", k, bare, old, off)
	}
	vs[bare] = off
	return nil
}

// Get returns the offset of k in version: a Go version ("go1.26.8") for Module "std", else the
// module's version ("v1.64.0").
//
// An exact match comes first. A standard-library release that is not listed takes an offset only
// when it lies between two listed releases of its minor that agree on it (go1.26.5 between go1.26.0
// and go1.26.8): offsetgen lists the releases where layouts change, found by bisecting each minor.
// Patch releases do change unexported layouts (a security fix moved net/http.response.status from
// 120 in go1.26.8 to 128 in go1.26.11), so a release newer than any listed for its minor is not
// guessed at, nor are pre-releases (go1.27rc1), development builds or unlisted module versions.
// ok is false when the field is not in that version or the version is unknown; Known tells which.
func (t *Table) Get(k Key, version string) (off uint64, ok bool) {
	vs := t.fields[k]
	bare, err := bareVersion(k.Module, version)
	if vs == nil || err != nil {
		return 0, false
	}
	if off, ok := vs[bare]; ok {
		return off, true
	}
	lo, hi, ok := t.bracket(k.Module, bare)
	if !ok {
		return 0, false
	}
	offLo, inLo := vs[lo]
	offHi, inHi := vs[hi]
	if inLo && inHi && offLo == offHi {
		return offLo, true
	}
	return 0, false
}

// Known reports whether the table determines every field of module in version: the version is
// listed, or it lies between two listed releases that agree on every field. A false Get for a
// known version means the field does not exist there.
func (t *Table) Known(module, version string) bool {
	bare, err := bareVersion(module, version)
	if err != nil {
		return false
	}
	if t.versions[module][bare] {
		return true
	}
	lo, hi, ok := t.bracket(module, bare)
	if !ok {
		return false
	}
	for k, vs := range t.fields {
		if k.Module != module {
			continue
		}
		offLo, inLo := vs[lo]
		offHi, inHi := vs[hi]
		if inLo != inHi || offLo != offHi {
			return false
		}
	}
	return true
}

// bracket finds, for a standard-library release that is not listed, the nearest listed releases
// of the same minor below and above it.
func (t *Table) bracket(module, bare string) (lo, hi string, ok bool) {
	want, valid := parseVersion(bare)
	if module != Std || !valid || want.pre != "" {
		return "", "", false
	}
	var foundLo, foundHi bool
	for l := range t.versions[module] {
		v, valid := parseVersion(l)
		if !valid || v.pre != "" || v.major != want.major || v.minor != want.minor {
			continue
		}
		switch c := compareVersions(l, bare); {
		case c < 0 && (!foundLo || compareVersions(l, lo) > 0):
			lo, foundLo = l, true
		case c > 0 && (!foundHi || compareVersions(l, hi) < 0):
			hi, foundHi = l, true
		}
	}
	return lo, hi, foundLo && foundHi
}

// Versions lists, oldest first, the versions that have an offset for k, prefixed as Get takes them.
func (t *Table) Versions(k Key) []string {
	vs := keys(t.fields[k])
	sortVersions(vs)
	for i, v := range vs {
		vs[i] = prefix(k.Module) + v
	}
	return vs
}

// Keys lists every field in the table, sorted.
func (t *Table) Keys() []Key {
	ks := make([]Key, 0, len(t.fields))
	for k := range t.fields {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return keyLess(ks[i], ks[j]) })
	return ks
}

// MarshalJSON writes the table in OpenTelemetry's shape, sorted by module, package, struct and
// field, each field's offsets in order of their oldest version, so that regenerating an unchanged
// table changes no byte.
func (t *Table) MarshalJSON() ([]byte, error) {
	mods := []jsonModule{}
	for _, k := range t.Keys() {
		if n := len(mods); n == 0 || mods[n-1].Module != k.Module {
			mods = append(mods, jsonModule{Module: k.Module})
		}
		m := &mods[len(mods)-1]
		if n := len(m.Packages); n == 0 || m.Packages[n-1].Package != k.Package {
			m.Packages = append(m.Packages, jsonPackage{Package: k.Package})
		}
		p := &m.Packages[len(m.Packages)-1]
		if n := len(p.Structs); n == 0 || p.Structs[n-1].Struct != k.Struct {
			p.Structs = append(p.Structs, jsonStruct{Struct: k.Struct})
		}
		s := &p.Structs[len(p.Structs)-1]

		vs := keys(t.fields[k])
		sortVersions(vs)
		f := jsonField{Field: k.Field}
		at := map[uint64]int{} // offset -> index in f.Offsets
		for _, v := range vs {
			off := t.fields[k][v]
			i, ok := at[off]
			if !ok {
				i = len(f.Offsets)
				at[off] = i
				f.Offsets = append(f.Offsets, jsonOffset{Offset: &off})
			}
			f.Offsets[i].Versions = append(f.Offsets[i].Versions, v)
		}
		s.Fields = append(s.Fields, f)
	}
	return json.Marshal(mods)
}

func keyLess(a, b Key) bool {
	if a.Module != b.Module {
		return a.Module < b.Module
	}
	if a.Package != b.Package {
		return a.Package < b.Package
	}
	if a.Struct != b.Struct {
		return a.Struct < b.Struct
	}
	return a.Field < b.Field
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func prefix(module string) string {
	if module == Std {
		return "go"
	}
	return "v"
}

// bareVersion strips the "go" or "v" prefix and checks what remains looks like a version. A Go
// release spelt without its patch ("go1.20", as Go 1.20 and older name their .0) gets ".0".
func bareVersion(module, v string) (string, error) {
	bare := strings.TrimPrefix(v, prefix(module))
	pv, ok := parseVersion(bare)
	if !ok {
		return "", fmt.Errorf("malformed version %q", v)
	}
	if module == Std && !pv.hasPatch && pv.pre == "" {
		bare += ".0"
	}
	return bare, nil
}

// version is a parsed "MAJOR.MINOR[.PATCH][-pre]"; Go's pre-releases ("1.27rc1") have no dash.
type version struct {
	major, minor, patch int
	hasPatch            bool
	pre                 string
}

func parseVersion(s string) (version, bool) {
	var v version
	num := func() (int, bool) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		n, err := strconv.Atoi(s[:i])
		s = s[i:]
		return n, err == nil
	}
	var ok bool
	if v.major, ok = num(); !ok || !strings.HasPrefix(s, ".") {
		return v, false
	}
	s = s[1:]
	if v.minor, ok = num(); !ok {
		return v, false
	}
	if strings.HasPrefix(s, ".") {
		s = s[1:]
		if v.patch, ok = num(); !ok {
			return v, false
		}
		v.hasPatch = true
	}
	v.pre = strings.TrimPrefix(s, "-")
	if strings.ContainsAny(v.pre, " \t\n") {
		return v, false
	}
	return v, true
}

func compareVersions(a, b string) int {
	va, _ := parseVersion(a)
	vb, _ := parseVersion(b)
	for _, d := range [...]int{va.major - vb.major, va.minor - vb.minor, va.patch - vb.patch} {
		if d != 0 {
			return d
		}
	}
	switch {
	case va.pre == vb.pre:
		return strings.Compare(a, b)
	case va.pre == "":
		return 1 // a release sorts after its pre-releases
	case vb.pre == "":
		return -1
	}
	return strings.Compare(va.pre, vb.pre)
}

func sortVersions(vs []string) {
	sort.Slice(vs, func(i, j int) bool { return compareVersions(vs[i], vs[j]) < 0 })
}
