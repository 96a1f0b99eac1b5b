package inspect

import (
	"debug/elf"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// maxReturnScan bounds the code ReturnSites and CallSites disassemble: Go's
// largest probed functions are a few KiB, so a bigger "function" is a
// corrupt symbol, not code to probe.
const maxReturnScan = 256 << 10

// ReturnSites returns the file offsets of every RET instruction in the Go function symbol on amd64,
// in address order. A probe on a RET sees the function's results still in their registers (Go's
// register ABI returns in RAX, RBX, RCX, …), with no return probe's trampoline on the stack. The
// whole function is decoded from its entry, linearly: Go puts no data inside functions, so any
// undecodable byte before the end means the symbol is not what it claims, an error with
// ReasonPrologue. A function with no RET at all is an error too.
func (b *Binary) ReturnSites(symbol string) ([]uint64, error) {
	code, _, off, err := b.funcCode(symbol, "return sites")
	if err != nil {
		return nil, err
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

// CallSites returns the file offsets of every direct call (CALL rel32) from the Go function symbol
// to the Go function callee on amd64, in address order. The kernel emulates such a CALL (no
// single-step), so a probe there costs what an entry probe does, and sees the callee's arguments
// already in their registers (Go's register ABI): a site for "once the caller has got this far",
// where no function of the caller's own is entered. Errors: ReasonSymbol when either function is
// missing; ReasonPrologue when the code does not decode or holds no such call (the compiler
// inlined it, or the release changed).
func (b *Binary) CallSites(symbol, callee string) ([]uint64, error) {
	target, err := b.Func(callee)
	if err != nil {
		return nil, fmt.Errorf("find calls of %s in %s: %w", callee, symbol, err)
	}
	code, fn, off, err := b.funcCode(symbol, "calls of "+callee)
	if err != nil {
		return nil, err
	}
	calls, err := findInsts(code, fn.Addr, func(inst x86asm.Inst, next uint64) bool {
		rel, ok := inst.Args[0].(x86asm.Rel)
		return inst.Op == x86asm.CALL && ok && next+uint64(int64(rel)) == target.Addr
	})
	if err == nil && len(calls) == 0 {
		err = fmt.Errorf("no call of %s", callee)
	}
	if err != nil {
		return nil, newError(ReasonPrologue, "find calls in %s of %s: %w", symbol, b.Path, err)
	}
	for i := range calls {
		calls[i] += off
	}
	return calls, nil
}

// funcCode reads the machine code of symbol, with its symbol entry and the
// file offset of its first byte; what says what the caller looks for, for
// errors.
func (b *Binary) funcCode(symbol, what string) ([]byte, Func, uint64, error) {
	if b.elf.Machine != elf.EM_X86_64 {
		return nil, Func{}, 0, newError(ReasonArch, "find %s in %s: %s is %s, only amd64 is supported", what, symbol, b.Path, b.Arch)
	}
	fn, err := b.Func(symbol)
	if err != nil {
		return nil, Func{}, 0, fmt.Errorf("find %s: %w", what, err)
	}
	if fn.Size == 0 || fn.Size > maxReturnScan {
		return nil, Func{}, 0, newError(ReasonPrologue, "find %s in %s of %s: function size %d", what, symbol, b.Path, fn.Size)
	}
	off, err := b.FileOffset(fn.Addr)
	if err != nil {
		return nil, Func{}, 0, newError(ReasonSymbol, "find %s in %s: %w", what, symbol, err)
	}
	code := make([]byte, fn.Size)
	if err := b.readAt(code, off); err != nil {
		return nil, Func{}, 0, fmt.Errorf("find %s in %s: %w", what, symbol, err)
	}
	return code, fn, off, nil
}

// findInsts decodes code (which starts at link-time address addr) from its start and returns the
// positions of the instructions match accepts; match gets each instruction and the address of the
// next. From .gopclntab a function's size runs to the next function, so the tail may be INT3
// padding, which decodes as such.
func findInsts(code []byte, addr uint64, match func(inst x86asm.Inst, next uint64) bool) ([]uint64, error) {
	var at []uint64
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return nil, fmt.Errorf("undecodable bytes at +%d: %w", pc, err)
		}
		if match(inst, addr+uint64(pc+inst.Len)) {
			at = append(at, uint64(pc))
		}
		pc += inst.Len
	}
	return at, nil
}

// findRets returns the positions of code's RET instructions; none is an error.
func findRets(code []byte) ([]uint64, error) {
	rets, err := findInsts(code, 0, func(inst x86asm.Inst, _ uint64) bool { return inst.Op == x86asm.RET })
	if err == nil && len(rets) == 0 {
		err = fmt.Errorf("no RET in %d bytes", len(code))
	}
	return rets, err
}
