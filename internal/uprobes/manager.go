// Package uprobes attaches the declared probes to target processes, injects
// each binary's struct offsets, reads the ring buffers and hands decoded
// requests to a Sink. It owns every BPF object and link it creates.
package uprobes

import (
	"errors"
	"fmt"
	"go/version"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/offsets"
)

// withSpans and sampleBoundConst are the BPF constants that Options.Spans
// and Options.SampleRatio set.
const (
	withSpans        = "with_spans"
	sampleBoundConst = "sample_bound"
)

// sampleBound is the OTel SDK's TraceIDRatioBased bound: a trace ID whose
// last 8 bytes, big-endian, shifted right by one, are below it is sampled.
func sampleBound(ratio float64) uint64 {
	switch {
	case ratio >= 1:
		return 1 << 63
	case ratio > 0:
		return uint64(ratio * (1 << 63))
	}
	return 0
}

// ReasonExited is counted when a process is gone before it could be attached.
const ReasonExited = "process_exited"

// ReasonAttach is counted when the kernel refused a link or a program.
const ReasonAttach = "attach_failed"

// Sink receives every decoded request. It is called from one goroutine per
// probe and must not block for long: the ring buffer fills meanwhile.
type Sink interface {
	Request(probe.Request)
}

// Options configures a Manager. Zero values work except Sink.
type Options struct {
	Logger *slog.Logger
	// Offsets is the fallback table for binaries without DWARF; nil loads
	// the embedded one.
	Offsets *offsets.Table
	Sink    Sink
	// Probes overrides the enabled list (tests, benchmarks); nil means Probes().
	Probes []*probe.Probe
	// Spans says requests become spans, which carry the URL path: probes
	// then copy every path, not only those the fallback route needs. It
	// sets the BPF constant with_spans where a probe has one. Requests not
	// sampled for a span are counted in the kernel where the probe can (see
	// Histograms).
	Spans bool
	// SampleRatio is the share of requests the probes sample for spans, as
	// the OTel TraceIDRatioBased sampler would; used only with Spans.
	SampleRatio float64
	// DurationBuckets are the upper bounds, in seconds, of the exported
	// duration histogram; in-kernel histograms use the same. When it is
	// empty, probes send a record per request.
	DurationBuckets []float64
}

// Manager attaches probes to processes. Methods are safe for concurrent use.
type Manager struct {
	spans   bool
	sample  uint64   // the sample_bound constant: SampleRatio * 2^63
	bounds  []uint64 // DurationBuckets in ns
	log     *slog.Logger
	offsets *offsets.Table
	sink    Sink
	probes  []*loadedProbe
	stats   *stats

	mu    sync.Mutex
	procs map[int]*process
	bins  map[binKey]*loadedBinary
	// refused remembers binaries that cannot be instrumented, so a node full
	// of non-Go processes costs one inspection and one log line per binary.
	refused map[binKey]error
	// retired holds the final in-kernel series of detached processes until
	// Forget, so the last scrapes still see their counts.
	retired map[uint32][]probe.Histogram
}

// loadedProbe holds what a probe shares across all targets: its maps.
type loadedProbe struct {
	*probe.Probe
	spec *ebpf.CollectionSpec
	maps map[string]*ebpf.Map
	// Counted by the probe's reader, read at scrape time.
	events, decodeErrs atomic.Uint64
}

type binKey struct{ dev, ino uint64 }

// loadedBinary is one executable's programs, loaded with its offsets, shared by all
// processes running it.
type loadedBinary struct {
	key      binKey
	info     *inspect.Binary
	refs     int
	sites    [][]uint64 // per probe, per site: file offset
	programs []*ebpf.Collection
	// static reads patterns that probes report by address; nil when the
	// binary has no .rodata or in-kernel metrics are off.
	static *inspect.Static
	// patterns caches what static resolved, by address and length.
	patterns map[[2]uint64]string
}

type process struct {
	pid   int
	bin   *loadedBinary
	links []link.Link
}

// New loads every probe once, so that a kernel which refuses them fails here
// rather than at the first target, and creates the maps all targets share.
func New(o Options) (*Manager, error) {
	if o.Sink == nil {
		return nil, errors.New("uprobes: Options.Sink is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Offsets == nil {
		t, err := offsets.Load()
		if err != nil {
			return nil, fmt.Errorf("loading offsets table: %w", err)
		}
		o.Offsets = t
	}
	if o.Probes == nil {
		o.Probes = Probes()
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock limit: %w", err)
	}
	m := &Manager{
		spans:   o.Spans,
		log:     o.Logger,
		offsets: o.Offsets,
		sink:    o.Sink,
		procs:   map[int]*process{},
		bins:    map[binKey]*loadedBinary{},
		refused: map[binKey]error{},
		retired: map[uint32][]probe.Histogram{},
	}
	m.sample = sampleBound(o.SampleRatio)
	for _, b := range o.DurationBuckets {
		m.bounds = append(m.bounds, uint64(math.Round(b*1e9)))
	}
	for _, p := range o.Probes {
		lp, err := loadProbe(p)
		if err == nil {
			m.probes = append(m.probes, lp)
			err = m.checkBounds(lp)
		}
		if err != nil {
			m.closeMaps()
			return nil, err
		}
	}
	m.stats = newStats(m)
	return m, nil
}

func loadProbe(p *probe.Probe) (*loadedProbe, error) {
	spec, err := p.Spec()
	if err != nil {
		return nil, fmt.Errorf("loading spec of probe %s: %w", p.Name, err)
	}
	names := []string{}
	for _, c := range p.Consts {
		names = append(names, c.Name)
	}
	for _, it := range p.ITabs {
		names = append(names, it.Name)
	}
	for _, s := range p.Sites {
		if s.VaddrConst != "" {
			names = append(names, s.VaddrConst)
		}
	}
	for _, name := range names {
		if _, ok := spec.Variables[name]; !ok {
			return nil, fmt.Errorf("probe %s: constant %q not in BPF object", p.Name, name)
		}
	}
	lp := &loadedProbe{Probe: p, spec: spec, maps: map[string]*ebpf.Map{}}
	for name, ms := range spec.Maps {
		if isDataSection(name) {
			continue // .rodata holds the per-binary constants
		}
		mp, err := ebpf.NewMap(ms)
		if err != nil {
			lp.close()
			return nil, fmt.Errorf("creating map %s of probe %s: %w", name, p.Name, err)
		}
		lp.maps[name] = mp
	}
	// Verify the programs once with default constants: a kernel that
	// refuses them should fail start-up, not every attach.
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: lp.maps})
	if err != nil {
		lp.close()
		return nil, fmt.Errorf("loading programs of probe %s: %w", p.Name, err)
	}
	coll.Close()
	return lp, nil
}

func isDataSection(name string) bool {
	return len(name) > 0 && name[0] == '.'
}

func (lp *loadedProbe) close() {
	for _, mp := range lp.maps {
		mp.Close()
	}
}

func (m *Manager) closeMaps() {
	for _, lp := range m.probes {
		lp.close()
	}
}

// Attach instruments process pid through exePath (normally /proc/PID/exe,
// which reaches the binary across mount namespaces). Errors carry an
// inspect reason; each is counted in obsd_instrumentation_errors_total.
// Attach logs its own failures, once per binary for those that repeat for
// every process running it.
func (m *Manager) Attach(pid int, exePath string) (*inspect.Binary, error) {
	info, repeat, err := m.attach(pid, exePath)
	if err != nil {
		reason := inspect.ReasonOf(err)
		m.stats.attachError(reason)
		err = fmt.Errorf("instrumenting pid %d (%s): %w", pid, exePath, err)
		switch {
		case repeat:
			m.log.Debug("not instrumenting process", "pid", pid, "reason", reason, "err", err)
		case reason == ReasonExited:
			m.log.Info("process exited before it was instrumented", "pid", pid)
		case reason == inspect.ReasonNotGo:
			// Expected under a broad --exe glob; once per binary.
			m.log.Info("not instrumenting process", "pid", pid, "reason", reason, "err", err)
		default:
			m.log.Warn("not instrumenting process", "pid", pid, "reason", reason, "err", err)
		}
		return nil, err
	}
	return info, nil
}

func (m *Manager) attach(pid int, exePath string) (_ *inspect.Binary, repeat bool, _ error) {
	var st syscall.Stat_t
	if err := syscall.Stat(exePath, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, false, &inspect.Error{Reason: ReasonExited, Err: err}
		}
		return nil, false, &inspect.Error{Reason: inspect.ReasonUnreadable, Err: err}
	}
	key := binKey{dev: st.Dev, ino: st.Ino}

	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.procs[pid]; ok {
		return nil, false, fmt.Errorf("pid %d already attached", pid)
	}
	if err, ok := m.refused[key]; ok {
		return nil, true, err
	}
	bin := m.bins[key]
	if bin == nil {
		b, err := m.loadBinary(key, exePath)
		if err != nil {
			if inspect.ReasonOf(err) != ReasonExited {
				m.refused[key] = err
			}
			return nil, false, err
		}
		bin = b
		m.bins[key] = bin
	}

	proc := &process{pid: pid, bin: bin}
	ex, err := link.OpenExecutable(exePath)
	if err != nil {
		m.dropIfUnused(bin)
		return nil, false, &inspect.Error{Reason: ReasonExited, Err: err}
	}
	for i, lp := range m.probes {
		for j, site := range lp.Sites {
			prog := bin.programs[i].Programs[site.Program]
			l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{
				Addresses: []uint64{bin.sites[i][j]},
				PID:       uint32(pid),
			})
			if err != nil {
				proc.close()
				m.dropIfUnused(bin)
				reason := ReasonAttach
				if errors.Is(err, os.ErrNotExist) {
					reason = ReasonExited
				}
				return nil, false, &inspect.Error{Reason: reason, Err: fmt.Errorf("attaching %s at %s: %w", site.Program, site.Symbol, err)}
			}
			proc.links = append(proc.links, l)
		}
	}
	bin.refs++
	m.procs[pid] = proc
	return bin.info, false, nil
}

// loadBinary inspects an executable and loads every probe's programs with
// the binary's offsets. Called with m.mu held.
func (m *Manager) loadBinary(key binKey, exePath string) (*loadedBinary, error) {
	info, err := inspect.Open(exePath)
	if err != nil {
		return nil, err
	}
	bin := &loadedBinary{key: key, info: info, patterns: map[[2]uint64]string{}}
	ok := false
	defer func() {
		if !ok {
			bin.close()
			info.Close()
		}
	}()
	for _, lp := range m.probes {
		if version.Compare(info.GoVersion, lp.MinGo) < 0 {
			return nil, &inspect.Error{Reason: inspect.ReasonGoVersion,
				Err: fmt.Errorf("built with %s; probe %s needs %s or later", info.GoVersion, lp.Name, lp.MinGo)}
		}
		spec := lp.spec.Copy()
		set := func(name string, v any) error {
			if err := spec.Variables[name].Set(v); err != nil {
				return fmt.Errorf("setting %s of probe %s: %w", name, lp.Name, err)
			}
			return nil
		}
		var offs []uint64
		for _, s := range lp.Sites {
			off, err := info.EntrySite(s.Symbol)
			if err != nil {
				return nil, err
			}
			offs = append(offs, off)
			// An inlined copy (e.g. after PGO) runs without entering the
			// function: the probe would attach and see nothing. Its
			// arguments' locations are not in a stripped binary, so refuse.
			inl, err := info.Inlined([]string{s.Symbol})
			if err != nil {
				return nil, err
			}
			if len(inl) > 0 {
				return nil, &inspect.Error{Reason: inspect.ReasonInlined,
					Err: fmt.Errorf("probe %s cannot see every call: %v", lp.Name, inl)}
			}
			if s.VaddrConst != "" {
				va, err := info.Vaddr(off)
				if err != nil {
					return nil, &inspect.Error{Reason: inspect.ReasonSymbol, Err: err}
				}
				if err := set(s.VaddrConst, va); err != nil {
					return nil, err
				}
			}
		}
		if _, ok := spec.Variables[withSpans]; ok {
			if err := set(withSpans, m.spans); err != nil {
				return nil, err
			}
		}
		if _, ok := spec.Variables[sampleBoundConst]; ok {
			if err := set(sampleBoundConst, m.sample); err != nil {
				return nil, err
			}
		}
		if err := m.setMetricsConsts(bin, info, lp, set); err != nil {
			return nil, err
		}
		for _, it := range lp.ITabs {
			addr, err := info.ITab(it.Type, it.Interface, it.Methods)
			if err != nil {
				m.log.Debug("itab unknown; the probe reads memory instead", "exe", info.Path, "itab", it.Name, "err", err)
				continue
			}
			if err := set(it.Name, addr); err != nil {
				return nil, err
			}
		}
		for _, c := range lp.Consts {
			off, err := m.fieldOffset(info, c.Field)
			if err != nil {
				if c.Optional {
					continue
				}
				return nil, &inspect.Error{Reason: inspect.ReasonOffsets, Err: err}
			}
			if err := spec.Variables[c.Name].Set(off); err != nil {
				return nil, fmt.Errorf("setting %s of probe %s: %w", c.Name, lp.Name, err)
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: lp.maps})
		if err != nil {
			return nil, &inspect.Error{Reason: ReasonAttach, Err: fmt.Errorf("loading probe %s: %w", lp.Name, err)}
		}
		bin.sites = append(bin.sites, offs)
		bin.programs = append(bin.programs, coll)
	}
	ok = true
	// Keep the few facts callers need, not the parsed DWARF and symbols.
	info.Close()
	return bin, nil
}

// fieldOffset prefers the binary's own DWARF and falls back to the table
// generated from the released toolchains.
func (m *Manager) fieldOffset(info *inspect.Binary, f probe.Field) (uint64, error) {
	if info.DWARF {
		off, err := info.FieldOffset(f.Package, f.Struct, f.Field)
		if err == nil {
			return off, nil
		}
		if !errors.Is(err, inspect.ErrNoField) {
			return 0, err
		}
		// A struct that DWARF lacks (e.g. dead-code eliminated) but the
		// table knows is still safe to use: same toolchain, same layout.
	}
	ver := info.GoVersion
	if f.Module != "std" {
		ver = info.Modules[f.Module]
	}
	if off, ok := m.offsets.Get(offsets.Key(f), ver); ok {
		return off, nil
	}
	return 0, fmt.Errorf("no offset for %s.%s.%s at %s", f.Package, f.Struct, f.Field, ver)
}

// Detach releases pid's links. Unknown pids are ignored: a process that was
// refused is detached as well when it exits.
func (m *Manager) Detach(pid int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	proc, ok := m.procs[pid]
	if !ok {
		return nil
	}
	err := proc.close()
	if rerr := m.retire(proc); rerr != nil {
		err = errors.Join(err, fmt.Errorf("keeping final counts of pid %d: %w", pid, rerr))
	}
	delete(m.procs, pid)
	m.releaseBinary(proc.bin)
	m.forgetPID(uint32(pid))
	return err
}

func (m *Manager) releaseBinary(bin *loadedBinary) {
	bin.refs--
	m.dropIfUnused(bin)
}

func (m *Manager) dropIfUnused(bin *loadedBinary) {
	if bin.refs <= 0 {
		delete(m.bins, bin.key)
		bin.close()
	}
}

func (p *process) close() error {
	var errs []error
	for _, l := range p.links {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	p.links = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing links of pid %d: %w", p.pid, err)
	}
	return nil
}

func (b *loadedBinary) close() {
	for _, c := range b.programs {
		c.Close()
	}
	b.programs = nil
	if b.static != nil {
		b.static.Close()
		b.static = nil
	}
}

// Processes returns the number of attached processes.
func (m *Manager) Processes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.procs)
}

// Close detaches everything and frees all BPF objects.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for pid, proc := range m.procs {
		errs = append(errs, proc.close())
		delete(m.procs, pid)
	}
	for k, b := range m.bins {
		b.close()
		delete(m.bins, k)
	}
	m.closeMaps()
	return errors.Join(errs...)
}
