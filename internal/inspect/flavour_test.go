package inspect

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/testenv"
)

// Every Go linker's line table: externally linked PIEs (cgo) of Go 1.21–1.24 keep it in
// .data.rel.ro.gopclntab, later ones in .gopclntab, and a binary whose section headers were
// removed keeps it only in a segment. For each supported toolchain, functions found through the
// line table of the stripped copies must be where .symtab of the original says, and the build
// info must still be read.
func TestLineTableEveryLinker(t *testing.T) {
	for _, tc := range fuzzToolchains {
		name := tc
		if name == "" {
			name = "current"
		}
		t.Run(name, func(t *testing.T) {
			orig := buildHello(t, tc, extPIEFlavour)
			want := map[string]Func{}
			ob := mustOpen(t, orig)
			for _, s := range []string{serveHTTP, finishRequest} {
				f, err := ob.Func(s)
				if err != nil {
					t.Fatal(err)
				}
				want[s] = f
			}
			stripped, noSections := copies(t, orig)
			// Cgo like orig, so that both share one compilation of the standard library.
			goStripped := buildHello(t, tc, testenv.Flavour{CGO: true, PIE: true, Stripped: true})
			for _, p := range []string{stripped, noSections, goStripped} {
				b := mustOpen(t, p)
				if !b.Stripped || !b.PIE || b.GoVersion != ob.GoVersion {
					t.Errorf("%s: Stripped %v, PIE %v, GoVersion %q; want true, true, %q", filepath.Base(p), b.Stripped, b.PIE, b.GoVersion, ob.GoVersion)
				}
				for s, w := range want {
					f, err := b.Func(s)
					if err != nil {
						t.Errorf("%s: Func(%s): %v", filepath.Base(p), s, err)
						continue
					}
					if p != goStripped && f.Addr != w.Addr {
						t.Errorf("%s: Func(%s) at %#x, .symtab says %#x", filepath.Base(p), s, f.Addr, w.Addr)
					}
					if _, err := b.EntrySite(s); err != nil {
						t.Errorf("%s: EntrySite(%s): %v", filepath.Base(p), s, err)
					}
				}
				if in, err := b.Inlined([]string{serveHTTP, finishRequest}); err != nil || in != nil {
					t.Errorf("%s: Inlined = %v, %v; want none", filepath.Base(p), in, err)
				}
				if st, err := b.OpenStatic(); err != nil {
					t.Errorf("%s: OpenStatic: %v", filepath.Base(p), err)
				} else {
					st.Close()
				}
			}
		})
	}
}

func mustOpen(t *testing.T, path string) *Binary {
	t.Helper()
	b, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", filepath.Base(path), err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A hostile or corrupt executable is refused with exe_corrupt (or the reason of what it lacks),
// never trusted: every size, count and offset below is patched to claim far more than the file
// holds, and the refusal must come at once, without allocating what was claimed.
func TestCorruptExecutables(t *testing.T) {
	path := binPath(t, stripped)
	clean, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	withDWARF, err := os.ReadFile(binPath(t, normal))
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(clean))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	phdr := func(data []byte, i int) []byte {
		off := le.Uint64(data[0x20:]) + uint64(i)*uint64(le.Uint16(data[0x36:]))
		return data[off:]
	}
	shdr := func(data []byte, name string) []byte {
		f, _ := elf.NewFile(bytes.NewReader(data))
		for i, s := range f.Sections {
			if s.Name == name {
				return data[le.Uint64(data[0x28:])+uint64(i)*uint64(le.Uint16(data[0x3a:])):]
			}
		}
		t.Fatalf("no section %s", name)
		return nil
	}
	pcln := func(data []byte) []byte {
		return data[ef.Section(".gopclntab").Offset:]
	}
	loadIdx := 0
	for i, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_W != 0 {
			loadIdx = i
		}
	}
	const tib = 1 << 40
	tests := []struct {
		name   string
		base   []byte
		patch  func(d []byte)
		reason string
		use    func(b *Binary) error // the call that must fail, when Open succeeds
	}{
		{"segment of 1 TiB", clean, func(d []byte) {
			le.PutUint64(phdr(d, loadIdx)[0x20:], tib) // p_filesz
			le.PutUint64(phdr(d, loadIdx)[0x28:], tib) // p_memsz
		}, ReasonCorrupt, nil},
		{"segment offset past the end", clean, func(d []byte) { le.PutUint64(phdr(d, loadIdx)[0x08:], tib) }, ReasonCorrupt, nil},
		{"line table section of 1 TiB", clean, func(d []byte) { le.PutUint64(shdr(d, ".gopclntab")[0x20:], tib) }, ReasonCorrupt, nil},
		{"function count", clean, func(d []byte) { le.PutUint64(pcln(d)[8:], tib) }, ReasonCorrupt,
			func(b *Binary) error { _, err := b.Func(serveHTTP); return err }},
		{"function table offset", clean, func(d []byte) { le.PutUint64(pcln(d)[8+7*8:], tib) }, ReasonCorrupt,
			func(b *Binary) error { _, err := b.Func(serveHTTP); return err }},
		{"pc-value table offset", clean, func(d []byte) { le.PutUint64(pcln(d)[8+6*8:], tib) }, ReasonCorrupt,
			func(b *Binary) error { _, err := b.Inlined([]string{serveHTTP}); return err }},
		{"build info string length", clean, func(d []byte) {
			bi := d[ef.Section(".go.buildinfo").Offset+32:]
			copy(bi, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
		}, ReasonNotGo, nil},
		{"compressed DWARF of 1 TiB", withDWARF, func(d []byte) {
			s := shdr(d, ".debug_info")
			le.PutUint64(d[le.Uint64(s[0x18:])+8:], tib) // ch_size in the compression header
		}, ReasonCorrupt, func(b *Binary) error { _, err := b.FieldOffset("net/http", "Request", "Method"); return err }},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Clone(tt.base)
			tt.patch(data)
			p := filepath.Join(dir, "patched")
			if err := os.WriteFile(p, data, 0o755); err != nil {
				t.Fatal(err)
			}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			b, err := Open(p)
			if err == nil {
				defer b.Close()
				if tt.use == nil {
					t.Fatalf("Open succeeded, want reason %s", tt.reason)
				}
				err = tt.use(b)
			}
			if ReasonOf(err) != tt.reason {
				t.Errorf("reason %q (%v), want %s", ReasonOf(err), err, tt.reason)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 4*uint64(len(data))+64<<20 {
				t.Errorf("allocated %d bytes for a %d-byte file", grown, len(data))
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
