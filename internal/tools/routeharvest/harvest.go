package main

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/obsd-dev/obsd/internal/export"
	"github.com/obsd-dev/obsd/internal/inspect"
)

// Registration is one call of a router's registration method found in the
// code, with the string literals passed to it.
type Registration struct {
	Router string // "chi", "gin", "echo", "gorillamux"
	Caller string // the function holding the call
	Callee string // e.g. "(*Mux).Get"; interface calls end in " (via itab)"
	Method string // HTTP method the route is for; "" any
	// Literal is the path (or prefix) string literal as written, Known false
	// when the argument was not a literal the harvest could read.
	Literal string
	Known   bool
	// Full is the template joined with every enclosing group, sub-router
	// and mount prefix; FullKnown reports that the whole chain up to a root
	// router was tied, so Full is what the router reports.
	Full      string
	FullKnown bool
	obj       *object // the group/router the call registered on (routes: the route)
	kind      regKind
}

// Result is what Harvest found in one executable.
type Result struct {
	Routers       []string       // routers linked: chi, gin, echo, gorillamux
	Registrations []Registration // in scan order (for gorilla, registration order)
	// Unresolved counts calls of a registration method whose path argument
	// was not a literal the harvest could read.
	Unresolved int
	// Funcs is how many functions were disassembled.
	Funcs int
}

// Templates returns the route registrations (not groups or prefixes) of
// router, in registration order.
func (r *Result) Templates(router string) []Registration {
	var out []Registration
	for _, g := range r.Registrations {
		if g.Router == router && g.kind == kRoute && g.Known {
			out = append(out, g)
		}
	}
	return out
}

type regKind uint8

const (
	kRoute     regKind = iota // a route: pattern (and method)
	kGroup                    // a group/prefix: pattern, a child object
	kMount                    // chi Mount(pattern, handler)
	kClosure                  // chi Group(fn): fn runs with a router of the same prefix
	kSubrouter                // gorilla (*Route).Subrouter()
	kMethods                  // gorilla Methods(...): methods of the receiver route
	kSame                     // returns its receiver (gorilla chains)
	kNew                      // a constructor: a root router
	kEchoGroup                // echo (*Group).Use on a group (*Echo).Group built inline
)

// spec says how to read one registration method's arguments, in words of
// Go's register ABI (word 0 is the receiver in RAX, then RBX, RCX, RDI,
// RSI, R8, R9, R10, R11; a string takes two words).
type spec struct {
	router string
	kind   regKind
	method string // fixed HTTP method of the route
	pat    int    // first word of the path string, -1 none
	meth   int    // first word of the method string, -1 none
	fn     int    // word of a func value (chi Route, Group), -1 none
	data   int    // word of an interface's data pointer (chi Mount), -1 none
	// variadic: pat/meth name a []string (ptr, len words), gorilla Methods.
	variadic bool
	// bits: the method word is chi's methodTyp bit set, not a string.
	bits bool
}

// chiMethods returns chi's methodTyp bits (tree.go) for a chi version:
// v5.4.0 added mQUERY before mTRACE, so 1<<9 is TRACE up to v5.3 and
// QUERY from v5.4.0 (an unknown version: both).
func chiMethods(version string) map[uint64]string {
	m := map[uint64]string{2: "CONNECT", 4: "DELETE", 8: "GET", 16: "HEAD", 32: "OPTIONS", 64: "PATCH",
		128: "POST", 256: "PUT", 512: "QUERY,TRACE", 1024: "TRACE"}
	var minor int
	if _, err := fmt.Sscanf(version, "v5.%d.", &minor); err == nil {
		if minor >= 4 {
			m[512] = "QUERY"
		} else {
			m[512] = "TRACE"
		}
	}
	return m
}

var abiRegs = []x86asm.Reg{x86asm.RAX, x86asm.RBX, x86asm.RCX, x86asm.RDI, x86asm.RSI, x86asm.R8, x86asm.R9, x86asm.R10, x86asm.R11}

// specs maps a method (package path + receiver + name, as the symbol
// table spells it) to how to read it.
func specs() map[string]spec {
	m := map[string]spec{}
	route := func(router, sym, method string, pat int) {
		m[sym] = spec{router: router, kind: kRoute, method: method, pat: pat, meth: -1, fn: -1, data: -1}
	}
	const chi = "github.com/go-chi/chi/v5.(*Mux)."
	for _, v := range []string{"Connect", "Delete", "Get", "Head", "Options", "Patch", "Post", "Put", "Query", "Trace"} {
		route("chi", chi+v, strings.ToUpper(v), 1)
	}
	route("chi", chi+"Handle", "", 1)
	route("chi", chi+"HandleFunc", "", 1)
	m[chi+"Method"] = spec{router: "chi", kind: kRoute, pat: 3, meth: 1, fn: -1, data: -1}
	m[chi+"MethodFunc"] = m[chi+"Method"]
	m[chi+"Route"] = spec{router: "chi", kind: kGroup, pat: 1, meth: -1, fn: 3, data: -1}
	m[chi+"Group"] = spec{router: "chi", kind: kClosure, pat: -1, meth: -1, fn: 1, data: -1}
	m[chi+"Mount"] = spec{router: "chi", kind: kMount, pat: 1, meth: -1, fn: -1, data: 4}
	m[chi+"With"] = spec{router: "chi", kind: kSame, pat: -1, meth: -1, fn: -1, data: -1}
	// The exported methods are small enough to be inlined; what remains
	// is a call of handle(method methodTyp, pattern, handler): the method
	// is a bit (chiMethods).
	m[chi+"handle"] = spec{router: "chi", kind: kRoute, pat: 2, meth: 1, fn: -1, data: -1, bits: true}
	m["github.com/go-chi/chi/v5.NewRouter"] = spec{router: "chi", kind: kNew, pat: -1, meth: -1, fn: -1, data: -1}
	m["github.com/go-chi/chi/v5.NewMux"] = m["github.com/go-chi/chi/v5.NewRouter"]

	const gin = "github.com/gin-gonic/gin.(*RouterGroup)."
	for _, v := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"} {
		route("gin", gin+v, v, 1)
	}
	route("gin", gin+"Any", "", 1)
	m[gin+"Handle"] = spec{router: "gin", kind: kRoute, pat: 3, meth: 1, fn: -1, data: -1}
	m[gin+"handle"] = m[gin+"Handle"] // GET & co. inlined
	m[gin+"Group"] = spec{router: "gin", kind: kGroup, pat: 1, meth: -1, fn: -1, data: -1}
	m["github.com/gin-gonic/gin.New"] = spec{router: "gin", kind: kNew, pat: -1, meth: -1, fn: -1, data: -1}
	m["github.com/gin-gonic/gin.Default"] = m["github.com/gin-gonic/gin.New"]

	for _, recv := range []string{"github.com/labstack/echo/v4.(*Echo).", "github.com/labstack/echo/v4.(*Group)."} {
		for _, v := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "CONNECT", "TRACE"} {
			route("echo", recv+v, v, 1)
		}
		route("echo", recv+"Any", "", 1)
		m[recv+"Add"] = spec{router: "echo", kind: kRoute, pat: 3, meth: 1, fn: -1, data: -1}
		m[recv+"Group"] = spec{router: "echo", kind: kGroup, pat: 1, meth: -1, fn: -1, data: -1}
	}
	// (*Echo).GET & co. inline to add(host, method, path, handler, ...);
	// (*Echo).Group inlines to a new Group, then (*Group).Use on it.
	m["github.com/labstack/echo/v4.(*Echo).add"] = spec{router: "echo", kind: kRoute, pat: 5, meth: 3, fn: -1, data: -1}
	m["github.com/labstack/echo/v4.(*Group).Use"] = spec{router: "echo", kind: kEchoGroup, pat: -1, meth: -1, fn: -1, data: -1}
	m["github.com/labstack/echo/v4.New"] = spec{router: "echo", kind: kNew, pat: -1, meth: -1, fn: -1, data: -1}

	const gr, gt = "github.com/gorilla/mux.(*Router).", "github.com/gorilla/mux.(*Route)."
	// On a Router each of these makes a new route; on a Route it sets the
	// route's template (kSame: the call returns its receiver).
	for _, v := range []string{"HandleFunc", "Handle", "Path", "PathPrefix"} {
		route("gorillamux", gr+v, "", 1)
	}
	m[gr+"Methods"] = spec{router: "gorillamux", kind: kRoute, pat: -1, meth: 1, fn: -1, data: -1, variadic: true}
	m[gr+"NewRoute"] = spec{router: "gorillamux", kind: kRoute, pat: -1, meth: -1, fn: -1, data: -1}
	m[gt+"Path"] = spec{router: "gorillamux", kind: kSame, pat: 1, meth: -1, fn: -1, data: -1}
	m[gt+"PathPrefix"] = m[gt+"Path"]
	m[gt+"Methods"] = spec{router: "gorillamux", kind: kMethods, pat: -1, meth: 1, fn: -1, data: -1, variadic: true}
	m[gt+"Subrouter"] = spec{router: "gorillamux", kind: kSubrouter, pat: -1, meth: -1, fn: -1, data: -1}
	for _, v := range []string{"HandlerFunc", "Handler", "Name", "Schemes", "Host", "Headers", "Queries"} {
		m[gt+v] = spec{router: "gorillamux", kind: kSame, pat: -1, meth: -1, fn: -1, data: -1}
	}
	m["github.com/gorilla/mux.NewRouter"] = spec{router: "gorillamux", kind: kNew, pat: -1, meth: -1, fn: -1, data: -1}
	return m
}

// object is a router, group, sub-router or (gorilla) route the code builds.
type object struct {
	router  string
	parent  *object // enclosing router/group/route; nil at a root or when untied
	root    bool    // made by a constructor: a known root
	prefix  string  // own pattern, joined to the parent's by the router's rule
	known   bool    // prefix is a literal that was read
	mount   bool    // chi: a mounted (Route/Mount) router, joined as prefix + "/*"
	methods []string
	isRoute bool // gorilla: a route (its template is prefix)
	// gorilla: prefixRoute matches by prefix (PathPrefix); hasSub routes
	// to a sub-router, whose routes are what the router reports.
	prefixRoute, hasSub bool
	reg                 int // gorilla: index of the route's registration, -1 none
	// fields: a fresh heap object (runtime.newobject, router "") and what
	// the code stored into it, by offset; inlined constructors build
	// routers and groups so, and variadic []string arguments escape so.
	fields map[int64]value
}

// full returns the object's joined prefix and whether its chain reaches a
// known root with every part read.
func (o *object) full() (string, bool) {
	if o == nil {
		return "", false
	}
	var pp string
	pk := o.root
	if o.parent != nil {
		pp, pk = o.parent.full()
	}
	ok := pk && (o.known || o.root)
	switch o.router {
	case "chi":
		if o.mount {
			return pp + o.prefix + "/*", ok
		}
		return pp + o.prefix, ok
	case "gin":
		if o.root {
			return "/", ok
		}
		return ginJoin(pp, o.prefix), ok
	default:
		return pp + o.prefix, ok
	}
}

// ginJoin is gin's joinPaths: path.Join, keeping rel's trailing slash.
func ginJoin(base, rel string) string {
	if rel == "" {
		return base
	}
	j := cleanPath(base + "/" + rel)
	if strings.HasSuffix(rel, "/") && !strings.HasSuffix(j, "/") {
		j += "/"
	}
	return j
}

// cleanPath is path.Clean without importing path for one call site.
func cleanPath(p string) string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// value is what the scan knows of a register or stack slot.
type value struct {
	k   vkind
	n   uint64  // constant, address, stack offset or itab offset
	obj *object // vObj, vItab, vMethod
}

type vkind uint8

const (
	vUnknown vkind = iota
	vConst
	vAddr  // a link-time address (LEAQ sym(SB))
	vStack // the address of a stack slot, n = offset from SP
	vObj   // a pointer to a router object
	vItab  // the itab of an interface holding obj
	vMethod
)

type harvester struct {
	bin    *inspect.Binary
	static *inspect.Static
	file   []byte
	elf    *elf.File
	specs  map[string]spec
	byAddr map[uint64]string // function entry -> name, of every function
	calls  map[uint64]spec   // registration function entry -> spec
	names  map[uint64]string // registration function entry -> short name
	newobj uint64            // runtime.newobject
	// keep: runtime functions that save every register (write barriers).
	keep map[uint64]bool
	// relocs: a PIE's R_X86_64_RELATIVE relocations, link-time address of
	// a word -> the address it holds once loaded (the file holds zero).
	relocs map[uint64]uint64
	// chiItab maps an offset into chi's Router itab to the method name.
	chiItab map[uint64]string
	chiBits map[uint64]string // chiMethods of the linked chi
	res     *Result
	scanned map[string]bool // tied closures already scanned with state
}

// Harvest disassembles every function of the executable at path that calls
// a registration method of chi, gin, echo or gorilla/mux (and the chi
// closures those calls are given), and returns the string literals passed.
// amd64 ELF only; stripped binaries work through .gopclntab.
func Harvest(path string) (*Result, error) {
	bin, err := inspect.Open(path)
	if err != nil {
		return nil, err
	}
	defer bin.Close()
	if bin.Arch != "amd64" {
		return nil, fmt.Errorf("harvest %s: %s, only amd64", path, bin.Arch)
	}
	st, err := bin.OpenStatic()
	if err != nil {
		return nil, fmt.Errorf("harvest %s: %w", path, err)
	}
	defer st.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("harvest: %w", err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("harvest: %w", err)
	}
	defer ef.Close()
	funcs, err := bin.Funcs()
	if err != nil {
		return nil, fmt.Errorf("harvest %s: %w", path, err)
	}
	h := &harvester{bin: bin, static: st, file: data, elf: ef, specs: specs(), byAddr: map[uint64]string{},
		calls: map[uint64]spec{}, names: map[uint64]string{}, res: &Result{}, scanned: map[string]bool{}}
	routers := map[string]bool{}
	for _, f := range funcs {
		h.byAddr[f.Addr] = f.Name
		switch {
		case f.Name == "runtime.newobject":
			h.newobj = f.Addr
		case strings.HasPrefix(f.Name, "runtime.gcWriteBarrier"):
			if h.keep == nil {
				h.keep = map[uint64]bool{}
			}
			h.keep[f.Addr] = true
		}
		if s, ok := h.specs[f.Name]; ok {
			h.calls[f.Addr] = s
			short := f.Name[strings.LastIndexByte(f.Name, '/')+1:]
			h.names[f.Addr] = short[strings.IndexByte(short, '.')+1:]
			if strings.Contains(f.Name, "/go-chi/chi/v5.") || strings.Contains(f.Name, "/gin-gonic/gin.") ||
				strings.Contains(f.Name, "/labstack/echo/v4.") || strings.Contains(f.Name, "/gorilla/mux.") {
				routers[s.router] = true
			}
		}
	}
	for r := range routers {
		h.res.Routers = append(h.res.Routers, r)
	}
	sort.Strings(h.res.Routers)
	if len(routers) == 0 {
		return h.res, nil
	}
	if bin.PIE {
		h.relocs = relativeRelocs(ef)
	}
	h.chiBits = chiMethods(bin.Modules["github.com/go-chi/chi/v5"])
	if routers["chi"] {
		h.chiItab = h.findItab("github.com/go-chi/chi/v5.(*Mux).")
	}
	sort.Slice(funcs, func(i, j int) bool { return funcs[i].Addr < funcs[j].Addr })
	for _, f := range funcs {
		if _, isReg := h.specs[f.Name]; isReg || isRouterPkg(f.Name) {
			continue // the routers' own code registers nothing of the service's
		}
		code := h.code(f)
		if code == nil || !h.callsRegistration(code, f.Addr) {
			continue
		}
		if h.scanned[f.Name] {
			continue
		}
		h.scan(f, code, nil)
	}
	// Resolve every template now that all parents are known.
	for i := range h.res.Registrations {
		g := &h.res.Registrations[i]
		g.Full, g.FullKnown = h.template(g)
	}
	return h.res, nil
}

func isRouterPkg(name string) bool {
	for _, p := range []string{"github.com/go-chi/chi/v5.", "github.com/gin-gonic/gin.", "github.com/labstack/echo/v4.", "github.com/gorilla/mux."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// template joins a route registration with its enclosing prefixes.
func (h *harvester) template(g *Registration) (string, bool) {
	if g.kind != kRoute || !g.Known {
		return "", false
	}
	switch g.Router {
	case "chi":
		p, ok := g.obj.full()
		return export.ChiRoutePattern(p + g.Literal), ok
	case "gin":
		p, ok := g.obj.full()
		return ginJoin(p, g.Literal), ok
	case "echo":
		p, ok := g.obj.full()
		t := p + g.Literal
		if t == "" || t[0] != '/' {
			t = "/" + t
		}
		return t, ok
	case "gorillamux":
		return g.obj.full()
	}
	return "", false
}

func (h *harvester) code(f inspect.Func) []byte {
	if f.Size == 0 || f.Size > 1<<20 {
		return nil
	}
	off, err := h.bin.FileOffset(f.Addr)
	if err != nil || off+f.Size > uint64(len(h.file)) {
		return nil
	}
	return h.file[off : off+f.Size]
}

// callsRegistration is a cheap filter before disassembling: any E8 rel32
// whose target is a registration function.
func (h *harvester) callsRegistration(code []byte, addr uint64) bool {
	for i := 0; i+5 <= len(code); i++ {
		if code[i] != 0xE8 {
			continue
		}
		t := addr + uint64(i) + 5 + uint64(int64(int32(binary.LittleEndian.Uint32(code[i+1:]))))
		if _, ok := h.calls[t]; ok {
			return true
		}
	}
	return false
}

// relativeRelocs reads the R_X86_64_RELATIVE entries of a PIE's
// allocated SHT_RELA sections (none without section headers).
func relativeRelocs(ef *elf.File) map[uint64]uint64 {
	m := map[uint64]uint64{}
	for _, sec := range ef.Sections {
		if sec.Type != elf.SHT_RELA || sec.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		for i := 0; i+24 <= len(data); i += 24 {
			if uint32(binary.LittleEndian.Uint64(data[i+8:])) == uint32(elf.R_X86_64_RELATIVE) {
				m[binary.LittleEndian.Uint64(data[i:])] = binary.LittleEndian.Uint64(data[i+16:])
			}
		}
	}
	return m
}

// word returns the 8-byte word at link-time address addr of segment data
// seg (starting at vaddr), relocated in a PIE.
func (h *harvester) word(seg []byte, vaddr, addr uint64) uint64 {
	if v, ok := h.relocs[addr]; ok {
		return v
	}
	return binary.LittleEndian.Uint64(seg[addr-vaddr:])
}

// findItab finds chi's Router itab by its method table: the longest run of
// 8-byte words, in a non-executable segment, that are all entries of
// (*Mux) methods. It maps each offset from the itab's start (its fun array
// begins at 24) to the method name. In a PIE the words are relocations
// (the file holds zeroes): their addends are read instead.
func (h *harvester) findItab(prefix string) map[uint64]string {
	var best []string
	var bestLen int
	for _, p := range h.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X != 0 || p.Off+p.Filesz > uint64(len(h.file)) {
			continue
		}
		seg := h.file[p.Off : p.Off+p.Filesz]
		var run []string
		unreachable := 0 // the run's leading dropped methods
		for i := 0; i+8 <= len(seg); i += 8 {
			name, ok := h.byAddr[h.word(seg, p.Vaddr, p.Vaddr+uint64(i))]
			if ok && strings.HasPrefix(name, prefix) {
				if run == nil {
					run = make([]string, unreachable)
				}
				run = append(run, strings.TrimPrefix(name, prefix))
				continue
			}
			if ok && name == "runtime.unreachableMethod" {
				// The linker drops methods nothing calls and points their
				// itab slots here.
				if run != nil {
					run = append(run, "")
				} else {
					unreachable++
				}
				continue
			}
			if len(run) > bestLen {
				best, bestLen = run, len(run)
			}
			run, unreachable = nil, 0
		}
	}
	if bestLen < 10 {
		return nil
	}
	m := map[uint64]string{}
	for i, n := range best {
		m[24+uint64(i)*8] = n
	}
	return m
}

type state struct {
	regs  map[x86asm.Reg]value
	stack map[int64]value
	objs  map[int64]*object // router objects living in stack slots
}

func reg64(r x86asm.Reg) x86asm.Reg {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		// AL..BL are 0..3, then SPB.. / AH..: map by name is simplest.
	case r >= x86asm.AX && r <= x86asm.R15W:
		return r - x86asm.AX + x86asm.RAX
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return r - x86asm.EAX + x86asm.RAX
	case r >= x86asm.RAX && r <= x86asm.R15:
		return r
	}
	return 0
}

// scan interprets f's code linearly (ignoring branches: registration code
// is straight-line), tracking constants, .rodata addresses, stack slots
// and router objects through registers and SP-relative slots. entry, when
// not nil, is the state the function starts with (a tied chi closure).
func (h *harvester) scan(f inspect.Func, code []byte, entry map[x86asm.Reg]value) {
	h.res.Funcs++
	s := state{regs: map[x86asm.Reg]value{}, stack: map[int64]value{}}
	for r, v := range entry {
		s.regs[r] = v
	}
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			pc++
			continue
		}
		next := f.Addr + uint64(pc+inst.Len)
		pc += inst.Len
		h.step(f, &s, inst, next)
	}
}

func (h *harvester) step(f inspect.Func, s *state, inst x86asm.Inst, next uint64) {
	dst, _ := inst.Args[0].(x86asm.Reg)
	dst = reg64(dst)
	switch inst.Op {
	case x86asm.LEA:
		m, ok := inst.Args[1].(x86asm.Mem)
		switch {
		case ok && m.Base == x86asm.RIP && m.Index == 0:
			s.regs[dst] = value{k: vAddr, n: next + uint64(m.Disp)}
		case ok && m.Base == x86asm.RSP && m.Index == 0:
			s.regs[dst] = value{k: vStack, n: uint64(m.Disp)}
		default:
			s.regs[dst] = value{}
		}
		return
	case x86asm.MOV:
		switch a := inst.Args[1].(type) {
		case x86asm.Imm:
			if dst != 0 {
				s.regs[dst] = value{k: vConst, n: uint64(a)}
			} else {
				s.store(inst.Args[0], value{k: vConst, n: uint64(a)})
			}
			return
		case x86asm.Reg:
			v := s.regs[reg64(a)]
			if dst != 0 {
				s.regs[dst] = v
			} else {
				s.store(inst.Args[0], v)
			}
			return
		case x86asm.Mem:
			if dst == 0 {
				return
			}
			switch {
			case a.Base == x86asm.RSP && a.Index == 0:
				s.regs[dst] = s.stack[a.Disp]
			case a.Base == x86asm.RIP && a.Index == 0:
				// A load from a global: an address the linker put there
				// (a funcval's code pointer) when it is in .rodata.
				s.regs[dst] = value{}
			default:
				if b := s.regs[reg64(a.Base)]; b.k == vItab && a.Index == 0 {
					s.regs[dst] = value{k: vMethod, n: uint64(a.Disp), obj: b.obj}
				} else {
					s.regs[dst] = value{}
				}
			}
			return
		}
	case x86asm.XOR:
		if r, ok := inst.Args[1].(x86asm.Reg); ok && reg64(r) == dst && dst != 0 {
			s.regs[dst] = value{k: vConst}
			return
		}
	case x86asm.MOVUPS:
		// MOVUPS X15, off(SP) zeroes 16 bytes of stack.
		if m, ok := inst.Args[0].(x86asm.Mem); ok {
			if off, ok := s.slot(m); ok {
				s.stack[off], s.stack[off+8] = value{k: vConst}, value{k: vConst}
				delete(s.objs, off)
			}
		}
		return
	case x86asm.CALL:
		h.call(f, s, inst, next)
		return
	}
	if dst != 0 {
		s.regs[dst] = value{}
	}
}

// slot resolves a memory operand to a stack offset from SP: SP-based, or
// based on a register holding a stack slot's address.
func (s *state) slot(m x86asm.Mem) (int64, bool) {
	if m.Index != 0 {
		return 0, false
	}
	if m.Base == x86asm.RSP {
		return m.Disp, true
	}
	if b := s.regs[reg64(m.Base)]; b.k == vStack {
		return int64(b.n) + m.Disp, true
	}
	return 0, false
}

// store records a store to a stack slot or a field of a fresh heap object.
func (s *state) store(arg x86asm.Arg, v value) {
	m, ok := arg.(x86asm.Mem)
	if !ok || m.Index != 0 {
		return
	}
	if off, ok := s.slot(m); ok {
		s.stack[off] = v
		// A new object built where an old one lived (the compiler reuses
		// frame slots): the old one is gone.
		delete(s.objs, off)
		return
	}
	if b := s.regs[reg64(m.Base)]; b.k == vObj && b.obj.fields != nil {
		b.obj.fields[m.Disp] = v
	}
}

// str reads a string argument from words w, w+1.
func (h *harvester) str(s *state, w int) (string, bool) {
	if w < 0 || w+1 >= len(abiRegs) {
		return "", false
	}
	p, n := s.regs[abiRegs[w]], s.regs[abiRegs[w+1]]
	return h.strVal(p, n)
}

func (h *harvester) strVal(p, n value) (string, bool) {
	if n.k != vConst {
		return "", false
	}
	if n.n == 0 {
		return "", true
	}
	if p.k != vAddr || n.n > 4096 {
		return "", false
	}
	str, err := h.static.String(p.n, int(n.n))
	return str, err == nil
}

// strs reads a []string argument (ptr, len words w, w+1) built in stack
// slots.
func (h *harvester) strs(s *state, w int) ([]string, bool) {
	p, n := s.regs[abiRegs[w]], s.regs[abiRegs[w+1]]
	if n.k != vConst || n.n > 16 {
		return nil, false
	}
	var slots map[int64]value
	var base int64
	switch {
	case p.k == vStack:
		slots, base = s.stack, int64(p.n)
	case p.k == vObj && p.obj.fields != nil:
		slots = p.obj.fields // the backing array escaped to the heap
	default:
		return nil, false
	}
	var out []string
	for i := uint64(0); i < n.n; i++ {
		off := base + int64(16*i)
		v, ok := h.strVal(slots[off], slots[off+8])
		if !ok {
			return nil, false
		}
		out = append(out, v)
	}
	return out, true
}

func (h *harvester) call(f inspect.Func, s *state, inst x86asm.Inst, next uint64) {
	var sp spec
	var name string
	var ok bool
	switch a := inst.Args[0].(type) {
	case x86asm.Rel:
		t := next + uint64(int64(a))
		if h.keep[t] {
			return
		}
		if t == h.newobj && t != 0 {
			s.regs = map[x86asm.Reg]value{x86asm.RAX: {k: vObj, obj: &object{reg: -1, fields: map[int64]value{}}}}
			return
		}
		sp, ok = h.calls[t]
		name = h.names[t]
	case x86asm.Reg:
		// An interface call: chi's Router in a tied closure.
		if v := s.regs[reg64(a)]; v.k == vMethod && h.chiItab != nil {
			if m, found := h.chiItab[v.n]; found {
				sp, ok = h.specs["github.com/go-chi/chi/v5.(*Mux)."+m]
				name = "(*Mux)." + m + " (via itab)"
				s.regs[x86asm.RAX] = value{k: vObj, obj: v.obj} // the data word, as the receiver
			}
		}
	}
	defer func() {
		// Go's ABI saves no general register across a call.
		ret := s.regs[x86asm.RAX]
		rbx := s.regs[x86asm.RBX]
		s.regs = map[x86asm.Reg]value{}
		if ok {
			s.regs[x86asm.RAX], s.regs[x86asm.RBX] = ret, rbx
		}
	}()
	if !ok {
		return
	}
	recv := s.regs[x86asm.RAX]
	if recv.k == vStack {
		// A router object the compiler put in this frame (echo's inlined
		// Group): one object per slot, its fields the slots above it.
		off := int64(recv.n)
		o := s.objs[off]
		if o == nil {
			o = &object{reg: -1, fields: map[int64]value{}}
			for k := int64(0); k < 128; k += 8 {
				if v, ok := s.stack[off+k]; ok {
					o.fields[k] = v
				}
			}
			if s.objs == nil {
				s.objs = map[int64]*object{}
			}
			s.objs[off] = o
		}
		recv = value{k: vObj, obj: o}
	}
	parent := recv.obj
	switch {
	case recv.k != vObj:
		parent = &object{router: sp.router, reg: -1} // untied: no root known
	case parent.router == "" && sp.kind == kEchoGroup:
		// echo's inlined (*Echo).Group: &Group{prefix: prefix, echo: e}.
		// The first string and the first *Echo in the struct (host is
		// empty, so not a string read here); slots past the struct may
		// hold another group's, so the lowest offsets win.
		parent.router, parent.known = "echo", true
		offs := make([]int64, 0, len(parent.fields))
		for off := range parent.fields {
			offs = append(offs, off)
		}
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		prefixSet := false
		for _, off := range offs {
			f := parent.fields[off]
			if f.k == vObj && f.obj.router == "echo" && parent.parent == nil {
				parent.parent = f.obj
			}
			if f.k == vAddr && !prefixSet {
				if p, ok := h.strVal(f, parent.fields[off+8]); ok {
					parent.prefix, prefixSet = p, true
				}
			}
		}
		if parent.parent == nil {
			parent.known = false
		}
		g := Registration{Router: "echo", Caller: f.Name, Callee: "(*Echo).Group (inlined)", kind: kGroup,
			obj: parent, Literal: parent.prefix, Known: parent.known}
		h.res.Registrations = append(h.res.Registrations, g)
	case parent.router == "":
		// A router made by an inlined constructor (chi.NewRouter,
		// mux.NewRouter): a root.
		parent.router, parent.root, parent.known = sp.router, true, true
	}
	if sp.kind == kEchoGroup {
		return
	}
	result := value{}
	defer func() { s.regs[x86asm.RAX] = result }()
	switch sp.kind {
	case kNew:
		result = value{k: vObj, obj: &object{router: sp.router, root: true, known: true, reg: -1}}
		return
	case kSame:
		if sp.pat >= 0 && parent.isRoute {
			lit, known := h.str(s, sp.pat)
			parent.prefix, parent.known = parent.prefix+lit, known
			parent.prefixRoute = parent.prefixRoute || strings.HasSuffix(name, "PathPrefix")
			if parent.reg >= 0 {
				g := &h.res.Registrations[parent.reg]
				g.Literal, g.Known = g.Literal+lit, known
			}
		}
		if sp.router == "chi" {
			// With: an inline router, the receiver's prefix; the result is
			// an interface (RAX itab, RBX data).
			result = value{k: vItab, obj: parent}
			s.regs[x86asm.RBX] = value{k: vObj, obj: parent}
			return
		}
		result = value{k: vObj, obj: parent}
		return
	case kMethods:
		if ms, known := h.strs(s, sp.meth); known {
			parent.methods = append(parent.methods, ms...)
			if parent.reg >= 0 {
				h.res.Registrations[parent.reg].Method = strings.Join(parent.methods, ",")
			}
		}
		result = value{k: vObj, obj: parent}
		return
	case kSubrouter:
		parent.hasSub = true
		result = value{k: vObj, obj: &object{router: sp.router, parent: parent, known: true, reg: -1}}
		return
	}
	var tie *object // the router a closure argument runs with, scanned after this registration
	g := Registration{Router: sp.router, Caller: f.Name, Callee: name, Method: sp.method, kind: sp.kind, obj: parent}
	if sp.meth >= 0 {
		if sp.bits {
			g.Method = "?"
			if v := s.regs[abiRegs[sp.meth]]; v.k == vConst {
				g.Method = h.chiBits[v.n] // "" for several bits: any method
			}
		} else if sp.variadic {
			ms, known := h.strs(s, sp.meth)
			g.Method = strings.Join(ms, ",")
			if !known {
				g.Method = "?"
			}
		} else if m, known := h.str(s, sp.meth); known {
			g.Method = m
		} else {
			g.Method = "?"
		}
	}
	if sp.pat >= 0 {
		g.Literal, g.Known = h.str(s, sp.pat)
		if !g.Known {
			h.res.Unresolved++
		}
	} else if sp.kind == kRoute && sp.router == "gorillamux" {
		g.Known = true // Methods()/NewRoute(): a route with no path of its own
	}
	switch sp.kind {
	case kRoute:
		if sp.router == "gorillamux" {
			// A route object: later Path/Methods calls on it refine it.
			r := &object{router: sp.router, parent: parent, prefix: g.Literal, known: g.Known, isRoute: true,
				reg: len(h.res.Registrations), prefixRoute: strings.HasSuffix(name, "PathPrefix")}
			if g.Method != "" {
				r.methods = strings.Split(g.Method, ",")
			}
			g.obj = r
			result = value{k: vObj, obj: r}
		}
	case kGroup:
		child := &object{router: sp.router, parent: parent, prefix: g.Literal, known: g.Known, mount: sp.router == "chi", reg: -1}
		g.obj = child
		result = value{k: vObj, obj: child}
		if sp.fn >= 0 {
			tie = child
		}
	case kClosure:
		tie = parent
	case kMount:
		if d := s.regs[abiRegs[sp.data]]; d.k == vObj && d.obj != parent {
			d.obj.parent, d.obj.prefix, d.obj.known, d.obj.mount, d.obj.root = parent, g.Literal, g.Known, true, false
			g.obj = d.obj
		}
	}
	h.res.Registrations = append(h.res.Registrations, g)
	if tie != nil {
		h.tie(s, sp.fn, tie)
	}
}

// tie scans the closure passed in word w (a funcval: a static one in
// .rodata, or one built on the stack) with the router obj as its argument
// r chi.Router (RAX itab, RBX data).
func (h *harvester) tie(s *state, w int, obj *object) {
	v := s.regs[abiRegs[w]]
	var code uint64
	switch v.k {
	case vAddr:
		if c, ok := h.relocs[v.n]; ok {
			code = c
		} else if str, err := h.static.String(v.n, 8); err == nil {
			code = binary.LittleEndian.Uint64([]byte(str))
		}
	case vStack:
		if c := s.stack[int64(v.n)]; c.k == vAddr {
			code = c.n
		}
	}
	name, ok := h.byAddr[code]
	if !ok {
		return
	}
	fn, err := h.bin.Func(name)
	if err != nil {
		return
	}
	c := h.code(fn)
	if c == nil {
		return
	}
	// A closure scanned before without its argument loses those results.
	if !h.scanned[name] {
		kept := h.res.Registrations[:0]
		for _, g := range h.res.Registrations {
			if g.Caller != name {
				kept = append(kept, g)
			}
		}
		h.res.Registrations = kept
	}
	h.scanned[name] = true
	h.scan(fn, c, map[x86asm.Reg]value{x86asm.RAX: {k: vItab, obj: obj}, x86asm.RBX: {k: vObj, obj: obj}})
}
