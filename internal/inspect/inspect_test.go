package inspect

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/obsd-dev/obsd/internal/test/testenv"
)

// The variants of testdata/hello that TestMain builds, once per test run.
const (
	normal         = "normal"
	stripped       = "stripped"     // -s -w: no .symtab, no DWARF
	pie            = "pie"          // -buildmode=pie
	strippedPIE    = "stripped-pie" // both
	extPIE         = "ext-pie"      // external linker: C start-up code before runtime.text
	strippedExtPIE = "stripped-ext-pie"
)

var variants = []struct {
	name  string
	args  []string
	cgo   bool
	strip bool
	pie   bool
}{
	{normal, nil, false, false, false},
	{stripped, []string{"-ldflags=-s -w"}, false, true, false},
	{pie, []string{"-buildmode=pie"}, false, false, true},
	{strippedPIE, []string{"-buildmode=pie", "-ldflags=-s -w"}, false, true, true},
	{extPIE, []string{"-buildmode=pie", "-ldflags=-linkmode=external"}, true, false, true},
	{strippedExtPIE, []string{"-buildmode=pie", "-ldflags=-s -w -linkmode=external"}, true, true, true},
}

// variantBins holds the variants' executables, built in the test binary's temporary directory
// when a test first asks (the fuzz steps of make test ask for none); an external-link variant is
// missing without a C compiler.
var variantBins struct {
	once sync.Once
	dir  string
	bins map[string]string
	err  error
}

const (
	serveHTTP     = "net/http.serverHandler.ServeHTTP"
	finishRequest = "net/http.(*response).finishRequest"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "inspect-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	variantBins.dir = dir
	return m.Run()
}

// buildVariants builds every variant of testdata/hello with the Go running the tests.
func buildVariants() {
	variantBins.bins = map[string]string{}
	_, ccErr := exec.LookPath("cc")
	for _, v := range variants {
		if v.cgo && ccErr != nil {
			fmt.Fprintf(os.Stderr, "no C compiler, not building %s: %v\n", v.name, ccErr)
			continue
		}
		out := filepath.Join(variantBins.dir, v.name)
		args := append([]string{"build", "-o", out}, v.args...)
		cmd := exec.Command("go", append(args, "./testdata/hello")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if v.cgo {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			variantBins.err = fmt.Errorf("build %s: %w\n%s", v.name, err, b)
			return
		}
		variantBins.bins[v.name] = out
	}
}

func binPath(t *testing.T, variant string) string {
	t.Helper()
	variantBins.once.Do(buildVariants)
	if variantBins.err != nil {
		t.Fatal(variantBins.err)
	}
	p, ok := variantBins.bins[variant]
	if !ok {
		testenv.Skip(t, "%s not built (no C compiler: install gcc)", variant)
	}
	return p
}

func openBin(t *testing.T, variant string) *Binary {
	t.Helper()
	b, err := Open(binPath(t, variant))
	if err != nil {
		t.Fatalf("Open(%s): %v", variant, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close(%s): %v", variant, err)
		}
	})
	return b
}

func TestOpen(t *testing.T) {
	want := cleanGoVersion(runtime.Version())
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := openBin(t, v.name)
			if b.GoVersion != want {
				t.Errorf("GoVersion = %q, want %q", b.GoVersion, want)
			}
			if b.MainPath != "github.com/obsd-dev/obsd/internal/inspect/testdata/hello" {
				t.Errorf("MainPath = %q", b.MainPath)
			}
			if b.Stripped != v.strip || b.DWARF != !v.strip || b.PIE != v.pie || b.Arch != "amd64" {
				t.Errorf("Stripped, DWARF, PIE, Arch = %v, %v, %v, %q; want %v, %v, %v, amd64",
					b.Stripped, b.DWARF, b.PIE, b.Arch, v.strip, !v.strip, v.pie)
			}
			if len(b.Modules) != 0 {
				t.Errorf("Modules = %v, want none for a standard-library-only program", b.Modules)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exe, err := os.ReadFile(binPath(t, normal))
	if err != nil {
		t.Fatal(err)
	}
	nonGo := "/usr/bin/true"
	if _, err := os.Stat(nonGo); err != nil {
		nonGo = "/bin/true"
	}
	tests := []struct {
		name, path, reason string
	}{
		{"missing", filepath.Join(dir, "missing"), ReasonUnreadable},
		{"directory", dir, ReasonUnreadable},
		{"empty", write("empty", nil), ReasonNotELF},
		{"text", write("text", []byte("#!/bin/sh\necho hello\n")), ReasonNotELF},
		{"truncated ELF", write("truncated", exe[:100]), ReasonNotELF},
		{"non-Go ELF", nonGo, ReasonNotGo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Open(tt.path)
			if err == nil {
				b.Close()
				t.Fatalf("Open(%s) succeeded, want reason %s", tt.path, tt.reason)
			}
			if got := ReasonOf(err); got != tt.reason {
				t.Errorf("Open(%s) reason = %s, want %s (error: %v)", tt.path, got, tt.reason, err)
			}
		})
	}
}

// promtool as Debian ships it: built by Go 1.19, externally linked, stripped. obsd refuses that Go
// version, but must read it to say so, and its function table is of the Go 1.18 layout.
func TestOpenGo119(t *testing.T) {
	const path = "/usr/bin/promtool"
	if _, err := os.Stat(path); err != nil {
		testenv.Skip(t, "no %s (Debian package prometheus): %v", path, err)
	}
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	if m := goVersionRE.FindStringSubmatch(b.GoVersion); m == nil || m[1] != "19" || m[3] != "" {
		t.Errorf("GoVersion = %q, want a go1.19.x release", b.GoVersion)
	}
	// Debian builds in GOPATH mode, so the build info has a path but no modules.
	if b.MainPath != "github.com/prometheus/prometheus/cmd/promtool" {
		t.Errorf("MainPath = %q", b.MainPath)
	}
	// promtool is a client: no server functions are linked in.
	const sym = "net/http.(*Client).do"
	if _, err := b.Func(sym); err != nil {
		t.Fatalf("Func: %v", err)
	}
	// Before Go 1.21 frames were made with SUBQ and MOVQ BP, x(SP): there is no PUSHQ BP, and
	// EntrySite must say so rather than fall back to the function start.
	if off, err := b.EntrySite(sym); ReasonOf(err) != ReasonPrologue {
		t.Errorf("EntrySite = %#x, %v; want reason %s", off, err, ReasonPrologue)
	}
}

func TestFuncStrippedMatchesSymtab(t *testing.T) {
	pairs := [][2]string{{normal, stripped}, {pie, strippedPIE}, {extPIE, strippedExtPIE}}
	for _, p := range pairs {
		for _, sym := range []string{serveHTTP, finishRequest} {
			t.Run(p[1]+"/"+sym, func(t *testing.T) {
				full, bare := openBin(t, p[0]), openBin(t, p[1])
				want, err := full.Func(sym)
				if err != nil {
					t.Fatalf("Func in %s: %v", p[0], err)
				}
				got, err := bare.Func(sym)
				if err != nil {
					t.Fatalf("Func in %s: %v", p[1], err)
				}
				if got.Name != sym || got.Addr != want.Addr || want.Addr == 0 {
					t.Errorf("%s: %s at %#x, %s: %s at %#x", p[1], got.Name, got.Addr, p[0], want.Name, want.Addr)
				}
				// pclntab sizes run to the next function, so include padding.
				if want.Size == 0 || got.Size < want.Size || got.Size > want.Size+64 {
					t.Errorf("size %d from .gopclntab, %d from .symtab", got.Size, want.Size)
				}
			})
		}
	}
}

// Every function of the table must sit where .symtab says, which checks how runtime.text is found
// (it is not .text's start under external linking).
func TestPclntabMatchesSymtab(t *testing.T) {
	for _, v := range []string{normal, pie, extPIE} {
		t.Run(v, func(t *testing.T) {
			b := openBin(t, v)
			fromSym, err := b.symtabFuncs()
			if err != nil {
				t.Fatal(err)
			}
			fromPcln, err := b.pclntabFuncs()
			if err != nil {
				t.Fatal(err)
			}
			compared := 0
			for name, pf := range fromPcln {
				sf, ok := fromSym[name]
				if _, abi0 := fromSym[name+".abi0"]; !ok || abi0 {
					// The table names an assembly function and its ABI wrapper alike.
					continue
				}
				compared++
				if pf.Addr != sf.Addr {
					t.Errorf("%s: %#x from .gopclntab, %#x from .symtab", name, pf.Addr, sf.Addr)
				}
			}
			if compared < 1000 {
				t.Errorf("only %d functions in both tables", compared)
			}
		})
	}
}

func TestFuncMissing(t *testing.T) {
	for _, v := range []string{normal, stripped} {
		t.Run(v, func(t *testing.T) {
			_, err := openBin(t, v).Func("net/http.noSuchFunction")
			if ReasonOf(err) != ReasonSymbol {
				t.Errorf("reason %q, want %s (error: %v)", ReasonOf(err), ReasonSymbol, err)
			}
		})
	}
}

func TestFileOffset(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := openBin(t, v.name)
			exe, err := os.ReadFile(binPath(t, v.name))
			if err != nil {
				t.Fatal(err)
			}
			ef, err := elf.NewFile(bytes.NewReader(exe))
			if err != nil {
				t.Fatal(err)
			}
			text := ef.Section(".text")
			code, err := text.Data()
			if err != nil {
				t.Fatal(err)
			}
			for _, sym := range []string{serveHTTP, finishRequest} {
				fn, err := b.Func(sym)
				if err != nil {
					t.Fatal(err)
				}
				off, err := b.FileOffset(fn.Addr)
				if err != nil {
					t.Fatal(err)
				}
				want := code[fn.Addr-text.Addr:][:32]
				if got := exe[off : off+32]; !bytes.Equal(got, want) {
					t.Errorf("%s: file bytes at %#x are % x, .text at %#x has % x", sym, off, got, fn.Addr, want)
				}
			}
			// .bss is mapped from no file bytes.
			if bss := ef.Section(".bss"); bss == nil {
				t.Error("no .bss")
			} else if off, err := b.FileOffset(bss.Addr + 8); err == nil {
				t.Errorf("FileOffset(.bss) = %#x, want an error", off)
			}
		})
	}
}

func TestEntrySite(t *testing.T) {
	for _, v := range variants {
		for _, sym := range []string{serveHTTP, finishRequest} {
			t.Run(v.name+"/"+sym, func(t *testing.T) {
				b := openBin(t, v.name)
				exe, err := os.ReadFile(binPath(t, v.name))
				if err != nil {
					t.Fatal(err)
				}
				fn, err := b.Func(sym)
				if err != nil {
					t.Fatal(err)
				}
				start, err := b.FileOffset(fn.Addr)
				if err != nil {
					t.Fatal(err)
				}
				site, err := b.EntrySite(sym)
				if err != nil {
					t.Fatal(err)
				}
				// After the stack check, never at +0, and inside the function.
				if site <= start || site >= start+fn.Size {
					t.Errorf("site %#x outside (%#x, %#x)", site, start, start+fn.Size)
				}
				if exe[site] != 0x55 {
					t.Errorf("byte at site %#x is %#x, want 0x55 (PUSHQ BP)", site, exe[site])
				}
			})
		}
	}
}

func TestEntrySiteErrors(t *testing.T) {
	exe, err := os.ReadFile(binPath(t, normal))
	if err != nil {
		t.Fatal(err)
	}
	// The same binary claiming to be arm64: everything reads, EntrySite refuses.
	arm := bytes.Clone(exe)
	binary.LittleEndian.PutUint16(arm[18:], uint16(elf.EM_AARCH64))
	armPath := filepath.Join(t.TempDir(), "arm64")
	if err := os.WriteFile(armPath, arm, 0o755); err != nil {
		t.Fatal(err)
	}
	ab, err := Open(armPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	b := openBin(t, normal)

	tests := []struct {
		name   string
		b      *Binary
		sym    string
		reason string
	}{
		{"arm64", ab, serveHTTP, ReasonArch},
		{"missing symbol", b, "main.noSuchFunction", ReasonSymbol},
		// An assembly function without a frame: no PUSHQ BP before its first RET.
		{"frameless", b, "runtime.memequal", ReasonPrologue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.b.EntrySite(tt.sym)
			if got := ReasonOf(err); got != tt.reason {
				t.Errorf("reason %q, want %s (error: %v)", got, tt.reason, err)
			}
		})
	}
}

func TestFindPushBP(t *testing.T) {
	tests := []struct {
		name string
		code []byte
		want int // -1: error
	}{
		{"small frame", []byte{0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x8a, 0, 0, 0, 0x55, 0x48, 0x89, 0xe5}, 10},
		{"short jump", []byte{0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55}, 6},
		{"large frame", []byte{0x4c, 0x8d, 0x64, 0x24, 0xd8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xeb, 3, 0, 0, 0x55}, 15},
		{"nosplit with frame", []byte{0x55, 0x48, 0x89, 0xe5}, 0},
		{"leaf", []byte{0x48, 0x8b, 0x44, 0x24, 0x08, 0xc3, 0x55}, -1},
		{"call first", []byte{0xe8, 0, 0, 0, 0, 0x55}, -1},
		{"push other register", []byte{0x53, 0x90}, -1},
		{"truncated", []byte{0x49, 0x3b, 0x66}, -1},
		{"empty", nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findPushBP(tt.code)
			if tt.want < 0 {
				if err == nil {
					t.Errorf("found PUSHQ BP at +%d, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got +%d, %v; want +%d", got, err, tt.want)
			}
		})
	}
}

func TestFieldOffset(t *testing.T) {
	tests := []struct {
		pkg, typ, field string
		want            uintptr
	}{
		{"net/http", "Request", "Method", unsafe.Offsetof(http.Request{}.Method)},
		{"net/http", "Request", "URL", unsafe.Offsetof(http.Request{}.URL)},
		{"net/http", "Request", "Proto", unsafe.Offsetof(http.Request{}.Proto)},
		{"net/http", "Request", "Header", unsafe.Offsetof(http.Request{}.Header)},
		{"net/http", "Request", "Host", unsafe.Offsetof(http.Request{}.Host)},
		{"net/http", "Request", "RemoteAddr", unsafe.Offsetof(http.Request{}.RemoteAddr)},
		{"net/http", "Request", "Pattern", unsafe.Offsetof(http.Request{}.Pattern)},
		{"net/url", "URL", "Path", unsafe.Offsetof(url.URL{}.Path)},
		{"net/url", "URL", "RawQuery", unsafe.Offsetof(url.URL{}.RawQuery)},
	}
	for _, v := range []string{normal, pie, extPIE} {
		b := openBin(t, v)
		for _, tt := range tests {
			t.Run(v+"/"+tt.typ+"."+tt.field, func(t *testing.T) {
				got, err := b.FieldOffset(tt.pkg, tt.typ, tt.field)
				if err != nil || got != uint64(tt.want) {
					t.Errorf("got %d, %v; want %d", got, err, tt.want)
				}
			})
		}
	}
	// Unexported fields have no unsafe.Offsetof from here; they must at least be found.
	b := openBin(t, normal)
	for _, k := range [][3]string{{"net/http", "response", "req"}, {"net/http", "pattern", "str"}, {"runtime", "g", "goid"}} {
		if _, err := b.FieldOffset(k[0], k[1], k[2]); err != nil {
			t.Errorf("FieldOffset%q: %v", k, err)
		}
	}
	if off, err := b.FieldOffset("net/http", "Request", "Method"); off != 0 || err != nil {
		t.Errorf("Request.Method at %d, %v; want 0", off, err)
	}
}

func TestFieldOffsetErrors(t *testing.T) {
	tests := []struct {
		variant, pkg, typ, field string
		want                     error
	}{
		{stripped, "net/http", "Request", "Method", ErrNoDWARF},
		{strippedPIE, "net/url", "URL", "Path", ErrNoDWARF},
		{normal, "net/http", "Request", "NoSuchField", ErrNoField},
		{normal, "net/http", "NoSuchType", "Method", ErrNoField},
		{normal, "net/http", "request", "Method", ErrNoField},
	}
	for _, tt := range tests {
		t.Run(tt.variant+"/"+tt.typ+"."+tt.field, func(t *testing.T) {
			_, err := openBin(t, tt.variant).FieldOffset(tt.pkg, tt.typ, tt.field)
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClose(t *testing.T) {
	b, err := Open(binPath(t, normal))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Func(serveHTTP); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Func(serveHTTP); err == nil {
		t.Error("Func after Close succeeded")
	}
	if _, err := b.EntrySite(serveHTTP); err == nil {
		t.Error("EntrySite after Close succeeded")
	}
	if _, err := b.FieldOffset("net/http", "Request", "Method"); err == nil {
		t.Error("FieldOffset after Close succeeded")
	}
}

// The lazily built indexes are shared: concurrent first calls must agree (run with -race).
func TestConcurrent(t *testing.T) {
	b := openBin(t, normal)
	want, err := b.Func(serveHTTP)
	if err != nil {
		t.Fatal(err)
	}
	b = openBin(t, normal)
	errs := make(chan error, 8)
	for i := range cap(errs) {
		go func() {
			if i%2 == 0 {
				fn, err := b.Func(serveHTTP)
				if err == nil && fn != want {
					err = fmt.Errorf("got %+v, want %+v", fn, want)
				}
				errs <- err
				return
			}
			_, err := b.FieldOffset("net/url", "URL", "Path")
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestReasonOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"plain", errors.New("boom"), ReasonOther},
		{"direct", &Error{Reason: ReasonNotGo, Err: errors.New("x")}, ReasonNotGo},
		{"wrapped", fmt.Errorf("attach: %w", &Error{Reason: ReasonPrologue, Err: errors.New("x")}), ReasonPrologue},
		{"first wins", &Error{Reason: ReasonSymbol, Err: &Error{Reason: ReasonUnreadable, Err: errors.New("x")}}, ReasonSymbol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReasonOf(tt.err); got != tt.want {
				t.Errorf("ReasonOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCleanGoVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"go1.26.8", "go1.26.8"},
		{"go1.26.8 X:nodwarf5", "go1.26.8"},
		{"go1.20", "go1.20.0"},
		{"go1.19.8", "go1.19.8"},
		{"go1.27rc1", "go1.27rc1"},
		{"devel go1.27-abcdef0123 Tue Aug 4 10:00:00 2026 +0000", "go1.27-abcdef0123"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := cleanGoVersion(tt.in); got != tt.want {
			t.Errorf("cleanGoVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A linker may fold the table into .data.rel.ro; it is then found by a header that parses, past
// look-alikes.
func TestFindPclnHeader(t *testing.T) {
	b := openBin(t, stripped)
	table, _, err := b.pclntab()
	if err != nil {
		t.Fatal(err)
	}
	fake := make([]byte, 64)
	binary.LittleEndian.PutUint32(fake[8:], pclnGo120) // padding bytes not zero
	fake[12], fake[13], fake[14], fake[15] = 0xff, 0, 1, 8
	binary.LittleEndian.PutUint32(fake[24:], pclnGo120) // header fine, but counts out of bounds
	fake[30], fake[31] = 1, 8
	binary.LittleEndian.PutUint64(fake[32:], 1<<40)
	binary.LittleEndian.PutUint32(fake[49:], pclnGo120) // unaligned
	tests := []struct {
		name string
		data []byte
		want int // -1: not found
	}{
		{"at start", table, 0},
		{"after look-alikes", append(bytes.Clone(fake), table...), len(fake)},
		{"look-alikes only", fake, -1},
		{"nothing", make([]byte, 4096), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := findPclnHeader(tt.data, binary.LittleEndian)
			if !ok {
				got = -1
			}
			if got != tt.want {
				t.Errorf("found at %d, want %d", got, tt.want)
			}
		})
	}
}
