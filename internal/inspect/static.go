package inspect

import (
	"debug/elf"
	"fmt"
	"os"
)

// Static reads string literals out of an executable's .rodata, where the Go linker puts them, by
// their link-time address. Probes report such strings (a ServeMux pattern written in the program)
// by address instead of copying their bytes on every request. It keeps its own descriptor open, so
// it works after the process that led to the file has exited.
type Static struct {
	f *os.File
	// Start and End are the link-time addresses of .rodata.
	Start, End uint64
	off        uint64 // file offset of Start
}

// OpenStatic opens the executable again for reading .rodata. Without section headers (removed by
// strip --strip-section-headers) the read-only data segment that holds .rodata stands in for it.
// A binary with neither gives an error; callers then do without.
func (b *Binary) OpenStatic() (*Static, error) {
	var start, size, off uint64
	if sec := b.elf.Section(".rodata"); sec != nil && sec.Type == elf.SHT_PROGBITS && sec.Size > 0 {
		start, size, off = sec.Addr, sec.Size, sec.Offset
	} else if len(b.elf.Sections) == 0 {
		// The Go linkers put .rodata at the start of the first loaded segment that is neither
		// code nor writable.
		for _, p := range b.elf.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&(elf.PF_X|elf.PF_W) == 0 && p.Filesz > 0 && p.Off > 0 {
				start, size, off = p.Vaddr, p.Filesz, p.Off
				break
			}
		}
	}
	if size == 0 {
		return nil, fmt.Errorf("%s has no .rodata", b.Path)
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return nil, fmt.Errorf("reopen %s for .rodata: %w", b.Path, err)
	}
	return &Static{f: f, Start: start, End: start + size, off: off}, nil
}

// String returns the n bytes at link-time address addr, which must lie within .rodata.
func (s *Static) String(addr uint64, n int) (string, error) {
	if n < 0 || addr < s.Start || addr > s.End || uint64(n) > s.End-addr {
		return "", fmt.Errorf("%d bytes at %#x: outside .rodata [%#x, %#x)", n, addr, s.Start, s.End)
	}
	buf := make([]byte, n)
	if _, err := s.f.ReadAt(buf, int64(addr-s.Start+s.off)); err != nil {
		return "", fmt.Errorf("read %d bytes of .rodata at %#x: %w", n, addr, err)
	}
	return string(buf), nil
}

// Close releases the descriptor.
func (s *Static) Close() error { return s.f.Close() }
