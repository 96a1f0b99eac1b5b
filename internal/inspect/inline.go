package inspect

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// Inlined is one inlined copy of a function: code of Func compiled into Caller, which an entry
// probe on Func never sees.
type Inlined struct {
	Func   string // e.g. "net/http.(*response).finishRequest"
	Caller string // the out-of-line function holding the copy, e.g. "net/http.(*conn).serve"
}

func (i Inlined) String() string { return i.Func + " inlined into " + i.Caller }

// Indexes into a function's pcdata and funcdata (internal/abi/symtab.go, unchanged Go 1.12–1.27).
const (
	pcdataInlTreeIndex = 2
	funcdataInlTree    = 3
	// inlinedCallSize is runtime.inlinedCall (Go 1.20–1.27): funcID, 3 bytes padding, nameOff
	// int32, parentPc int32, startLine int32.
	inlinedCallSize = 16
	// maxInlTree bounds one function's inline tree; the largest functions of the standard
	// library have a few thousand entries.
	maxInlTree = 1 << 20
)

// Inlined returns the inlined copies of the functions named (Go symbol names), read from the
// inline trees of the function table (FUNCDATA_InlTree, which stripped binaries keep too): one
// entry per function and caller, in function-table order, nil when there are none. A Go 1.20+
// table is needed (older layouts: ReasonSymbol); a tree that does not fit the file is
// ReasonCorrupt.
func (b *Binary) Inlined(symbols []string) ([]Inlined, error) {
	want := make(map[string]bool, len(symbols))
	for _, s := range symbols {
		want[s] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("find inlined copies: %w", errClosed)
	}
	var out []Inlined
	seen := map[Inlined]bool{}
	err := b.inlineTrees(func(callee, caller string) {
		in := Inlined{Func: callee, Caller: caller}
		if want[callee] && !seen[in] {
			seen[in] = true
			out = append(out, in)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("find inlined copies of %v: %w", symbols, err)
	}
	return out, nil
}

// inlineTrees calls fn for every entry of every function's inline tree. Called with b.mu held.
func (b *Binary) inlineTrees(fn func(callee, caller string)) error {
	lt, err := b.lineTable()
	if err != nil {
		return err
	}
	h := lt.hdr
	if b.elf.ByteOrder.Uint32(h.data) != pclnGo120 {
		return newError(ReasonSymbol, "read inline trees of %s: function table older than Go 1.20", b.Path)
	}
	var gofunc []byte // the loaded segment holding go:func.*, from lt.gofunc on
	if lt.gofunc != 0 {
		for _, p := range b.elf.Progs {
			if p.Type == elf.PT_LOAD && lt.gofunc >= p.Vaddr && lt.gofunc-p.Vaddr < p.Filesz {
				seg, err := b.segment(p)
				if err != nil {
					return err
				}
				gofunc = seg[lt.gofunc-p.Vaddr:]
				break
			}
		}
	}
	if err := walkInlineTrees(h, gofunc, fn); err != nil {
		reason := ReasonCorrupt
		if errors.Is(err, errNoGofunc) {
			reason = ReasonSymbol
		}
		return &Error{Reason: reason, Err: fmt.Errorf("read inline trees of %s: %w", b.Path, err)}
	}
	return nil
}

// errNoGofunc: a function has an inline tree, but the module data that locates the trees was not
// found.
var errNoGofunc = errors.New("inline trees present but go:func.* not found (no module data)")

// walkInlineTrees reads the inline trees of a Go 1.20+ function table h, whose funcdata offsets
// are relative to gofunc (the bytes from go:func.* on; nil when unknown, which is an error as
// soon as a function has an inline tree). Every offset and count is checked before use.
func walkInlineTrees(h *pclnHeader, gofunc []byte, fn func(callee, caller string)) error {
	const funcHeader = 44 // runtime._func up to its pcdata, Go 1.20–1.27
	bo := h.bo
	size := uint64(len(h.data))
	names := h.data[h.nameOff:h.nameEnd]
	name := func(off uint32) (string, bool) {
		if uint64(off) >= uint64(len(names)) {
			return "", false
		}
		s := names[off:]
		for i, c := range s {
			if c == 0 {
				return string(s[:i]), true
			}
		}
		return string(s), true
	}
	pctab := h.data[h.pctabOff:]
	ftab := h.data[h.pclnOff:]
	for i := uint64(0); i < h.nfunc; i++ {
		funcOff := h.pclnOff + uint64(bo.Uint32(ftab[i*8+4:]))
		if funcOff > size || size-funcOff < funcHeader {
			return fmt.Errorf("function %d: record out of bounds", i)
		}
		rec := h.data[funcOff:]
		npcdata := uint64(bo.Uint32(rec[28:]))
		nfuncdata := uint64(rec[43])
		if npcdata <= pcdataInlTreeIndex || nfuncdata <= funcdataInlTree {
			continue
		}
		if npcdata > 1<<10 || uint64(len(rec)) < funcHeader+4*(npcdata+nfuncdata) {
			return fmt.Errorf("function %d: %d pcdata and %d funcdata out of bounds", i, npcdata, nfuncdata)
		}
		pcOff := uint64(bo.Uint32(rec[funcHeader+4*pcdataInlTreeIndex:]))
		treeOff := bo.Uint32(rec[funcHeader+4*npcdata+4*funcdataInlTree:])
		if pcOff == 0 || treeOff == ^uint32(0) {
			continue
		}
		caller, ok := name(bo.Uint32(rec[4:]))
		if !ok {
			return fmt.Errorf("function %d: name out of bounds", i)
		}
		if pcOff >= uint64(len(pctab)) {
			return fmt.Errorf("%s: inline index table out of bounds", caller)
		}
		top, err := maxPCValue(pctab[pcOff:])
		if err != nil {
			return fmt.Errorf("%s: inline index table: %w", caller, err)
		}
		if top < 0 {
			continue
		}
		if gofunc == nil {
			return errNoGofunc
		}
		n := uint64(top) + 1
		if uint64(treeOff) > uint64(len(gofunc)) || n*inlinedCallSize > uint64(len(gofunc))-uint64(treeOff) {
			return fmt.Errorf("%s: inline tree of %d entries out of bounds", caller, n)
		}
		tree := gofunc[treeOff:]
		for j := uint64(0); j < n; j++ {
			callee, ok := name(bo.Uint32(tree[j*inlinedCallSize+4:]))
			if !ok {
				return fmt.Errorf("%s: inline tree entry %d: name out of bounds", caller, j)
			}
			fn(callee, caller)
		}
	}
	return nil
}

// maxPCValue decodes a pc-value table (runtime.pcvalue: zig-zag value deltas and pc deltas as
// varints, from the value -1, ended by a zero value delta) and returns the largest value.
func maxPCValue(tab []byte) (int32, error) {
	val, top := int32(-1), int32(-1)
	for first := true; ; first = false {
		uv, n := binary.Uvarint(tab)
		if n <= 0 || uv > 1<<32-1 {
			return 0, errors.New("truncated or overlong value delta")
		}
		if uv == 0 && !first {
			return top, nil
		}
		tab = tab[n:]
		d := uint32(uv)
		if d&1 != 0 {
			d = ^(d >> 1)
		} else {
			d >>= 1
		}
		val += int32(d)
		if _, n = binary.Uvarint(tab); n <= 0 {
			return 0, errors.New("truncated pc delta")
		}
		tab = tab[n:]
		if val > top {
			top = val
		}
		if top >= maxInlTree {
			return 0, fmt.Errorf("inline index %d: more than %d", top, maxInlTree)
		}
	}
}
