package inspect

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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
func (b *Binary) indexStructs() (structs map[string][]member, err error) {
	d, err := b.loadDWARF()
	if err != nil {
		return nil, err
	}
	return safeIndexStructs(d, b.Path)
}

// safeIndexStructs is indexStructs with a panic in debug/dwarf, which does not promise to survive
// every hostile input, reported as a corrupt file.
func safeIndexStructs(d *dwarf.Data, path string) (structs map[string][]member, err error) {
	defer func() {
		if r := recover(); r != nil {
			structs, err = nil, &Error{Reason: ReasonCorrupt, Err: fmt.Errorf("read DWARF of %s: %w: corrupt: %v", path, ErrNoDWARF, r)}
		}
	}()
	return indexStructs(d, path)
}

// maxInflate bounds how much larger than in the file a compressed debug section may claim to be:
// real DWARF compresses 3–6 times, and zlib cannot exceed about 1,000.
const maxInflate = 64

// loadDWARF checks the sizes compressed debug sections claim before the standard library
// allocates them, then loads the DWARF. debug/dwarf does not promise to survive every hostile
// input, so a panic is reported as a corrupt file.
func (b *Binary) loadDWARF() (d *dwarf.Data, err error) {
	for _, s := range b.elf.Sections {
		if !strings.HasPrefix(s.Name, ".debug_") && !strings.HasPrefix(s.Name, ".zdebug_") || s.Type == elf.SHT_NOBITS {
			continue
		}
		claimed := s.Size
		if strings.HasPrefix(s.Name, ".zdebug_") && s.Flags&elf.SHF_COMPRESSED == 0 {
			var hdr [12]byte // "ZLIB" and the big-endian uncompressed size
			if s.FileSize >= 12 && b.readFull(hdr[:], s.Offset) == nil && string(hdr[:4]) == "ZLIB" {
				claimed = binary.BigEndian.Uint64(hdr[4:])
			}
		}
		if claimed/maxInflate > s.FileSize {
			return nil, &Error{Reason: ReasonCorrupt, Err: fmt.Errorf("load DWARF of %s: %w: %s claims %d bytes from %d in the file", b.Path, ErrNoDWARF, s.Name, claimed, s.FileSize)}
		}
	}
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, &Error{Reason: ReasonCorrupt, Err: fmt.Errorf("load DWARF of %s: %w: corrupt: %v", b.Path, ErrNoDWARF, r)}
		}
	}()
	d, err = b.elf.DWARF()
	if err != nil {
		return nil, fmt.Errorf("load DWARF of %s: %w: %w", b.Path, ErrNoDWARF, err)
	}
	return d, nil
}

// indexStructs reads the members of every named struct type of d; path names the file in errors.
func indexStructs(d *dwarf.Data, path string) (map[string][]member, error) {
	structs := map[string][]member{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read DWARF of %s: %w: %w", path, ErrNoDWARF, err)
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
				return nil, fmt.Errorf("read DWARF of %s: %w: %w", path, ErrNoDWARF, err)
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
