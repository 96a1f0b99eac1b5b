package inspect

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"golang.org/x/arch/x86/x86asm"
)

// prologueWindow bounds the search for PUSHQ BP: Go's stack check is at most three instructions
// (LEAQ, CMPQ, JBE) of well under 64 bytes.
const prologueWindow = 64

// FileOffset converts a virtual address, as linked, to the offset in the file of the byte that is
// mapped there, through the PT_LOAD segment containing it. Uprobes attach at file offsets.
func (b *Binary) FileOffset(addr uint64) (uint64, error) {
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr-p.Vaddr < p.Filesz {
			return addr - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("map address %#x of %s to a file offset: in no loaded segment", addr, b.Path)
}

// EntrySite returns the file offset of the PUSHQ BP in the prologue of a Go function on amd64. A
// uprobe there is emulated by the kernel, while one on the stack-check CMPQ at +0 is single-stepped
// and costs ten times more; argument registers are still untouched at that point. It never falls
// back to the function start: if no PUSHQ BP is found the error has ReasonPrologue.
func (b *Binary) EntrySite(symbol string) (uint64, error) {
	if b.elf.Machine != elf.EM_X86_64 {
		return 0, newError(ReasonArch, "find entry site of %s: %s is %s, only amd64 is supported", symbol, b.Path, b.Arch)
	}
	fn, err := b.Func(symbol)
	if err != nil {
		return 0, fmt.Errorf("find entry site: %w", err)
	}
	off, err := b.FileOffset(fn.Addr)
	if err != nil {
		return 0, newError(ReasonSymbol, "find entry site of %s: %w", symbol, err)
	}
	n := uint64(prologueWindow)
	if fn.Size > 0 && fn.Size < n {
		n = fn.Size
	}
	code := make([]byte, n)
	if err := b.readAt(code, off); err != nil {
		return 0, fmt.Errorf("find entry site of %s: %w", symbol, err)
	}
	pos, err := findPushBP(code)
	if err != nil {
		return 0, newError(ReasonPrologue, "find entry site of %s in %s: %w", symbol, b.Path, err)
	}
	return off + uint64(pos), nil
}

// readAt fills p from the file, tolerating a short read at the end of the file only if it filled p.
func (b *Binary) readAt(p []byte, off uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readFull(p, off)
}

// readFull is readAt for callers that hold b.mu.
func (b *Binary) readFull(p []byte, off uint64) error {
	if b.closed {
		return errClosed
	}
	if off > uint64(b.size) || uint64(len(p)) > uint64(b.size)-off {
		return newError(ReasonCorrupt, "read %d bytes at %#x of %s: past the end of the %d-byte file", len(p), off, b.Path, b.size)
	}
	n, err := b.file.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("read %d bytes at %#x of %s: %w", len(p), off, b.Path, err)}
}

// findPushBP decodes code from its start and returns the position of the first PUSHQ BP, giving up
// at anything that leaves straight-line code (a prologue never does before saving BP).
func findPushBP(code []byte) (int, error) {
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, fmt.Errorf("no PUSHQ BP before undecodable bytes at +%d: %w", pc, err)
		}
		switch inst.Op {
		case x86asm.PUSH:
			if inst.Args[0] == x86asm.RBP {
				return pc, nil
			}
		case x86asm.RET, x86asm.LRET, x86asm.JMP, x86asm.LJMP, x86asm.CALL, x86asm.LCALL,
			x86asm.INT, x86asm.UD1, x86asm.UD2, x86asm.HLT:
			return 0, fmt.Errorf("no PUSHQ BP before %v at +%d", inst.Op, pc)
		}
		pc += inst.Len
	}
	return 0, fmt.Errorf("no PUSHQ BP in the first %d bytes", len(code))
}

// Vaddr is FileOffset's inverse: the link-time virtual address at which the byte at file offset
// off is mapped.
func (b *Binary) Vaddr(off uint64) (uint64, error) {
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off-p.Off < p.Filesz {
			return off - p.Off + p.Vaddr, nil
		}
	}
	return 0, fmt.Errorf("map file offset %#x of %s to an address: in no loaded segment", off, b.Path)
}
