package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/obsd-dev/obsd/bpf/floor"
	"github.com/obsd-dev/obsd/internal/inspect"
)

// The two sites obsd's net/http server probe uses, at their PUSHQ BP.
var floorSymbols = []string{
	"net/http.serverHandler.ServeHTTP",
	"net/http.(*response).finishRequest",
}

// floorProbe is the empty program, loaded once and attached per server.
type floorProbe struct {
	coll *ebpf.Collection
	prog *ebpf.Program
	ex   *link.Executable
	offs []uint64
}

func loadFloor(serverBin string) (*floorProbe, error) {
	b, err := inspect.Open(serverBin)
	if err != nil {
		return nil, fmt.Errorf("inspect server: %w", err)
	}
	defer b.Close()
	var offs []uint64
	for _, sym := range floorSymbols {
		off, err := b.EntrySite(sym)
		if err != nil {
			return nil, fmt.Errorf("find floor site: %w", err)
		}
		offs = append(offs, off)
	}
	return newFloorAt(serverBin, offs)
}

// newFloorAt loads the empty program for the file offsets offs of bin.
func newFloorAt(bin string, offs []uint64) (*floorProbe, error) {
	spec, err := floor.Load()
	if err != nil {
		return nil, fmt.Errorf("load floor spec: %w", err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load floor program: %w", err)
	}
	prog := coll.Programs["floor_probe"]
	if prog == nil {
		coll.Close()
		return nil, errors.New("load floor program: no floor_probe in the collection")
	}
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("open %s for uprobes: %w", bin, err)
	}
	return &floorProbe{coll: coll, prog: prog, ex: ex, offs: offs}, nil
}

func (f *floorProbe) attach(pid int) (link.Link, error) {
	l, err := f.ex.UprobeMulti(nil, f.prog, &link.UprobeMultiOptions{Addresses: f.offs, PID: uint32(pid)})
	if err != nil {
		return nil, fmt.Errorf("attach floor uprobes to %d: %w", pid, err)
	}
	return l, nil
}

func (f *floorProbe) close() {
	if f != nil {
		f.coll.Close()
	}
}

// progSet is a set of BPF programs whose run counts and run times are summed.
type progSet struct {
	progs []*ebpf.Program
	names []string
	own   bool // progs were opened here and must be closed
}

// counters is the sum of a progSet's statistics at one moment, and each
// program's by name (as the kernel keeps it, so at most 15 characters).
type counters struct {
	runs    uint64
	runtime time.Duration
	each    map[string]progCount
}

// progCount is one program's statistics.
type progCount struct {
	runs    uint64
	runtime time.Duration
}

func (s *progSet) read() (counters, error) {
	c := counters{each: map[string]progCount{}}
	for i, p := range s.progs {
		st, err := p.Stats()
		if err != nil {
			return c, fmt.Errorf("read stats of BPF program %s: %w", s.names[i], err)
		}
		c.runs += st.RunCount
		c.runtime += st.Runtime
		name, _, _ := strings.Cut(s.names[i], " (id ")
		e := c.each[name]
		e.runs += st.RunCount
		e.runtime += st.Runtime
		c.each[name] = e
	}
	return c, nil
}

// since is what each program of c ran after before.
func (c counters) since(before counters) map[string]progCount {
	d := map[string]progCount{}
	for name, a := range c.each {
		b := before.each[name]
		d[name] = progCount{runs: a.runs - b.runs, runtime: a.runtime - b.runtime}
	}
	return d
}

func (s *progSet) close() {
	if s == nil || !s.own {
		return
	}
	for _, p := range s.progs {
		p.Close()
	}
}

// obsdProgNames are obsd's net/http server programs: the two of every
// request, and those of the ends that are not on the keep-alive path (a
// connection's close, a hijack, a 417), so that runs/request shows them.
var obsdProgNames = map[string]bool{"http_server_start": true, "http_server_end": true,
	"http_server_close": true, "http_server_hijack": true, "http_server_expect": true}

// isObsdProg matches a program name as the kernel keeps it, truncated to 15
// characters, or in full, as cilium/ebpf recovers it from BTF when it can.
func isObsdProg(name string) bool { return isProgNamed(name, obsdProgNames) }

// isProgNamed is isObsdProg for any set of full program names.
func isProgNamed(name string, names map[string]bool) bool {
	for full := range names {
		if name == full || (len(name) == 15 && strings.HasPrefix(full, name)) {
			return true
		}
	}
	return false
}

// obsdPrograms opens the BPF programs the obsd process pid holds, found
// through its fds' prog_id, so another obsd on the host is never counted.
// Only programs named in obsdProgNames are kept; any other is reported so
// the per-request hit count does not silently miss it.
func obsdPrograms(pid int) (*progSet, []string, error) {
	return obsdProgramsNamed(pid, obsdProgNames)
}

// obsdProgramsNamed is obsdPrograms keeping the programs named in names.
func obsdProgramsNamed(pid int, names map[string]bool) (*progSet, []string, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list obsd's fds: %w", err)
	}
	ids := map[ebpf.ProgramID]bool{}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // fd closed meanwhile
		}
		if id, ok := parseFdinfoProgID(string(data)); ok {
			ids[ebpf.ProgramID(id)] = true
		}
	}
	sorted := make([]ebpf.ProgramID, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	set := &progSet{own: true}
	var others []string
	for _, id := range sorted {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			set.close()
			return nil, nil, fmt.Errorf("read info of BPF program %d: %w", id, err)
		}
		if !isProgNamed(info.Name, names) {
			others = append(others, fmt.Sprintf("%s (id %d)", info.Name, id))
			p.Close()
			continue
		}
		set.progs = append(set.progs, p)
		set.names = append(set.names, fmt.Sprintf("%s (id %d)", info.Name, id))
	}
	if len(set.progs) == 0 {
		return nil, others, fmt.Errorf("obsd (pid %d) holds no program named %s; it holds: %s",
			pid, strings.Join(keys(names), " or "), strings.Join(others, ", "))
	}
	return set, others, nil
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
