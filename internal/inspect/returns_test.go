package inspect

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strconv"
	"testing"
)

// TestReturnSites checks ReturnSites against an independent disassembler,
// `go tool objdump`, on every link mode: the same RET instructions, each a
// 0xC3 byte in the file.
func TestReturnSites(t *testing.T) {
	retLine := regexp.MustCompile(`(?m)^\s+\S+:\d+\s+0x([0-9a-f]+)\s+c3\s+RET\b`)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := openBin(t, v.name)
			sites, err := b.ReturnSites(finishRequest)
			if err != nil {
				t.Fatal(err)
			}
			exe, err := os.ReadFile(binPath(t, v.name))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sites {
				if exe[s] != 0xc3 {
					t.Errorf("byte at %#x is %#x, want 0xc3 (RET)", s, exe[s])
				}
			}
			if v.strip {
				return // objdump needs the symbol table; the bytes above still checked
			}
			out, err := exec.Command("go", "tool", "objdump", "-s", `^net/http\.\(\*response\)\.finishRequest$`, binPath(t, v.name)).CombinedOutput()
			if err != nil {
				t.Fatalf("go tool objdump: %v\n%s", err, out)
			}
			var want []uint64
			for _, m := range retLine.FindAllStringSubmatch(string(out), -1) {
				addr, _ := strconv.ParseUint(m[1], 16, 64)
				off, err := b.FileOffset(addr)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, off)
			}
			if len(want) == 0 {
				t.Fatalf("objdump shows no RET in %s:\n%s", finishRequest, out)
			}
			if !reflect.DeepEqual(sites, want) {
				t.Errorf("ReturnSites = %#x, objdump says %#x", sites, want)
			}
		})
	}
}

func TestFindRetsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		code []byte
	}{
		{"no RET", []byte{0x55, 0x48, 0x89, 0xe5, 0xcc, 0xcc}},
		{"undecodable", []byte{0x55, 0x0f, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rets, err := findRets(tc.code); err == nil {
				t.Errorf("findRets = %v, want an error", rets)
			}
		})
	}
}

// TestCallSites checks CallSites against `go tool objdump` on every link
// mode: net/http's (*conn).serve calls (*response).finishRequest directly;
// each site is a CALL rel32 (0xE8) in the file.
func TestCallSites(t *testing.T) {
	const serve, callee = "net/http.(*conn).serve", finishRequest
	callLine := regexp.MustCompile(`(?m)^\s+\S+:\d+\s+0x([0-9a-f]+)\s+e8[0-9a-f]{8}\s+CALL net/http\.\(\*response\)\.finishRequest\(SB\)`)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := openBin(t, v.name)
			sites, err := b.CallSites(serve, callee)
			if err != nil {
				t.Fatal(err)
			}
			exe, err := os.ReadFile(binPath(t, v.name))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sites {
				if exe[s] != 0xe8 {
					t.Errorf("byte at %#x is %#x, want 0xe8 (CALL rel32)", s, exe[s])
				}
			}
			if _, err := b.CallSites(serve, serve); ReasonOf(err) != ReasonPrologue {
				t.Errorf("CallSites of a function serve does not call: %v, want a %s error", err, ReasonPrologue)
			}
			if v.strip {
				return // objdump needs the symbol table; the bytes above still checked
			}
			out, err := exec.Command("go", "tool", "objdump", "-s", `^net/http\.\(\*conn\)\.serve$`, binPath(t, v.name)).CombinedOutput()
			if err != nil {
				t.Fatalf("go tool objdump: %v\n%s", err, out)
			}
			var want []uint64
			for _, m := range callLine.FindAllStringSubmatch(string(out), -1) {
				addr, _ := strconv.ParseUint(m[1], 16, 64)
				off, err := b.FileOffset(addr)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, off)
			}
			if len(want) == 0 {
				t.Fatalf("objdump shows no call of %s in %s", callee, serve)
			}
			if !reflect.DeepEqual(sites, want) {
				t.Errorf("CallSites = %#x, objdump says %#x", sites, want)
			}
		})
	}
}
