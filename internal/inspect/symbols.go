package inspect

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
)

// Func is a function's location in virtual addresses, as linked (before any PIE load bias).
type Func struct {
	Name string
	Addr uint64
	// Size is the symbol size from .symtab; from .gopclntab it is the distance to the next
	// function, so it includes alignment padding.
	Size uint64
}

// Func looks a function up by its Go symbol name, e.g. "net/http.serverHandler.ServeHTTP" or
// "net/http.(*response).finishRequest": in .symtab, or in .gopclntab when the binary is stripped.
// The first call indexes every function; later calls are map look-ups.
func (b *Binary) Func(symbol string) (Func, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Func{}, fmt.Errorf("look up %s: %w", symbol, errClosed)
	}
	if b.funcs == nil && b.errFunc == nil {
		if b.Stripped {
			b.funcs, b.errFunc = b.pclntabFuncs()
		} else {
			b.funcs, b.errFunc = b.symtabFuncs()
		}
	}
	if b.errFunc != nil {
		return Func{}, fmt.Errorf("look up %s: %w", symbol, b.errFunc)
	}
	fn, ok := b.funcs[symbol]
	if !ok {
		where := ".symtab"
		if b.Stripped {
			where = ".gopclntab"
		}
		return Func{}, newError(ReasonSymbol, "look up %s: not in %s of %s", symbol, where, b.Path)
	}
	return fn, nil
}

// Funcs returns every function Func can look up (from .symtab, or .gopclntab when stripped), in
// no particular order. Callers that look at all the code (internal/tools/routeharvest) need the
// list, not one name.
func (b *Binary) Funcs() ([]Func, error) {
	if _, err := b.Func("runtime.main"); err != nil && ReasonOf(err) != ReasonSymbol {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Func, 0, len(b.funcs))
	for _, f := range b.funcs {
		out = append(out, f)
	}
	return out, nil
}

// symtabFuncs indexes the function symbols of .symtab.
func (b *Binary) symtabFuncs() (map[string]Func, error) {
	syms, err := b.elf.Symbols()
	if err != nil {
		return nil, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("read .symtab of %s: %w", b.Path, err)}
	}
	funcs := make(map[string]Func, len(syms)/2)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Section == elf.SHN_UNDEF {
			continue
		}
		if _, dup := funcs[s.Name]; !dup {
			funcs[s.Name] = Func{Name: s.Name, Addr: s.Value, Size: s.Size}
		}
	}
	return funcs, nil
}

// Magic numbers at the start of .gopclntab, by the first Go version that wrote them.
const (
	pclnGo12  = 0xfffffffb
	pclnGo116 = 0xfffffffa
	pclnGo118 = 0xfffffff0
	pclnGo120 = 0xfffffff1
)

// pclntabFuncs indexes the functions of the runtime's own function table, which even a stripped
// binary keeps.
func (b *Binary) pclntabFuncs() (map[string]Func, error) {
	data, _, err := b.pclntab()
	if err != nil {
		return nil, err
	}
	bad := func(err error) error {
		return newError(ReasonCorrupt, "parse .gopclntab of %s: %w", b.Path, err)
	}
	switch b.elf.ByteOrder.Uint32(data) {
	case pclnGo118, pclnGo120:
		lt, err := b.lineTable()
		if err != nil {
			return nil, err
		}
		funcs, err := lt.hdr.funcs(lt.text)
		if err != nil {
			return nil, bad(err)
		}
		return funcs, nil
	default:
		// Older layouts store absolute PCs, which debug/gosym reads; obsd refuses those Go
		// versions anyway, so this only needs to be right, not fast.
		var text uint64
		if s := b.elf.Section(".text"); s != nil {
			text = s.Addr
		}
		funcs, err := gosymFuncs(data, text)
		if err != nil {
			return nil, bad(err)
		}
		return funcs, nil
	}
}

// lineTable is a Go 1.18+ function table with the module data facts that locate what it points
// to: runtime.text, the base of its entry offsets, and go:func.*, the base of its funcdata
// offsets.
type lineTable struct {
	hdr    *pclnHeader
	addr   uint64 // link-time address of the header
	text   uint64
	gofunc uint64 // 0 when the module data was not found
}

// lineTable parses the function table once and caches it, or the error. Called with b.mu held.
func (b *Binary) lineTable() (*lineTable, error) {
	if b.lt == nil && b.errLT == nil {
		b.lt, b.errLT = b.readLineTable()
	}
	return b.lt, b.errLT
}

func (b *Binary) readLineTable() (*lineTable, error) {
	data, addr, err := b.pclntab()
	if err != nil {
		return nil, err
	}
	bad := func(err error) error {
		return newError(ReasonCorrupt, "parse .gopclntab of %s: %w", b.Path, err)
	}
	if m := b.elf.ByteOrder.Uint32(data); m != pclnGo118 && m != pclnGo120 {
		return nil, newError(ReasonSymbol, "parse .gopclntab of %s: magic %#x is older than Go 1.18", b.Path, m)
	}
	h, err := parsePclnHeader(data, b.elf.ByteOrder)
	if err != nil {
		return nil, bad(err)
	}
	lt := &lineTable{hdr: h, addr: addr}
	md, ok, err := b.moduledata(addr, addr+h.nameOff)
	if err != nil {
		return nil, err
	}
	if ok {
		lt.text, lt.gofunc = md.text, md.gofunc
		return lt, nil
	}
	if lt.text, err = b.textFallback(h); err != nil {
		return nil, bad(err)
	}
	return lt, nil
}

func gosymFuncs(data []byte, text uint64) (funcs map[string]Func, err error) {
	defer func() {
		// debug/gosym trusts its input; a corrupt table must not take obsd down.
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt table: %v", r)
		}
	}()
	t, err := gosym.NewTable(nil, gosym.NewLineTable(data, text))
	if err != nil {
		return nil, err
	}
	funcs = make(map[string]Func, len(t.Funcs))
	for _, f := range t.Funcs {
		if _, dup := funcs[f.Name]; !dup {
			funcs[f.Name] = Func{Name: f.Name, Addr: f.Entry, Size: f.End - f.Entry}
		}
	}
	return funcs, nil
}

// pclntabSections are where Go linkers put the function table: the internal linker and Go 1.26+'s
// external linking write .gopclntab; older external linking (PIE with cgo) .data.rel.ro.gopclntab.
var pclntabSections = []string{".gopclntab", ".data.rel.ro.gopclntab"}

// pclntab returns the function table and its virtual address: a section of a name Go linkers
// give it, or, where a linker folded it into another section or the section headers are gone
// (strip --strip-section-headers), the place in a loaded segment whose header checks out. The
// data runs to the end of its section or segment.
func (b *Binary) pclntab() ([]byte, uint64, error) {
	for _, name := range pclntabSections {
		s := b.elf.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return nil, 0, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("read %s of %s: %w", name, b.Path, err)}
		}
		if len(data) < 8 {
			return nil, 0, newError(ReasonCorrupt, "read %s of %s: %d bytes", name, b.Path, len(data))
		}
		return data, s.Addr, nil
	}
	// No section of its own: search the segments that are not code, the same bytes whatever the
	// section headers say.
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Filesz == 0 {
			continue
		}
		data, err := b.segment(p)
		if err != nil {
			return nil, 0, err
		}
		if off, ok := findPclnHeader(data, b.elf.ByteOrder); ok {
			return data[off:], p.Vaddr + uint64(off), nil
		}
	}
	return nil, 0, newError(ReasonSymbol, "find the Go function table in %s: no %v section and none in its data segments", b.Path, pclntabSections)
}

// segment reads the file bytes of a loaded segment, whose size Open checked against the file.
func (b *Binary) segment(p *elf.Prog) ([]byte, error) {
	data := make([]byte, p.Filesz)
	if err := b.readFull(data, p.Off); err != nil {
		return nil, err
	}
	return data, nil
}

// findPclnHeader searches a section for a Go 1.18+ function table header that parses.
func findPclnHeader(data []byte, bo binary.ByteOrder) (int, bool) {
	var magics [2][4]byte
	bo.PutUint32(magics[0][:], pclnGo120)
	bo.PutUint32(magics[1][:], pclnGo118)
	for _, m := range magics {
		for off := 0; off+8 <= len(data); {
			i := bytes.Index(data[off:], m[:])
			if i < 0 {
				break
			}
			off += i
			if off%4 == 0 {
				if _, err := parsePclnHeader(data[off:], bo); err == nil {
					return off, true
				}
			}
			off++
		}
	}
	return 0, false
}

// pclnHeader is the part of runtime.pcHeader (Go 1.18+) needed to list functions.
type pclnHeader struct {
	data      []byte
	bo        binary.ByteOrder
	nfunc     uint64
	nameOff   uint64 // funcnametab, relative to data
	nameEnd   uint64 // cutab follows funcnametab
	pctabOff  uint64 // pc-value tables, relative to data
	pclnOff   uint64 // functab and _func records, relative to data
	quantum   uint64 // instruction size quantum: pc deltas are multiples of it
	ptrSize   int
	rawText   uint64 // textStart as stored; zero since Go 1.18's linker stopped filling it in
	nameField uint64 // offset of funcnameOffset in the header, for moduledata matching
}

func parsePclnHeader(data []byte, bo binary.ByteOrder) (*pclnHeader, error) {
	if len(data) < 8 {
		return nil, errors.New("header truncated")
	}
	if m := bo.Uint32(data); m != pclnGo118 && m != pclnGo120 {
		return nil, fmt.Errorf("magic %#x is not Go 1.18+", m)
	}
	if data[4] != 0 || data[5] != 0 {
		return nil, errors.New("header padding not zero")
	}
	if q := data[6]; q != 1 && q != 2 && q != 4 {
		return nil, fmt.Errorf("instruction size quantum %d", q)
	}
	h := &pclnHeader{data: data, bo: bo, ptrSize: int(data[7]), quantum: uint64(data[6])}
	if h.ptrSize != 4 && h.ptrSize != 8 {
		return nil, fmt.Errorf("pointer size %d", h.ptrSize)
	}
	word := func(i int) uint64 {
		off := 8 + i*h.ptrSize
		if h.ptrSize == 8 {
			return bo.Uint64(data[off:])
		}
		return uint64(bo.Uint32(data[off:]))
	}
	if len(data) < 8+8*h.ptrSize {
		return nil, errors.New("header truncated")
	}
	// Words: nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset.
	h.nfunc, h.rawText = word(0), word(2)
	h.nameOff, h.nameEnd, h.pctabOff, h.pclnOff = word(3), word(4), word(6), word(7)
	h.nameField = uint64(8 + 3*h.ptrSize)
	size := uint64(len(data))
	switch {
	case h.nfunc == 0 || h.nfunc > size/8:
		return nil, fmt.Errorf("function count %d", h.nfunc)
	case h.nameOff > h.nameEnd || h.nameEnd > size:
		return nil, errors.New("function name table out of bounds")
	case h.pclnOff > size || (h.nfunc+1)*8 > size-h.pclnOff:
		return nil, errors.New("function table out of bounds")
	case h.pctabOff > size:
		return nil, errors.New("pc-value tables out of bounds")
	}
	return h, nil
}

// funcs lists every function, with addresses relative to text, the address of runtime.text.
func (h *pclnHeader) funcs(text uint64) (map[string]Func, error) {
	// One string for all names: the map's keys are substrings of it, not one allocation each.
	names := string(h.data[h.nameOff:h.nameEnd])
	ftab := h.data[h.pclnOff:]
	funcs := make(map[string]Func, h.nfunc)
	for i := uint64(0); i < h.nfunc; i++ {
		entry := uint64(h.bo.Uint32(ftab[i*8:]))
		funcOff := h.pclnOff + uint64(h.bo.Uint32(ftab[i*8+4:]))
		next := uint64(h.bo.Uint32(ftab[(i+1)*8:]))
		if funcOff+8 > uint64(len(h.data)) || next < entry {
			return nil, fmt.Errorf("function %d: record out of bounds", i)
		}
		nameOff := uint64(h.bo.Uint32(h.data[funcOff+4:]))
		if nameOff >= uint64(len(names)) {
			return nil, fmt.Errorf("function %d: name out of bounds", i)
		}
		name := names[nameOff:]
		if end := indexNUL(name); end >= 0 {
			name = name[:end]
		}
		if _, dup := funcs[name]; !dup {
			funcs[name] = Func{Name: name, Addr: text + entry, Size: next - entry}
		}
	}
	return funcs, nil
}

func indexNUL(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return i
		}
	}
	return -1
}

// textFallback finds runtime.text, the base of the function table's entry offsets, when no module
// data was found (see moduledata): the header's copy if set (Go 1.18–1.26 linkers leave it zero),
// else .text's start, but only if it makes the ELF entry point (Go's _rt0 under internal linking)
// land on a function.
func (b *Binary) textFallback(h *pclnHeader) (uint64, error) {
	if h.rawText != 0 && b.executable(h.rawText) {
		return h.rawText, nil
	}
	s := b.elf.Section(".text")
	if s == nil {
		return 0, errors.New("no .text section and no module data")
	}
	ftab := h.data[h.pclnOff:]
	for i := uint64(0); i < h.nfunc; i++ {
		if s.Addr+uint64(h.bo.Uint32(ftab[i*8:])) == b.elf.Entry {
			return s.Addr, nil
		}
	}
	return 0, errors.New("cannot find runtime.text: no module data points at the function table, and .text does not start with it")
}

// Offsets in runtime.moduledata (unchanged from Go 1.16 through 1.27 on 64-bit): pcHeader, then
// six slices, findfunctab, minpc, maxpc, text. go:func.* (gofunc) follows rodata: word 40 from Go
// 1.20 to 1.26; Go 1.27 added typedesclen, itaboffset and itabsize before it (runtime/symtab.go).
const (
	mdFuncnametab = 8
	mdMinPC       = 20 * 8
	mdMaxPC       = 21 * 8
	mdText        = 22 * 8
	mdGofunc120   = 40 * 8
	mdGofunc127   = 43 * 8
	mdSize        = 23 * 8
)

type moduledata struct {
	text   uint64
	gofunc uint64 // 0 when no candidate checked out
}

// moduledata looks in the writable segments for runtime.firstmoduledata: a word equal to the
// table's address (or, in a PIE, a relative relocation to it) followed by the name table's address.
// Current linkers leave the header's textStart zero, and with external linking runtime.text is not
// where .text starts (C start-up code comes first), so text is read from here.
func (b *Binary) moduledata(pclnAddr, nameAddr uint64) (moduledata, bool, error) {
	if b.elf.Class != elf.ELFCLASS64 {
		return moduledata{}, false, nil
	}
	relocs, err := b.relativeRelocs()
	if err != nil {
		return moduledata{}, false, err
	}
	type segment struct {
		vaddr uint64
		data  []byte
	}
	var segs []segment
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_W == 0 || p.Filesz == 0 {
			continue
		}
		data, err := b.segment(p)
		if err != nil {
			return moduledata{}, false, err
		}
		segs = append(segs, segment{p.Vaddr, data})
	}
	// word reads a pointer as the loader will have set it: a relocation's addend wins over the
	// bytes in the file, which for RELA relocations may be zero.
	word := func(addr uint64) (uint64, bool) {
		if v, ok := relocs[addr]; ok {
			return v, true
		}
		for _, s := range segs {
			if addr >= s.vaddr && addr-s.vaddr <= uint64(len(s.data)) && uint64(len(s.data))-(addr-s.vaddr) >= 8 {
				return b.elf.ByteOrder.Uint64(s.data[addr-s.vaddr:]), true
			}
		}
		return 0, false
	}
	gofuncAt := []uint64{mdGofunc120, mdGofunc127}
	if goMinor(b.GoVersion) >= 27 || goMinor(b.GoVersion) < 0 {
		gofuncAt = []uint64{mdGofunc127, mdGofunc120}
	}
	check := func(md uint64) (moduledata, bool) {
		if v, ok := word(md + mdFuncnametab); !ok || v != nameAddr {
			return moduledata{}, false
		}
		text, ok1 := word(md + mdText)
		minpc, ok2 := word(md + mdMinPC)
		maxpc, ok3 := word(md + mdMaxPC)
		if !ok1 || !ok2 || !ok3 || text > minpc || minpc >= maxpc || !b.executable(text) {
			return moduledata{}, false
		}
		out := moduledata{text: text}
		for _, at := range gofuncAt {
			rodata, ok1 := word(md + at - 8)
			gofunc, ok2 := word(md + at)
			if ok1 && ok2 && rodata != 0 && rodata <= gofunc && b.readOnlyData(rodata) && b.readOnlyData(gofunc) {
				out.gofunc = gofunc
				break
			}
		}
		return out, true
	}
	for off, v := range relocs {
		if v == pclnAddr {
			if md, ok := check(off); ok {
				return md, true, nil
			}
		}
	}
	for _, s := range segs {
		for i := 0; i+mdSize <= len(s.data); i += 8 {
			if b.elf.ByteOrder.Uint64(s.data[i:]) != pclnAddr {
				continue
			}
			if md, ok := check(s.vaddr + uint64(i)); ok {
				return md, true, nil
			}
		}
	}
	return moduledata{}, false, nil
}

// readOnlyData reports whether addr has file bytes in a loaded segment that is neither code nor
// writable, or writable only for relocations (.data.rel.ro under the external linker).
func (b *Binary) readOnlyData(addr uint64) bool {
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X == 0 && addr >= p.Vaddr && addr-p.Vaddr < p.Filesz {
			return true
		}
	}
	return false
}

// goMinor returns N of a "go1.N..." version, or -1.
func goMinor(v string) int {
	m := goVersionRE.FindStringSubmatch(v)
	if m == nil {
		return -1
	}
	n := 0
	for _, c := range m[1] {
		n = n*10 + int(c-'0')
		if n > 1000 {
			return -1
		}
	}
	return n
}

func (b *Binary) executable(addr uint64) bool {
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && addr >= p.Vaddr && addr-p.Vaddr < p.Memsz {
			return true
		}
	}
	return false
}

// relativeRelocs maps the target of each relative dynamic relocation to its addend, read from
// the SHT_RELA sections, or from the dynamic segment (DT_RELA) when there are no section headers.
func (b *Binary) relativeRelocs() (map[uint64]uint64, error) {
	var relative uint32
	switch b.elf.Machine {
	case elf.EM_X86_64:
		relative = uint32(elf.R_X86_64_RELATIVE)
	case elf.EM_AARCH64:
		relative = uint32(elf.R_AARCH64_RELATIVE)
	default:
		return nil, nil
	}
	tables, err := b.relaTables()
	if err != nil {
		return nil, err
	}
	relocs := map[uint64]uint64{}
	for _, data := range tables {
		for i := 0; i+24 <= len(data); i += 24 {
			off := b.elf.ByteOrder.Uint64(data[i:])
			info := b.elf.ByteOrder.Uint64(data[i+8:])
			if uint32(info) == relative {
				relocs[off] = b.elf.ByteOrder.Uint64(data[i+16:])
			}
		}
	}
	return relocs, nil
}

func (b *Binary) relaTables() ([][]byte, error) {
	var tables [][]byte
	for _, s := range b.elf.Sections {
		if s.Type != elf.SHT_RELA || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return nil, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("read %s of %s: %w", s.Name, b.Path, err)}
		}
		tables = append(tables, data)
	}
	if len(tables) > 0 || len(b.elf.Sections) > 0 {
		return tables, nil
	}
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_DYNAMIC || b.elf.Class != elf.ELFCLASS64 {
			continue
		}
		dyn, err := b.segment(p)
		if err != nil {
			return nil, err
		}
		var rela, relasz uint64
		for i := 0; i+16 <= len(dyn); i += 16 {
			switch elf.DynTag(b.elf.ByteOrder.Uint64(dyn[i:])) {
			case elf.DT_RELA:
				rela = b.elf.ByteOrder.Uint64(dyn[i+8:])
			case elf.DT_RELASZ:
				relasz = b.elf.ByteOrder.Uint64(dyn[i+8:])
			}
		}
		if rela == 0 || relasz == 0 {
			return nil, nil
		}
		off, err := b.FileOffset(rela)
		if err != nil || off > uint64(b.size) || relasz > uint64(b.size)-off {
			return nil, newError(ReasonCorrupt, "read relocations of %s: %d bytes at %#x are not in the file", b.Path, relasz, rela)
		}
		data := make([]byte, relasz)
		if err := b.readFull(data, off); err != nil {
			return nil, err
		}
		return [][]byte{data}, nil
	}
	return nil, nil
}
