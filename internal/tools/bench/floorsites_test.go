package main

import (
	"context"
	"debug/elf"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	chi "github.com/obsd-dev/obsd/bpf/github.com/go-chi/chi/v5"
	httpserver "github.com/obsd-dev/obsd/bpf/net/http/server"
	"github.com/obsd-dev/obsd/bpf/probe"
)

// TestFloorSites resolves the chi-server load's floor in the chi service
// and checks it against `go tool objdump` read with debug/elf: the PUSHQ BP
// of every HTTP server probe site the binary has, and every CALL of
// sync.(*Pool).Put in chi's (*Mux).ServeHTTP, nothing else. Then the rules
// for sites a binary lacks.
func TestFloorSites(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir() + "/chi"
	if err := buildChiService(context.Background(), root, t.TempDir(), bin); err != nil {
		t.Fatal(err)
	}
	probes := []*probe.Probe{httpserver.New(), chi.New()}
	got, err := floorSites(bin, probes, false)
	if err != nil {
		t.Fatal(err)
	}
	want := objdumpSites(t, bin, probes)
	if !slices.Equal(got, want) {
		t.Errorf("floorSites = %#x, objdump says %#x", got, want)
	}
	t.Logf("%d floor sites in the chi service", len(got))
	// The server's two per request and the close, hijack, 417 ends are
	// in any net/http server; HTTP/2's too (chi's service offers h2 over
	// TLS); chi's one call: not all optional sites may be there, but these.
	if len(got) < 6 {
		t.Errorf("floorSites found %d sites, want at least the server's 5 and chi's 1", len(got))
	}

	entry := func(sym string, optional bool) *probe.Probe {
		return &probe.Probe{Name: "t", Sites: []probe.Site{{Symbol: sym, Program: "p", Optional: optional}}}
	}
	when := func(sym string) *probe.Probe {
		return &probe.Probe{Name: "t", Sites: []probe.Site{{Symbol: sym, Program: "p", When: probe.TCPPropagateConst}}}
	}
	calls := func(sym, callee string, optional bool) *probe.Probe {
		return &probe.Probe{Name: "t", Sites: []probe.Site{{Symbol: sym, Calls: callee, Program: "p", Optional: optional}}}
	}
	for _, tt := range []struct {
		name    string
		p       *probe.Probe
		n       int    // sites found
		wantErr string // "" for none
		when    bool   // floorSites' when
	}{
		{"entry present", entry("net/http.serverHandler.ServeHTTP", false), 1, "", false},
		{"entry missing", entry("main.noSuchFunc", false), 0, "main.noSuchFunc", false},
		{"optional entry missing", entry("main.noSuchFunc", true), 0, "", false},
		{"call present", calls(chi.Module+".(*Mux).ServeHTTP", "sync.(*Pool).Put", false), 1, "", false},
		{"callee missing", calls(chi.Module+".(*Mux).ServeHTTP", "main.noSuchFunc", false), 0, "main.noSuchFunc", false},
		{"optional callee missing", calls(chi.Module+".(*Mux).ServeHTTP", "main.noSuchFunc", true), 0, "", false},
		// Present, but never called from there: an error even when
		// optional, as obsd refuses the probe then.
		{"no such call", calls(chi.Module+".(*Mux).ServeHTTP", "net/http.serverHandler.ServeHTTP", true), 0, "no call of", false},
		// A site attached only with a feature on, as obsd attaches it.
		{"feature off", when("net/http.serverHandler.ServeHTTP"), 0, "", false},
		{"feature on", when("net/http.serverHandler.ServeHTTP"), 1, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			offs, err := floorSites(bin, []*probe.Probe{tt.p}, tt.when)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("floorSites error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(offs) != tt.n {
				t.Errorf("floorSites = %#x, %v; want %d sites", offs, err, tt.n)
			}
		})
	}
}

// objdumpSites is what floorSites should find for probes in bin, read from
// `go tool objdump`: the file offset of each entry site's first PUSHQ BP
// and of each CALL of a Calls site's callee, in the probes' order. Sites
// objdump does not list are taken as absent. Returns sites are not handled.
func objdumpSites(t *testing.T, bin string, probes []*probe.Probe) []uint64 {
	t.Helper()
	var syms []string
	for _, p := range probes {
		for _, s := range p.Sites {
			if s.Returns {
				t.Fatalf("objdumpSites: %s is a Returns site", s.Symbol)
			}
			syms = append(syms, regexp.QuoteMeta(s.Symbol))
		}
	}
	out, err := exec.Command("go", "tool", "objdump", "-s", "^("+strings.Join(syms, "|")+")$", bin).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	// Per function, its instructions' addresses and text.
	type inst struct {
		addr uint64
		text string
	}
	funcs := map[string][]inst{}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "TEXT "); ok {
			cur, _, _ = strings.Cut(rest, "(SB)")
			continue
		}
		f := strings.Split(strings.TrimSpace(line), "\t")
		var fields []string
		for _, x := range f {
			if x = strings.TrimSpace(x); x != "" {
				fields = append(fields, x)
			}
		}
		if cur == "" || len(fields) < 4 {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimPrefix(fields[1], "0x"), 16, 64)
		if err != nil {
			t.Fatalf("objdump line %q: %v", line, err)
		}
		funcs[cur] = append(funcs[cur], inst{addr, strings.Join(fields[3:], " ")})
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	fileOff := func(addr uint64) uint64 {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && addr >= p.Vaddr && addr < p.Vaddr+p.Filesz {
				return addr - p.Vaddr + p.Off
			}
		}
		t.Fatalf("address %#x is in no executable segment", addr)
		return 0
	}
	var offs []uint64
	for _, p := range probes {
		for _, s := range p.Sites {
			insts, ok := funcs[s.Symbol]
			if !ok {
				continue
			}
			for _, in := range insts {
				if s.Calls == "" && in.text == "PUSHQ BP" {
					offs = append(offs, fileOff(in.addr))
					break // the prologue's, the first
				}
				if s.Calls != "" && in.text == "CALL "+s.Calls+"(SB)" {
					offs = append(offs, fileOff(in.addr))
				}
			}
		}
	}
	return offs
}
