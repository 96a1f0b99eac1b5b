package inspect

import (
	"debug/elf"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// maxReturnScan bounds the code ReturnSites disassembles: Go's largest
// net/http functions are a few KiB, so a bigger "function" is a corrupt
// symbol, not code to probe.
const maxReturnScan = 256 << 10

// ReturnSites returns the file offsets of every RET instruction in the Go function symbol on amd64,
// in address order. A probe on a RET sees the function's results still in their registers (Go's
// register ABI returns in RAX, RBX, RCX, …), with no return probe's trampoline on the stack. The
// whole function is decoded from its entry, linearly: Go puts no data inside functions, so any
// undecodable byte before the end means the symbol is not what it claims, an error with
// ReasonPrologue. A function with no RET at all is an error too.
func (b *Binary) ReturnSites(symbol string) ([]uint64, error) {
	if b.elf.Machine != elf.EM_X86_64 {
		return nil, newError(ReasonArch, "find return sites of %s: %s is %s, only amd64 is supported", symbol, b.Path, b.Arch)
	}
	fn, err := b.Func(symbol)
	if err != nil {
		return nil, fmt.Errorf("find return sites: %w", err)
	}
	if fn.Size == 0 || fn.Size > maxReturnScan {
		return nil, newError(ReasonPrologue, "find return sites of %s in %s: function size %d", symbol, b.Path, fn.Size)
	}
	off, err := b.FileOffset(fn.Addr)
	if err != nil {
		return nil, newError(ReasonSymbol, "find return sites of %s: %w", symbol, err)
	}
	code := make([]byte, fn.Size)
	if err := b.readAt(code, off); err != nil {
		return nil, fmt.Errorf("find return sites of %s: %w", symbol, err)
	}
	rets, err := findRets(code)
	if err != nil {
		return nil, newError(ReasonPrologue, "find return sites of %s in %s: %w", symbol, b.Path, err)
	}
	for i := range rets {
		rets[i] += off
	}
	return rets, nil
}

// findRets decodes code from its start and returns the positions of its RET instructions. From
// .gopclntab a function's size runs to the next function, so the tail may be INT3 padding, which
// decodes as such.
func findRets(code []byte) ([]uint64, error) {
	var rets []uint64
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return nil, fmt.Errorf("undecodable bytes at +%d: %w", pc, err)
		}
		if inst.Op == x86asm.RET {
			rets = append(rets, uint64(pc))
		}
		pc += inst.Len
	}
	if len(rets) == 0 {
		return nil, fmt.Errorf("no RET in %d bytes", len(code))
	}
	return rets, nil
}
