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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	// Set where a probe decides trace context (bpf/include/tracectx.h).
	parentBasedConst = "parent_based"
	keepSlowConst    = "keep_slow_ns"
	keepErrorsConst  = "keep_errors"
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

// ErrClosed is returned by Attach once Close was called: obsd is stopping.
var ErrClosed = errors.New("not instrumenting: obsd is stopping")

// ErrNotAttached is Enable's error for a process not (or no longer)
// instrumented.
var ErrNotAttached = errors.New("process not instrumented")

// Sink receives every decoded event, of each probe's own type. It is called
// from one goroutine per probe and must not block for long: the ring buffer
// fills meanwhile.
type Sink interface {
	Event(probe.Event)
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
	// ParentBased says a span whose request carries a trace context follows
	// its parent's sampled flag (the parentbased_* samplers); otherwise the
	// ratio applies to the incoming trace ID as to a new one.
	ParentBased bool
	// KeepSlow, if positive, exports a span head sampling dropped whose
	// call took at least this long; KeepErrors one whose call failed.
	KeepSlow   time.Duration
	KeepErrors bool
	// DurationBuckets are the upper bounds, in seconds, of the exported
	// duration histogram; in-kernel histograms use the same. When it is
	// empty, probes send a record per request.
	DurationBuckets []float64
	// TCPMaps, when set (--propagate=tcp active), are internal/tcpctx's
	// maps by name (probe.TCPMaps): probes that carry trace context over
	// TCP share them with its sock_ops program, and do so when Spans is
	// set too. Nil: those probes' copies are one-entry placeholders and
	// their When-TCP sites are not attached.
	TCPMaps map[string]*ebpf.Map
	// TCPNoOption says the TCP option is off (--propagate=headers alone);
	// TCPHeaders, that the header injector runs (probe.TCPHeadersConst).
	// The stream sites (probe.TCPStreamsWhen) are attached when either
	// carries what they write.
	TCPNoOption, TCPHeaders bool
}

// Manager attaches probes to processes. Methods are safe for concurrent use.
type Manager struct {
	spans  bool
	sample uint64 // the sample_bound constant: SampleRatio * 2^63
	// parentBased, keepSlow and keepErrors are the other sampling
	// constants (see Options).
	parentBased, keepErrors bool
	keepSlow                time.Duration
	// tcp is TCPPropagateConst: TCPMaps given and spans on; tcpHeaders,
	// TCPHeadersConst: tcp and the injector on; tcpStreams,
	// TCPStreamsWhen: tcp and the option or the injector on.
	tcp, tcpHeaders, tcpStreams bool
	bounds                      []uint64 // DurationBuckets in ns
	log                         *slog.Logger
	offsets                     *offsets.Table
	sink                        Sink
	probes                      []*loadedProbe
	// shared holds the maps all probes share (probe.SharedMapPrefix).
	shared map[string]*ebpf.Map
	stats  *stats
	// open inspects an executable: inspect.Open, replaced by tests to
	// hold a load in progress or make it fail.
	open func(path string) (*inspect.Binary, error)

	// mu guards the maps below. It is never held while a binary is parsed
	// or its programs verified (loadBinary), so scrapes, detaches and other
	// attaches go on meanwhile.
	mu    sync.Mutex
	procs map[int]*process
	bins  map[binKey]*loadedBinary
	// loading holds the loads in progress, one per binary: a second process
	// of the same binary waits for the first load instead of repeating it.
	loading map[binKey]*binaryLoad
	// refused remembers binaries refused for a permanent reason.
	refused *refusals
	// transient holds the pids whose transient failure was logged.
	transient map[int]bool
	closed    bool
}

// binaryLoad is one load of a binary in progress; done is closed when err
// is set or the binary is in Manager.bins.
type binaryLoad struct {
	done chan struct{}
	err  error
}

// loadedProbe holds what a probe shares across all targets: its maps.
type loadedProbe struct {
	*probe.Probe
	spec *ebpf.CollectionSpec
	maps map[string]*ebpf.Map
	// Counted by the probe's reader, read at scrape time.
	events, decodeErrs atomic.Uint64
}

// binKey identifies an executable's contents: the file (device, inode) as
// it was last changed (ctime, size). A new build written over the old one
// in place keeps the inode, and a process of it may start before obsd sees
// the old one exit: keyed by inode alone, it would get the old file's
// sites, breakpoints in the middle of its instructions. ctime changes with
// every write and cannot be set back by the writer.
type binKey struct {
	dev, ino uint64
	ctime    syscall.Timespec
	size     int64
}

// loadedBinary is one executable's programs, loaded with its offsets, shared by all
// processes running it.
type loadedBinary struct {
	key      binKey
	info     *inspect.Binary
	refs     int
	sites    [][][]uint64 // per probe, per site: file offsets (one for an entry, each RET for a Returns site)
	programs []*ebpf.Collection
	// errs holds, per probe, why it did not load for this binary (nil
	// where it did), for Enable's errors.
	errs []error
	// static reads patterns that probes report by address; nil when the
	// binary has no .rodata or in-kernel metrics are off.
	static *inspect.Static
	// patterns caches what static resolved, by address and length.
	patterns map[[2]uint64]string
}

type process struct {
	pid   int
	bin   *loadedBinary
	exe   string // the path it was attached through, for Enable
	links []link.Link
	// enabled marks the OnDemand probes attached to it, by probe index.
	enabled map[int]bool
	// detaching is set while Detach closes the links without m.mu.
	detaching bool
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
		spans:     o.Spans,
		log:       o.Logger,
		offsets:   o.Offsets,
		sink:      o.Sink,
		open:      inspect.Open,
		procs:     map[int]*process{},
		bins:      map[binKey]*loadedBinary{},
		loading:   map[binKey]*binaryLoad{},
		refused:   newRefusals(),
		transient: map[int]bool{},
		shared:    map[string]*ebpf.Map{},
	}
	m.sample = sampleBound(o.SampleRatio)
	m.parentBased, m.keepSlow, m.keepErrors = o.ParentBased, max(o.KeepSlow, 0), o.KeepErrors
	for _, b := range o.DurationBuckets {
		m.bounds = append(m.bounds, uint64(math.Round(b*1e9)))
	}
	m.tcp = o.Spans && o.TCPMaps != nil
	m.tcpHeaders = m.tcp && o.TCPHeaders
	m.tcpStreams = m.tcp && (!o.TCPNoOption || o.TCPHeaders)
	for _, p := range o.Probes {
		lp, err := loadProbe(p, m.shared, o.TCPMaps)
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

// loadProbe creates p's maps, except those named with probe.SharedMapPrefix,
// which come from shared (created there by the first probe that has one),
// and probe.TCPMaps, clones of tcp's when given, and verifies its programs.
func loadProbe(p *probe.Probe, shared, tcp map[string]*ebpf.Map) (*loadedProbe, error) {
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
	for _, fc := range p.Funcs {
		names = append(names, fc.Name)
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
		if strings.HasPrefix(name, probe.SharedMapPrefix) {
			mp, ok := shared[name]
			if !ok {
				var err error
				if mp, err = ebpf.NewMap(ms); err != nil {
					lp.close()
					return nil, fmt.Errorf("creating shared map %s of probe %s: %w", name, p.Name, err)
				}
				shared[name] = mp
			} else if err := ms.Compatible(mp); err != nil {
				lp.close()
				return nil, fmt.Errorf("probe %s: shared map %s: %w", p.Name, name, err)
			}
			lp.maps[name] = mp
			continue
		}
		var mp *ebpf.Map
		var err error
		switch {
		case slices.Contains(probe.TCPMaps, name) && tcp != nil:
			// A clone is the probe's own descriptor of tcpctx's map,
			// closed with the probe's maps.
			if mp, err = tcp[name].Clone(); err == nil {
				err = ms.Compatible(mp)
			}
		case slices.Contains(probe.TCPMaps, name):
			// Unused without --propagate=tcp (tcp_propagate stays 0);
			// the spec says so too, or the map would not replace its own.
			ms.MaxEntries = 1
			mp, err = ebpf.NewMap(ms)
		default:
			mp, err = ebpf.NewMap(ms)
		}
		if err != nil {
			if mp != nil {
				mp.Close()
			}
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

// close closes the probe's own maps; the manager closes the shared ones.
func (lp *loadedProbe) close() {
	for name, mp := range lp.maps {
		if !strings.HasPrefix(name, probe.SharedMapPrefix) {
			mp.Close()
		}
	}
}

func (m *Manager) closeMaps() {
	for _, lp := range m.probes {
		lp.close()
	}
	for _, mp := range m.shared {
		mp.Close()
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
		case errors.Is(err, ErrClosed):
			m.log.Debug("not instrumenting process: obsd is stopping", "pid", pid)
		case repeat:
			m.log.Debug("not instrumenting process", "pid", pid, "reason", reason, "err", err)
		case reason == ReasonExited:
			m.log.Info("process exited before it was instrumented", "pid", pid)
		case reason == inspect.ReasonNotGo:
			// Expected under a broad --exe glob; once per binary.
			m.log.Info("not instrumenting process: not a Go program", "pid", pid, "reason", reason, "err", err)
		case Permanent(err):
			m.log.Warn("not instrumenting process; its binary cannot be instrumented by this obsd", "pid", pid, "reason", reason, "err", err)
		case m.warnTransient(pid):
			m.log.Warn("could not instrument process yet; retrying with backoff (later failures of this process are logged at debug level and counted in obsd_instrumentation_errors_total)",
				"pid", pid, "reason", reason, "err", err)
		default:
			m.log.Debug("could not instrument process yet; retrying", "pid", pid, "reason", reason, "err", err)
		}
		return nil, err
	}
	m.mu.Lock()
	delete(m.transient, pid)
	m.mu.Unlock()
	return info, nil
}

// warnTransient reports whether pid's transient failure is the first since
// it was last attached or detached, so the warning is logged once.
func (m *Manager) warnTransient(pid int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.transient[pid] {
		return false
	}
	if len(m.transient) >= maxRefused {
		clear(m.transient) // bounded: at worst a warning is repeated
	}
	m.transient[pid] = true
	return true
}

func (m *Manager) attach(pid int, exePath string) (_ *inspect.Binary, repeat bool, _ error) {
	var st syscall.Stat_t
	if err := syscall.Stat(exePath, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, false, &inspect.Error{Reason: ReasonExited, Err: err}
		}
		return nil, false, &inspect.Error{Reason: inspect.ReasonUnreadable, Err: err}
	}
	key := binKey{dev: st.Dev, ino: st.Ino, ctime: st.Ctim, size: st.Size}

	m.mu.Lock()
	defer m.mu.Unlock()
	var bin *loadedBinary
	for bin == nil {
		if m.closed {
			return nil, false, ErrClosed
		}
		if _, ok := m.procs[pid]; ok {
			return nil, false, fmt.Errorf("pid %d already attached", pid)
		}
		if err, ok := m.refused.lookup(key, pid); ok {
			return nil, true, err
		}
		if bin = m.bins[key]; bin != nil {
			break
		}
		if l := m.loading[key]; l != nil {
			// Another process of this binary is loading it: wait, then
			// look again (it may have failed, or exited meanwhile).
			m.mu.Unlock()
			<-l.done
			m.mu.Lock()
			if l.err != nil && !Permanent(l.err) {
				return nil, true, l.err
			}
			continue
		}
		l := &binaryLoad{done: make(chan struct{})}
		m.loading[key] = l
		m.mu.Unlock()
		b, err := m.loadBinary(key, exePath)
		m.mu.Lock()
		delete(m.loading, key)
		switch {
		case err == nil && m.closed:
			b.close()
			err = ErrClosed
		case err == nil:
			m.bins[key] = b
			bin = b
		case Permanent(err):
			m.refused.add(key, pid, err)
		}
		l.err = err
		close(l.done)
		if err != nil {
			return nil, false, err
		}
	}

	proc := &process{pid: pid, bin: bin, exe: exePath}
	ex, err := link.OpenExecutable(exePath)
	if err != nil {
		m.dropIfUnused(bin)
		return nil, false, &inspect.Error{Reason: ReasonExited, Err: err}
	}
	for i, lp := range m.probes {
		if bin.programs[i] == nil || lp.OnDemand {
			continue // refused for this binary, its side not linked, or not asked for yet
		}
		if err := m.attachProbe(ex, proc, i); err != nil {
			proc.close()
			m.dropIfUnused(bin)
			return nil, false, err
		}
	}
	bin.refs++
	m.procs[pid] = proc
	return bin.info, false, nil
}

// fed says the probe named name loaded for bin (it must come earlier in
// the probe list than the probes that feed it).
func (m *Manager) fed(bin *loadedBinary, name string) bool {
	for i, lp := range m.probes[:len(bin.programs)] {
		if lp.Name == name {
			return bin.programs[i] != nil
		}
	}
	return false
}

// attachProbe links probe i's programs to proc at their sites in its
// binary, appending the links to proc's. Called with m.mu held.
func (m *Manager) attachProbe(ex *link.Executable, proc *process, i int) error {
	lp, bin := m.probes[i], proc.bin
	for j, site := range lp.Sites {
		if len(bin.sites[i][j]) == 0 {
			continue // an optional site the binary lacks
		}
		prog := bin.programs[i].Programs[site.Program]
		l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{
			Addresses: bin.sites[i][j],
			PID:       uint32(proc.pid),
		})
		if err != nil {
			reason := ReasonAttach
			if errors.Is(err, os.ErrNotExist) {
				reason = ReasonExited
			}
			return &inspect.Error{Reason: reason, Err: fmt.Errorf("attaching %s at %s: %w", site.Program, site.Symbol, err)}
		}
		proc.links = append(proc.links, l)
	}
	return nil
}

// Enable attaches the OnDemand probe named probeName to the attached
// process pid; enabling it again does nothing. Errors: pid not attached
// (ErrNotAttached), no such OnDemand probe, the probe refused for the
// process's binary (its error), or the attach itself failed.
func (m *Manager) Enable(pid int, probeName string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	proc := m.procs[pid]
	if proc == nil || proc.detaching {
		return fmt.Errorf("enabling %s for pid %d: %w", probeName, pid, ErrNotAttached)
	}
	i := slices.IndexFunc(m.probes, func(lp *loadedProbe) bool { return lp.Name == probeName && lp.OnDemand })
	if i < 0 {
		return fmt.Errorf("enabling %s for pid %d: no such on-demand probe", probeName, pid)
	}
	if proc.enabled[i] {
		return nil
	}
	if proc.bin.programs[i] == nil {
		return fmt.Errorf("enabling %s for pid %d: %w", probeName, pid, proc.bin.errs[i])
	}
	ex, err := link.OpenExecutable(proc.exe)
	if err != nil {
		return &inspect.Error{Reason: ReasonExited, Err: fmt.Errorf("enabling %s for pid %d: %w", probeName, pid, err)}
	}
	if err := m.attachProbe(ex, proc, i); err != nil {
		return fmt.Errorf("enabling %s for pid %d: %w", probeName, pid, err)
	}
	if proc.enabled == nil {
		proc.enabled = map[int]bool{}
	}
	proc.enabled[i] = true
	if name := m.probes[i].EnabledFlag; name != "" {
		mp := m.shared[name]
		if mp == nil {
			return fmt.Errorf("enabling %s: no shared map %s", probeName, name)
		}
		if err := mp.Put(uint32(0), uint32(1)); err != nil {
			return fmt.Errorf("enabling %s: setting %s: %w", probeName, name, err)
		}
	}
	return nil
}

// loadBinary inspects an executable and loads every probe's programs with
// the binary's offsets. Called without m.mu: it reads only what New set.
func (m *Manager) loadBinary(key binKey, exePath string) (*loadedBinary, error) {
	info, err := m.open(exePath)
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
	// Probes load independently: a binary that links only a server (or
	// only a client) gets the probes it can, and is refused only when none
	// loads.
	errs := make([]error, len(m.probes)) // by probe; nil where it loaded
	loaded := 0
	for i, lp := range m.probes {
		var offs [][]uint64
		var coll *ebpf.Collection
		var err error
		if lp.Feeds != "" && !m.fed(bin, lp.Feeds) {
			// Nothing would take what it hands over: as if not linked.
			err = &notLinkedError{fmt.Errorf("probe %s feeds %s, which is not loaded for this binary", lp.Name, lp.Feeds)}
		} else {
			offs, coll, err = m.loadProbeFor(bin, info, lp)
		}
		if err != nil {
			errs[i] = err
			offs, coll = nil, nil
		} else {
			loaded++
		}
		bin.sites = append(bin.sites, offs)
		bin.programs = append(bin.programs, coll)
		bin.errs = append(bin.errs, err)
	}
	if loaded == 0 {
		return nil, binaryRefusal(errs)
	}
	// The binary is instrumented, but not wholly: say which probes are
	// missing and why, one line and one count per reason (this runs once
	// per binary; a gRPC server and client refused for one unlisted
	// grpc-go version are one fault of the binary).
	byReason := map[string][]string{}
	var reasons []string
	first := map[string]error{}
	for i, err := range errs {
		if err == nil || notLinked(err) {
			continue
		}
		r := inspect.ReasonOf(err)
		if _, ok := first[r]; !ok {
			first[r] = err
			reasons = append(reasons, r)
		}
		byReason[r] = append(byReason[r], m.probes[i].Name)
	}
	for _, r := range reasons {
		m.log.Warn("probes refused for this executable; its other probes are attached",
			"exe", info.Path, "probes", byReason[r], "reason", r, "err", first[r])
		m.stats.attachError(r)
	}
	ok = true
	// Keep the few facts callers need, not the parsed DWARF and symbols.
	info.Close()
	return bin, nil
}

// loadProbeFor loads one probe's programs for a binary, with the binary's
// offsets, and returns the file offsets of each of its sites (none for an
// optional site the binary lacks; every RET of a Returns site).
func (m *Manager) loadProbeFor(bin *loadedBinary, info *inspect.Binary, lp *loadedProbe) ([][]uint64, *ebpf.Collection, error) {
	if version.Compare(info.GoVersion, lp.MinGo) < 0 {
		return nil, nil, &inspect.Error{Reason: inspect.ReasonGoVersion,
			Err: fmt.Errorf("built with %s; probe %s needs %s or later", info.GoVersion, lp.Name, lp.MinGo)}
	}
	spec := lp.spec.Copy()
	set := func(name string, v any) error {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("setting %s of probe %s: %w", name, lp.Name, err)
		}
		return nil
	}
	var offs [][]uint64
	oneOf := map[string]bool{} // group -> one of its sites is present
	for i, s := range lp.Sites {
		if s.When != "" && !m.boolConst(s.When) {
			offs = append(offs, nil) // a feature that is off: not attached
			continue
		}
		if s.Returns || s.Calls != "" {
			var rets []uint64
			var err error
			if s.Returns {
				rets, err = info.ReturnSites(s.Symbol)
			} else {
				rets, err = info.CallSites(s.Symbol, s.Calls)
			}
			if err != nil && i == 0 && inspect.ReasonOf(err) == inspect.ReasonSymbol {
				return nil, nil, &notLinkedError{err}
			}
			if err != nil && s.Optional && inspect.ReasonOf(err) == inspect.ReasonSymbol {
				offs = append(offs, nil)
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			offs = append(offs, rets)
			continue
		}
		off, err := info.EntrySite(s.Symbol)
		if inspect.ReasonOf(err) == inspect.ReasonSymbol && !s.InlinedOK {
			// No out-of-line copy may still mean calls: a PGO build can
			// inline a function everywhere (Go 1.25 does so with
			// (*conn).close). That is a refusal for inlining, not a
			// missing symbol, and an optional site is no exception.
			if inl, ierr := info.Inlined([]string{s.Symbol}); ierr == nil && len(inl) > 0 {
				return nil, nil, &inspect.Error{Reason: inspect.ReasonInlined,
					Err: fmt.Errorf("probe %s cannot see every call, %s has no out-of-line copy: %v", lp.Name, s.Symbol, inl)}
			}
		}
		if s.OneOf != "" {
			oneOf[s.OneOf] = oneOf[s.OneOf] || err == nil
		}
		if err != nil && s.Optional && inspect.ReasonOf(err) == inspect.ReasonSymbol {
			offs = append(offs, nil) // not in this binary: nothing can call it
			continue
		}
		if err != nil && i == 0 && inspect.ReasonOf(err) == inspect.ReasonSymbol {
			return nil, nil, &notLinkedError{err}
		}
		if err != nil {
			return nil, nil, err
		}
		offs = append(offs, []uint64{off})
		// An inlined copy (e.g. after PGO) runs without entering the
		// function: the probe would attach and see nothing. Its
		// arguments' locations are not in a stripped binary, so refuse.
		inl, err := info.Inlined([]string{s.Symbol})
		if err != nil {
			return nil, nil, err
		}
		if len(inl) > 0 && !s.InlinedOK {
			return nil, nil, &inspect.Error{Reason: inspect.ReasonInlined,
				Err: fmt.Errorf("probe %s cannot see every call: %v", lp.Name, inl)}
		}
		if s.VaddrConst != "" {
			va, err := info.Vaddr(off)
			if err != nil {
				return nil, nil, &inspect.Error{Reason: inspect.ReasonSymbol, Err: err}
			}
			if err := set(s.VaddrConst, va); err != nil {
				return nil, nil, err
			}
		}
	}
	for group, present := range oneOf {
		if !present {
			return nil, nil, &inspect.Error{Reason: inspect.ReasonSymbol,
				Err: fmt.Errorf("probe %s: none of its %q sites is in the binary", lp.Name, group)}
		}
	}
	if _, ok := spec.Variables[withSpans]; ok {
		if err := set(withSpans, m.spans); err != nil {
			return nil, nil, err
		}
	}
	for name, v := range map[string]any{
		sampleBoundConst:        m.sample,
		parentBasedConst:        m.parentBased,
		keepSlowConst:           uint64(m.keepSlow.Nanoseconds()),
		keepErrorsConst:         m.keepErrors,
		probe.TCPPropagateConst: m.tcp,
		probe.TCPHeadersConst:   m.tcpHeaders,
	} {
		if _, ok := spec.Variables[name]; ok {
			if err := set(name, v); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := m.setMetricsConsts(bin, info, lp, set); err != nil {
		return nil, nil, err
	}
	for _, it := range lp.ITabs {
		addr, err := info.ITab(it.Type, it.Interface, it.Methods)
		if err != nil {
			m.log.Debug("itab unknown; the probe reads memory instead", "exe", info.Path, "itab", it.Name, "err", err)
			continue
		}
		if err := set(it.Name, addr); err != nil {
			return nil, nil, err
		}
	}
	for _, fc := range lp.Funcs {
		fn, err := info.Func(fc.Symbol)
		if err != nil && fc.Optional {
			m.log.Debug("function not in the binary; its constant stays 0", "exe", info.Path, "const", fc.Name, "err", err)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if err := set(fc.Name, fn.Addr); err != nil {
			return nil, nil, err
		}
	}
	for _, c := range lp.Consts {
		off, err := m.fieldOffset(info, c.Field)
		if err != nil {
			if c.Optional && (inspect.ReasonOf(err) != inspect.ReasonVersion || c.Secondary) {
				continue
			}
			if inspect.ReasonOf(err) == inspect.ReasonOther {
				err = &inspect.Error{Reason: inspect.ReasonOffsets, Err: err}
			}
			return nil, nil, err
		}
		if err := spec.Variables[c.Name].Set(off); err != nil {
			return nil, nil, fmt.Errorf("setting %s of probe %s: %w", c.Name, lp.Name, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: lp.maps})
	if err != nil {
		return nil, nil, &inspect.Error{Reason: ReasonAttach, Err: fmt.Errorf("loading probe %s: %w", lp.Name, err)}
	}
	return offs, coll, nil
}

// boolConst is the value the loader gives the bool constant name, for a
// Site's When.
func (m *Manager) boolConst(name string) bool {
	switch name {
	case probe.TCPPropagateConst:
		return m.tcp
	case probe.TCPStreamsWhen:
		return m.tcpStreams
	}
	return false
}

// notLinked says err is a probe's first site missing from the binary: the
// program does not use that side of that package (a client-only program has
// no HTTP server), which is no fault.
func notLinked(err error) bool {
	var ne *notLinkedError
	return errors.As(err, &ne)
}

// notLinkedError marks a probe whose first site the binary lacks.
type notLinkedError struct{ err error }

func (e *notLinkedError) Error() string { return e.err.Error() }
func (e *notLinkedError) Unwrap() error { return e.err }

// binaryRefusal is the error of a binary no probe loaded for: the first error
// that is a fault, else the first probe's (symbol_missing: the binary has
// nothing obsd instruments).
func binaryRefusal(errs []error) error {
	for _, err := range errs {
		if err != nil && !notLinked(err) {
			return err
		}
	}
	return errs[0]
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
		// A module release the table does not list is refused as such,
		// naming it, rather than probed with another release's offsets.
		// (With DWARF, a field it lacks is simply absent in that release.)
		if !info.DWARF && !m.offsets.Known(f.Module, ver) {
			shown := ver
			if shown == "" {
				shown = "(no version: a local replacement)"
			}
			return 0, &inspect.Error{Reason: inspect.ReasonVersion,
				Err: fmt.Errorf("%s %s is not in the offsets table, and the binary has no DWARF to read %s.%s.%s from", f.Module, shown, f.Package, f.Struct, f.Field)}
		}
	}
	if off, ok := m.offsets.Get(offsets.Key(f), ver); ok {
		return off, nil
	}
	return 0, fmt.Errorf("no offset for %s.%s.%s at %s", f.Package, f.Struct, f.Field, ver)
}

// Detach releases pid's links and returns the process's final in-kernel
// series, deleted from the shared maps: the caller keeps them for the last
// scrapes, under the identity of the process image that counted them (the
// kernel keys them by pid alone, which a re-exec or a reused pid shares).
// Unknown pids are ignored: a process that was refused is detached as well
// when it exits, which releases its refusal.
func (m *Manager) Detach(pid int) ([]probe.Histogram, error) {
	m.mu.Lock()
	m.refused.release(pid)
	delete(m.transient, pid)
	proc, ok := m.procs[pid]
	if !ok || proc.detaching {
		m.mu.Unlock()
		return nil, nil
	}
	// Closing links waits for kernel grace periods: do it without the
	// lock, so scrapes and other detaches go on. The process stays in
	// m.procs meanwhile, so its series are still read as live.
	proc.detaching = true
	closing := &process{pid: pid, links: proc.links}
	proc.links = nil
	m.mu.Unlock()
	err := closing.close()

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, err // Close freed the maps and the binary
	}
	// No probe of the process runs any more: its series are final.
	final, rerr := m.retire(proc)
	if rerr != nil {
		err = errors.Join(err, fmt.Errorf("keeping final counts of pid %d: %w", pid, rerr))
	}
	delete(m.procs, pid)
	m.releaseBinary(proc.bin)
	m.forgetPID(uint32(pid))
	return final, err
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

// closeConcurrency is how many processes' links closeAll closes at once:
// each close blocks an OS thread in the kernel for its grace periods
// (about 0.5 s per link on Linux 6.18.44 in a VM, 40 ms on earlier 6.18
// builds), so a node's worth of processes is closed in a round or two.
const closeConcurrency = 256

// closeAll closes the links of every process, several at a time: closing
// a uprobe link waits for the kernel's grace periods (see closeConcurrency),
// which concurrent closes share instead of queueing one after another.
func closeAll(procs map[int]*process) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, closeConcurrency)
	for _, proc := range procs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			err := proc.close()
			<-sem
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}

func (b *loadedBinary) close() {
	for _, c := range b.programs {
		if c != nil {
			c.Close()
		}
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
	m.closed = true
	errs := closeAll(m.procs)
	clear(m.procs)
	for k, b := range m.bins {
		b.close()
		delete(m.bins, k)
	}
	m.closeMaps()
	return errors.Join(errs...)
}
