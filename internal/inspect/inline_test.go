package inspect

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/testenv"
)

// buildHello builds testdata/hello with toolchain (a GOTOOLCHAIN value; "" is the Go running the
// test) as flavour f, in a module of its own whose go line is the toolchain's, through the build
// cache the end-to-end tests share (testenv.SharedBuildCache): each build happens once per machine,
// fuzz workers (each a new process) and later runs find it there, and a PGO build uses the same
// recorded profile as the end-to-end suites' (net/http's server path hot), so the standard
// library compiled with it is reused too.
func buildHello(t testing.TB, toolchain string, f testenv.Flavour) string {
	t.Helper()
	if f.External || f.CGO {
		if _, err := exec.LookPath("gcc"); err != nil {
			testenv.Skip(t, "no C compiler for a cgo build (CI installs gcc): %v", err)
		}
	}
	out, err := testenv.SharedBuildCache().Build(testenv.Program{Name: "hello", Src: "testdata/hello", Toolchain: toolchain, Flavour: f})
	if err != nil {
		t.Fatalf("building hello: %v", err)
	}
	return out
}

// dwarfInlined lists (callee, outermost caller) for every DW_TAG_inlined_subroutine, an
// independent source for the inline trees.
func dwarfInlined(t *testing.T, path string) map[Inlined]bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	names := map[dwarf.Offset]string{}
	type pending struct {
		origin dwarf.Offset
		caller string
	}
	var calls []pending
	r := d.Reader()
	var caller string
	depth, callerDepth := 0, -1
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if depth <= callerDepth {
				caller, callerDepth = "", -1
			}
			continue
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			name, _ := e.Val(dwarf.AttrName).(string)
			if name != "" {
				names[e.Offset] = name
			}
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok && name == "" {
				name = "@" + fmt.Sprint(o)
			}
			if _, inline := e.Val(dwarf.AttrInline).(int64); !inline && callerDepth < 0 {
				caller, callerDepth = name, depth
			}
		case dwarf.TagInlinedSubroutine:
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok && caller != "" {
				calls = append(calls, pending{o, caller})
			}
		}
		if e.Children {
			depth++
		}
	}
	out := map[Inlined]bool{}
	for _, c := range calls {
		caller := c.caller
		if strings.HasPrefix(caller, "@") {
			var o dwarf.Offset
			fmt.Sscan(caller[1:], &o)
			caller = names[o]
		}
		out[Inlined{Func: names[c.origin], Caller: caller}] = true
	}
	return out
}

// treeInlined lists (callee, caller) from the inline trees of the function table.
func treeInlined(t *testing.T, b *Binary) map[Inlined]bool {
	t.Helper()
	out := map[Inlined]bool{}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.inlineTrees(func(callee, caller string) { out[Inlined{callee, caller}] = true }); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedDiff(a, b map[Inlined]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k.String())
		}
	}
	sort.Strings(out)
	return out
}

// copies derives from path a copy stripped by binutils (no .symtab, no DWARF, sections kept) and one
// without section headers at all, as strip --strip-section-headers or sstrip leave a binary.
func copies(t *testing.T, path string) (stripped, noSections string) {
	t.Helper()
	dir := t.TempDir()
	stripped = filepath.Join(dir, "stripped")
	if out, err := exec.Command("strip", "--strip-all", "-o", stripped, path).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	data, err := os.ReadFile(stripped)
	if err != nil {
		t.Fatal(err)
	}
	noSections = filepath.Join(dir, "no-sections")
	if err := os.WriteFile(noSections, dropSectionHeaders(t, data), 0o755); err != nil {
		t.Fatal(err)
	}
	return stripped, noSections
}

// dropSectionHeaders zeroes e_shoff, e_shnum and e_shstrndx of a 64-bit little-endian ELF file and
// cuts what follows its last loaded segment, as sstrip does.
func dropSectionHeaders(t *testing.T, data []byte) []byte {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	end := uint64(0)
	for _, p := range f.Progs {
		if p.Off+p.Filesz > end {
			end = p.Off + p.Filesz
		}
	}
	out := bytes.Clone(data[:end])
	binary.LittleEndian.PutUint64(out[0x28:], 0) // e_shoff
	binary.LittleEndian.PutUint16(out[0x3c:], 0) // e_shnum
	binary.LittleEndian.PutUint16(out[0x3e:], 0) // e_shstrndx
	return out
}

// The inline trees read from the function table name exactly the inlined calls DWARF describes,
// in plain, PIE, externally linked (Go 1.21 and current) and PGO (Go 1.27) builds, and the copies without
// DWARF and without section headers give the same trees.
func TestInlineTreesMatchDWARF(t *testing.T) {
	cases := []struct {
		name  string
		build func(t *testing.T) string
	}{
		{"normal", func(t *testing.T) string { return binPath(t, normal) }},
		{"pie", func(t *testing.T) string { return binPath(t, pie) }},
		{"ext-pie", func(t *testing.T) string { return binPath(t, extPIE) }},
		{"go1.21-ext-pie", func(t *testing.T) string {
			return buildHello(t, "go1.21.13", extPIEFlavour)
		}},
		{"go1.27-pgo", func(t *testing.T) string { return buildHello(t, "go1.27.3", testenv.Flavour{PGO: true}) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.build(t)
			want := dwarfInlined(t, path)
			if len(want) < 100 {
				t.Fatalf("DWARF names only %d inlined calls; the comparison would prove nothing", len(want))
			}
			stripped, noSections := copies(t, path)
			for _, p := range []string{path, stripped, noSections} {
				b, err := Open(p)
				if err != nil {
					t.Fatalf("Open(%s): %v", filepath.Base(p), err)
				}
				got := treeInlined(t, b)
				b.Close()
				if extra, missing := sortedDiff(got, want), sortedDiff(want, got); len(extra)+len(missing) > 0 {
					t.Errorf("%s: %d inlined calls, DWARF %d; not in DWARF %d %v; missing %d %v",
						filepath.Base(p), len(got), len(want), len(extra), head(extra), len(missing), head(missing))
				}
			}
		})
	}
}

// Inlined reports exactly the inlined copies DWARF describes, looked up by name, in a PGO build
// (whose profile makes the server path hot, so the probed sites may be among them: Go 1.27 inlines
// (*response).finishRequest into (*conn).serve when the profile caught enough of it) and in its
// copies without DWARF and without section headers; a build without a profile has no inlined site.
func TestInlined(t *testing.T) {
	pgo := buildHello(t, "go1.27.3", testenv.Flavour{PGO: true})
	dw := dwarfInlined(t, pgo)
	// The sites, and net/http functions the compiler inlines whatever the profile, so that the
	// look-up by name is tested even when the sites stayed out of line.
	names := []string{serveHTTP, finishRequest}
	for in := range dw {
		if strings.HasPrefix(in.Func, "net/http.(*conn).") && len(names) < 5 {
			names = append(names, in.Func)
		}
	}
	if len(names) < 3 {
		t.Fatalf("DWARF names no inlined net/http.(*conn) method: %v", names)
	}
	stripped, noSections := copies(t, pgo)
	for _, name := range names {
		var want []string
		for in := range dw {
			if in.Func == name {
				want = append(want, in.String())
			}
		}
		sort.Strings(want)
		if name == finishRequest || name == serveHTTP {
			t.Logf("%s: %d inlined copies in the PGO build", name, len(want))
		}
		for _, p := range []string{pgo, stripped, noSections} {
			b := mustOpen(t, p)
			in, err := b.Inlined([]string{name})
			if err != nil {
				t.Fatalf("Inlined(%s): %v", filepath.Base(p), err)
			}
			var got []string
			for _, i := range in {
				got = append(got, i.String())
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: Inlined(%s) = %v, DWARF says %v", filepath.Base(p), name, got, want)
			}
		}
	}
	for _, v := range []string{normal, strippedExtPIE} {
		b := openBin(t, v)
		if in, err := b.Inlined([]string{serveHTTP, finishRequest}); err != nil || in != nil {
			t.Errorf("%s: Inlined = %v, %v; want none", v, in, err)
		}
	}
}

func TestMaxPCValue(t *testing.T) {
	tests := []struct {
		name string
		tab  []byte
		want int32
		err  bool
	}{
		{"no inlining", []byte{0x01, 0x10, 0x00}, -1, false},                        // -1 -> -1 (delta 0 first), end
		{"two entries", []byte{0x02, 0x04, 0x02, 0x04, 0x03, 0x02, 0x00}, 1, false}, // -1+1=0, +1=1, -2=-1
		{"truncated", []byte{0x02}, 0, true},
		{"overlong", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01}, 0, true},
		{"huge index", []byte{0xfe, 0xff, 0xff, 0x0f, 0x01, 0x00}, 0, true},
	}
	for _, tt := range tests {
		got, err := maxPCValue(tt.tab)
		if (err != nil) != tt.err || (err == nil && got != tt.want) {
			t.Errorf("%s: maxPCValue = %d, %v; want %d, error %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func head(s []string) []string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}
