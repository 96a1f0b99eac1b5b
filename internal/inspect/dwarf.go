package inspect

import (
	"debug/dwarf"
	"errors"
	"fmt"
)

// Sentinels for FieldOffset, wrapped in its errors: test them with errors.Is.
var (
	// ErrNoDWARF means the binary has no usable DWARF (e.g. linked with -w).
	ErrNoDWARF = errors.New("no DWARF")
	// ErrNoField means the DWARF has no such struct, or the struct no such field.
	ErrNoField = errors.New("no such struct field")
)

type member struct {
	name string
	off  uint64
}

// FieldOffset returns the byte offset of a struct field from DWARF, e.g. ("net/http", "Request",
// "Method"). The first call indexes every named struct type, so later calls are map look-ups.
func (b *Binary) FieldOffset(pkg, typ, field string) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	name := pkg + "." + typ
	if b.closed {
		return 0, fmt.Errorf("find offset of %s.%s: %w", name, field, errClosed)
	}
	if !b.DWARF {
		return 0, fmt.Errorf("find offset of %s.%s in %s: %w", name, field, b.Path, ErrNoDWARF)
	}
	if b.fields == nil && b.errDw == nil {
		b.fields, b.errDw = b.indexStructs()
	}
	if b.errDw != nil {
		return 0, fmt.Errorf("find offset of %s.%s: %w", name, field, b.errDw)
	}
	members, ok := b.fields[name]
	if !ok {
		return 0, fmt.Errorf("find offset of %s.%s in %s: struct not in DWARF: %w", name, field, b.Path, ErrNoField)
	}
	for _, m := range members {
		if m.name == field {
			return m.off, nil
		}
	}
	return 0, fmt.Errorf("find offset of %s.%s in %s: %w", name, field, b.Path, ErrNoField)
}

// indexStructs reads the members of every named struct type. Go puts type entries directly under
// compile units, so the children of everything else (function bodies above all) are skipped.
func (b *Binary) indexStructs() (map[string][]member, error) {
	d, err := b.elf.DWARF()
	if err != nil {
		return nil, fmt.Errorf("load DWARF of %s: %w: %w", b.Path, ErrNoDWARF, err)
	}
	structs := map[string][]member{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read DWARF of %s: %w: %w", b.Path, ErrNoDWARF, err)
		}
		if e == nil {
			return structs, nil
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			// Walk into the unit.
		case dwarf.TagStructType:
			members, err := readMembers(r, e)
			if err != nil {
				return nil, fmt.Errorf("read DWARF of %s: %w: %w", b.Path, ErrNoDWARF, err)
			}
			name, _ := e.Val(dwarf.AttrName).(string)
			if _, dup := structs[name]; name != "" && !dup {
				structs[name] = members
			}
		default:
			if e.Children {
				r.SkipChildren()
			}
		}
	}
}

func readMembers(r *dwarf.Reader, e *dwarf.Entry) ([]member, error) {
	if !e.Children {
		return nil, nil
	}
	var members []member
	for {
		c, err := r.Next()
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, errors.New("struct entry not terminated")
		}
		if c.Tag == 0 {
			return members, nil
		}
		if c.Tag == dwarf.TagMember {
			name, _ := c.Val(dwarf.AttrName).(string)
			if off, ok := memberOffset(c); ok && name != "" {
				members = append(members, member{name: name, off: off})
			}
		}
		if c.Children {
			r.SkipChildren()
		}
	}
}

// memberOffset reads DW_AT_data_member_location: a constant from Go, or the DW_OP_plus_uconst
// expression older producers wrote.
func memberOffset(e *dwarf.Entry) (uint64, bool) {
	switch v := e.Val(dwarf.AttrDataMemberLoc).(type) {
	case int64:
		return uint64(v), v >= 0
	case []byte:
		const opPlusUconst = 0x23
		if len(v) < 2 || v[0] != opPlusUconst {
			return 0, false
		}
		var off uint64
		for i, c := range v[1:] {
			if i >= 10 {
				return 0, false
			}
			off |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				return off, true
			}
		}
	}
	return 0, false
}
