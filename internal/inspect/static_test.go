package inspect

import (
	"bytes"
	"os"
	"testing"
)

// TestStatic finds a string literal of the program in the file, derives its
// link-time address from .rodata's, and reads it back by that address, in
// every link mode.
func TestStatic(t *testing.T) {
	const literal = "hello %s %s\n"
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := openBin(t, v.name)
			st, err := b.OpenStatic()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			exe, err := os.ReadFile(binPath(t, v.name))
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(exe, []byte(literal))
			if i < 0 || uint64(i) < st.off || uint64(i)-st.off >= st.End-st.Start {
				t.Fatalf("literal at file offset %d, not in .rodata at %#x+%#x", i, st.off, st.End-st.Start)
			}
			addr := st.Start + uint64(i) - st.off
			if got, err := st.String(addr, len(literal)); err != nil || got != literal {
				t.Errorf("String(%#x) = %q, %v; want %q", addr, got, err, literal)
			}
			// Vaddr inverts FileOffset.
			if off, err := b.FileOffset(addr); err != nil || off != uint64(i) {
				t.Errorf("FileOffset(%#x) = %#x, %v; want %#x", addr, off, err, i)
			} else if va, err := b.Vaddr(off); err != nil || va != addr {
				t.Errorf("Vaddr(%#x) = %#x, %v; want %#x", off, va, err, addr)
			}
			for _, bad := range []struct {
				addr uint64
				n    int
			}{
				{st.Start - 1, 1},
				{st.End - 2, 3},
				{st.End, 1},
				{addr, -1},
			} {
				if s, err := st.String(bad.addr, bad.n); err == nil {
					t.Errorf("String(%#x, %d) = %q, want an error", bad.addr, bad.n, s)
				}
			}
		})
	}
}
