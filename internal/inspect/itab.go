package inspect

import (
	"debug/elf"
	"fmt"
)

// itabFunOffset is where an itab's method slots start (runtime.itab, abi.ITab since Go 1.22:
// Inter, Type, Hash uint32 and padding, then Fun) on 64-bit targets.
const itabFunOffset = 24

// ITab returns the link-time address of the itab the compiler made for converting the concrete
// type typ to the interface iface ("*net/http.response", "net/http.ResponseWriter"): a probe can
// then tell an interface argument's dynamic type from its itab register without reading memory.
// methods are the functions in the interface's method slots, in its method order (sorted by
// name). The itab comes from .symtab when there is one; in a stripped binary it is the itab in
// the itab table (.itablink) whose first slots hold exactly those functions. One that cannot be
// singled out is an error, and the caller does without: so is a stripped binary from the external
// linker, which merges the table into .data.rel.ro.
func (b *Binary) ITab(typ, iface string, methods []string) (uint64, error) {
	if !b.Stripped {
		syms, err := b.elf.Symbols()
		if err != nil {
			return 0, fmt.Errorf("read .symtab of %s: %w", b.Path, err)
		}
		name := "go:itab." + typ + "," + iface
		for _, s := range syms {
			if s.Name == name && s.Section != elf.SHN_UNDEF {
				return s.Value, nil
			}
		}
		return 0, fmt.Errorf("no %s in .symtab of %s", name, b.Path)
	}
	return b.itabFromTable(methods)
}

// itabFromTable scans the itab table (.itablink) for the itab whose method slots start with the
// addresses of methods.
func (b *Binary) itabFromTable(methods []string) (uint64, error) {
	if len(methods) == 0 {
		return 0, fmt.Errorf("find itab in %s: no methods to match", b.Path)
	}
	want := make([]uint64, len(methods))
	for i, m := range methods {
		fn, err := b.Func(m)
		if err != nil {
			return 0, fmt.Errorf("find itab: %w", err)
		}
		want[i] = fn.Addr
	}
	sec := b.elf.Section(".itablink")
	if sec == nil {
		sec = b.elf.Section(".data.rel.ro.itablink") // PIE
	}
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return 0, fmt.Errorf("find itab: %s has no itab table", b.Path)
	}
	table, err := sec.Data()
	if err != nil {
		return 0, fmt.Errorf("find itab: read %s of %s: %w", sec.Name, b.Path, err)
	}
	// In a PIE the pointers are zero in the file and set by relocations.
	var relocs map[uint64]uint64
	if b.PIE {
		if relocs, err = b.relativeRelocs(); err != nil {
			return 0, fmt.Errorf("find itab: %w", err)
		}
	}
	ptr := func(addr uint64) (uint64, error) {
		if v, ok := relocs[addr]; ok {
			return v, nil
		}
		off, err := b.FileOffset(addr)
		if err != nil {
			return 0, err
		}
		var buf [8]byte
		if err := b.readAt(buf[:], off); err != nil {
			return 0, err
		}
		return b.elf.ByteOrder.Uint64(buf[:]), nil
	}
	var found []uint64
	for i := 0; i+8 <= len(table); i += 8 {
		itab, err := ptr(sec.Addr + uint64(i))
		if err != nil || itab == 0 {
			continue
		}
		match := true
		for j, w := range want {
			if f, err := ptr(itab + itabFunOffset + 8*uint64(j)); err != nil || f != w {
				match = false
				break
			}
		}
		if match {
			found = append(found, itab)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("find itab: %d itabs of %s start with the methods %v", len(found), b.Path, methods)
	}
	return found[0], nil
}
