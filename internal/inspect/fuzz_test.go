package inspect

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/testenv"
)

// The fuzz targets take the bytes of one part of an executable (its headers, its end, its line
// table, its build info, its DWARF) and put them in a real one, built by every supported
// toolchain at test time, so that the mutations reach past the first check. Each must end in an
// error or a result, never a panic, a hang or an allocation the file does not justify. make test
// runs each for a few seconds; `go test -fuzz=FuzzX` runs one for as long as wanted.

// fuzzToolchains are the supported releases whose builds seed the fuzz targets ("" is the Go
// running the test): the end-to-end tests' list, so that their builds are shared.
var fuzzToolchains = testenv.Toolchains

var fuzzBases struct {
	once sync.Once
	bins [][]byte
}

// extPIEFlavour is an externally linked PIE, the flavour distributions use (with cgo).
var extPIEFlavour = testenv.Flavour{PIE: true, External: true}

// bases returns the executables the fuzz targets mutate: from each supported toolchain, a stripped
// internally linked one and an externally linked PIE with symbols and DWARF (an internally linked
// one without a C compiler).
func bases(f *testing.F) [][]byte {
	f.Helper()
	fuzzBases.once.Do(func() {
		_, ccErr := exec.LookPath("gcc")
		for _, tc := range fuzzToolchains {
			paths := []string{buildHello(f, tc, testenv.Flavour{Stripped: true})}
			if ccErr == nil {
				paths = append(paths, buildHello(f, tc, extPIEFlavour))
			} else {
				paths = append(paths, buildHello(f, tc, testenv.Flavour{}))
			}
			for _, p := range paths {
				data, err := os.ReadFile(p)
				if err != nil {
					f.Fatal(err)
				}
				fuzzBases.bins = append(fuzzBases.bins, data)
			}
		}
	})
	if len(fuzzBases.bins) == 0 {
		f.Fatal("no executables built to seed the fuzz targets")
	}
	return fuzzBases.bins
}

// exercise runs everything obsd asks of a binary; it must not panic.
func exercise(t *testing.T, data []byte) {
	b, err := open("fuzz", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		if ReasonOf(err) == ReasonOther {
			t.Fatalf("Open error without a reason: %v", err)
		}
		return
	}
	defer b.Close()
	for _, s := range []string{serveHTTP, finishRequest} {
		b.EntrySite(s)
	}
	b.Inlined([]string{serveHTTP, finishRequest})
	// FieldOffset is FuzzDWARF's: indexing all of DWARF here would leave too few runs.
	b.ITab("*net/http.response", "net/http.ResponseWriter", []string{"net/http.(*response).Header"})
}

func pick(bins [][]byte, sel []byte) []byte {
	i := 0
	if len(sel) > 0 {
		i = int(sel[0]) % len(bins)
	}
	return bytes.Clone(bins[i])
}

// FuzzELFHead overwrites the start of an executable: ELF header, program headers, and what follows.
func FuzzELFHead(f *testing.F) {
	bins := bases(f)
	for i, b := range bins {
		f.Add([]byte{byte(i)}, b[:1024])
	}
	f.Fuzz(func(t *testing.T, sel, head []byte) {
		data := pick(bins, sel)
		if len(head) > len(data) {
			head = head[:len(data)]
		}
		copy(data, head)
		exercise(t, data)
	})
}

// FuzzELFTail overwrites the end of an executable, where the Go linkers put the section headers.
func FuzzELFTail(f *testing.F) {
	bins := bases(f)
	for i, b := range bins {
		f.Add([]byte{byte(i)}, b[len(b)-3072:])
	}
	f.Fuzz(func(t *testing.T, sel, tail []byte) {
		data := pick(bins, sel)
		if len(tail) > len(data) {
			tail = tail[:len(data)]
		}
		copy(data[len(data)-len(tail):], tail)
		exercise(t, data)
	})
}

// section returns a section's bytes and file offset in an executable.
func section(t testing.TB, data []byte, name string) ([]byte, uint64) {
	t.Helper()
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s := ef.Section(name)
	if s == nil {
		return nil, 0
	}
	b, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	return b, s.Offset
}

// FuzzBuildInfo replaces the build info (.go.buildinfo: magic, flags, then the version and the
// module list as length-prefixed strings) of an executable.
func FuzzBuildInfo(f *testing.F) {
	bins := bases(f)
	type base struct {
		data []byte
		off  uint64
	}
	var withInfo []base
	for _, b := range bins {
		info, off := section(f, b, ".go.buildinfo")
		if info == nil {
			continue
		}
		f.Add([]byte{byte(len(withInfo))}, info)
		withInfo = append(withInfo, base{b, off})
	}
	f.Fuzz(func(t *testing.T, sel, info []byte) {
		b := withInfo[0]
		if len(sel) > 0 {
			b = withInfo[int(sel[0])%len(withInfo)]
		}
		data := bytes.Clone(b.data)
		if uint64(len(info)) > uint64(len(data))-b.off {
			info = info[:uint64(len(data))-b.off]
		}
		copy(data[b.off:], info)
		exercise(t, data)
	})
}

// lineTableParts returns an executable's function table and the bytes from go:func.* on.
func lineTableParts(t testing.TB, data []byte) (pcln, gofunc []byte) {
	t.Helper()
	b, err := open("seed", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	lt, err := b.lineTable()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && lt.gofunc >= p.Vaddr && lt.gofunc-p.Vaddr < p.Filesz {
			seg, err := b.segment(p)
			if err != nil {
				t.Fatal(err)
			}
			gofunc = seg[lt.gofunc-p.Vaddr:]
		}
	}
	return lt.hdr.data, gofunc
}

// FuzzLineTable patches a function table (runtime.pcHeader, names, pc-value tables, _func records)
// at any offset and feeds it to the parsers of functions and inline trees, with the real
// go:func.* bytes of its executable. The input is the patch, so that it stays small enough for
// the fuzzer to run often; the seeds patch each part of the table with its own bytes.
func FuzzLineTable(f *testing.F) {
	bins := bases(f)
	var tables, gofuncs [][]byte
	for i, b := range bins {
		pcln, gofunc := lineTableParts(f, b)
		if gofunc == nil {
			f.Fatalf("executable %d: no go:func.* found", i)
		}
		h, err := parsePclnHeader(pcln, binary.LittleEndian)
		if err != nil {
			f.Fatal(err)
		}
		firstFunc := h.pclnOff + uint64(binary.LittleEndian.Uint32(pcln[h.pclnOff+4:]))
		for _, at := range []uint64{0, h.nameOff, h.pctabOff, h.pclnOff, firstFunc} {
			f.Add([]byte{byte(len(tables))}, uint32(at), pcln[at:at+64])
		}
		tables = append(tables, pcln)
		gofuncs = append(gofuncs, gofunc)
	}
	f.Fuzz(func(t *testing.T, sel []byte, at uint32, patch []byte) {
		i := 0
		if len(sel) > 0 {
			i = int(sel[0]) % len(tables)
		}
		pcln := bytes.Clone(tables[i])
		if len(patch) > 1024 {
			patch = patch[:1024]
		}
		copy(pcln[uint64(at)%uint64(len(pcln)):], patch)
		h, err := parsePclnHeader(pcln, binary.LittleEndian)
		if err != nil {
			return
		}
		h.funcs(0x400000)
		if binary.LittleEndian.Uint32(pcln) == pclnGo120 {
			walkInlineTrees(h, gofuncs[i], func(string, string) {})
		}
	})
}

// dwarfSections returns the debug sections of an executable by name without the ".debug_" prefix,
// decompressed.
func dwarfSections(t testing.TB, data []byte) map[string][]byte {
	t.Helper()
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, s := range ef.Sections {
		if name, ok := strings.CutPrefix(s.Name, ".debug_"); ok {
			b, err := s.Data()
			if err != nil {
				t.Fatal(err)
			}
			out[name] = b
		}
	}
	return out
}

// firstUnits returns the whole compile units at the start of .debug_info, about n bytes of them.
func firstUnits(info []byte, n int) []byte {
	end := 0
	for end < n && end+4 <= len(info) {
		l := int(binary.LittleEndian.Uint32(info[end:]))
		if l >= 0xfffffff0 || end+4+l > len(info) {
			break
		}
		end += 4 + l
	}
	return info[:end]
}

// FuzzDWARF feeds compile units (.debug_info) to the struct index, with the other debug sections of
// the executable they came from (unmutated: the info refers into them).
func FuzzDWARF(f *testing.F) {
	bins := bases(f)
	var secs []map[string][]byte
	for _, b := range bins {
		s := dwarfSections(f, b)
		if s["info"] == nil {
			continue // stripped
		}
		f.Add([]byte{byte(len(secs))}, firstUnits(s["info"], 16<<10))
		secs = append(secs, s)
	}
	if len(secs) == 0 {
		f.Fatal("no executable with DWARF to seed from")
	}
	f.Fuzz(func(t *testing.T, sel, info []byte) {
		s := secs[0]
		if len(sel) > 0 {
			s = secs[int(sel[0])%len(secs)]
		}
		// As in loadDWARF, a panic in debug/dwarf while loading is a corrupt file.
		d, err := func() (d *dwarf.Data, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("corrupt: %v", r)
				}
			}()
			d, err = dwarf.New(s["abbrev"], s["aranges"], s["frame"], info, s["line"], s["pubnames"], s["ranges"], s["str"])
			if err != nil {
				return nil, err
			}
			for _, name := range []string{"addr", "line_str", "str_offsets", "rnglists", "loclists"} {
				if s[name] != nil {
					if err := d.AddSection(".debug_"+name, s[name]); err != nil {
						return nil, err
					}
				}
			}
			return d, nil
		}()
		if err != nil {
			return
		}
		safeIndexStructs(d, "fuzz")
	})
}
