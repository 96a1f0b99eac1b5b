package uprobes

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/inspect"
)

// kernelMetrics says probes count requests in the kernel where they can:
// those not sampled for a span (a sampled one is a record, observed in user
// space with its exemplar), given buckets to count in.
func (m *Manager) kernelMetrics() bool { return len(m.bounds) > 0 }

// checkBounds fails New when a probe's in-kernel histogram cannot use the
// exporter's buckets.
func (m *Manager) checkBounds(lp *loadedProbe) error {
	mm := lp.Metrics
	if mm.Map == "" || !m.kernelMetrics() {
		return nil
	}
	v, ok := lp.spec.Variables[mm.BoundsConst]
	if !ok {
		return fmt.Errorf("probe %s: constant %q not in BPF object", lp.Name, mm.BoundsConst)
	}
	if int(v.Size()) != 8*len(m.bounds) {
		return fmt.Errorf("probe %s counts %d duration buckets in the kernel, the exporter has %d",
			lp.Name, v.Size()/8, len(m.bounds))
	}
	return nil
}

// setMetricsConsts turns on a probe's in-kernel metrics for one binary. A
// binary whose .rodata cannot be read keeps them off and sends records,
// which lose nothing.
func (m *Manager) setMetricsConsts(bin *loadedBinary, info *inspect.Binary, lp *loadedProbe, set func(string, any) error) error {
	mm := lp.Metrics
	if mm.Map == "" || !m.kernelMetrics() {
		return nil
	}
	if mm.RodataStartConst == "" {
		// Counted by hashes of strings, not by addresses in .rodata.
		return set(mm.BoundsConst, m.bounds)
	}
	if bin.static == nil {
		st, err := info.OpenStatic()
		if err != nil {
			m.log.Debug("in-kernel metrics off for binary", "exe", info.Path, "err", err)
			return nil
		}
		bin.static = st
	}
	if err := set(mm.BoundsConst, m.bounds); err != nil {
		return err
	}
	if err := set(mm.RodataStartConst, bin.static.Start); err != nil {
		return err
	}
	return set(mm.RodataEndConst, bin.static.End)
}

// Histograms returns the series the probes of kind counted in the kernel
// for the processes attached now, with their names resolved. Detach hands
// over the final series of a process. It runs at scrape time, once per
// signal: it reads only the maps of that signal's probes.
func (m *Manager) Histograms(kind probe.Kind) ([]probe.Histogram, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []probe.Histogram
	var errs []error
	for _, lp := range m.probes {
		if lp.Metrics.Kind != kind {
			continue
		}
		hs, _, err := m.readMetrics(lp, func(pid uint32) bool { return m.procs[int(pid)] != nil })
		out = append(out, hs...)
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// retire reads a detaching process's in-kernel series and deletes them
// from the maps. Called with m.mu held, after its links are closed (so no
// request adds to them meanwhile) and before the binary is released:
// resolving patterns needs it.
func (m *Manager) retire(proc *process) ([]probe.Histogram, error) {
	var errs []error
	var out []probe.Histogram
	for _, lp := range m.probes {
		hs, keys, err := m.readMetrics(lp, func(pid uint32) bool { return pid == uint32(proc.pid) })
		errs = append(errs, err)
		out = append(out, hs...)
		for _, k := range keys {
			_ = lp.maps[lp.Metrics.Map].Delete(k) // already gone is fine
		}
	}
	return out, errors.Join(errs...)
}

// readMetrics decodes the entries of a probe's metrics map whose process
// keep selects, and returns their keys too. Called with m.mu held.
func (m *Manager) readMetrics(lp *loadedProbe, keep func(pid uint32) bool) ([]probe.Histogram, [][]byte, error) {
	mm := lp.Metrics
	mp := lp.maps[mm.Map]
	if mm.Map == "" || mp == nil {
		return nil, nil, nil
	}
	var out []probe.Histogram
	var keys [][]byte
	var errs []error
	key := make([]byte, mp.KeySize())
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s of probe %s: %w", mm.Map, lp.Name, err)
	}
	vals := make([][]byte, ncpu)
	it := mp.Iterate()
	for it.Next(&key, vals) {
		if len(key) < 4 || !keep(binary.NativeEndian.Uint32(key)) {
			continue
		}
		h, err := mm.Decode(key, vals)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.resolve(lp, &h); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, h)
		keys = append(keys, append([]byte(nil), key...))
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("reading %s of probe %s: %w", mm.Map, lp.Name, err))
	}
	return out, keys, errors.Join(errs...)
}

// resolve reads h's pattern from its process's executable, once per
// binary, address and length; or a router's route from the probe's map of
// route names. Called with m.mu held.
func (m *Manager) resolve(lp *loadedProbe, h *probe.Histogram) error {
	if h.NameHashed {
		return resolveName(lp, h)
	}
	if h.PatternLen == 0 {
		return nil
	}
	proc := m.procs[int(h.PID)]
	if proc == nil || proc.bin.static == nil {
		return fmt.Errorf("pattern at %#x of pid %d: process not attached", h.PatternAddr, h.PID)
	}
	k := [2]uint64{h.PatternAddr, uint64(h.PatternLen)}
	s, ok := proc.bin.patterns[k]
	if !ok {
		var err error
		if s, err = proc.bin.static.String(h.PatternAddr, h.PatternLen); err != nil {
			return fmt.Errorf("pattern of pid %d: %w", h.PID, err)
		}
		proc.bin.patterns[k] = s
	}
	h.Pattern = s
	return nil
}

// resolveName reads h's strings, which its key holds by hash, from the
// probe's names map, where the probe put them before the series' first
// count.
func resolveName(lp *loadedProbe, h *probe.Histogram) error {
	mp := lp.maps[lp.Metrics.Names]
	if mp == nil || lp.Metrics.Name == nil {
		return fmt.Errorf("probe %s: a series counted by hash, and no map of names", lp.Name)
	}
	key := make([]byte, 16) // tgid, padding, hash
	binary.NativeEndian.PutUint32(key, h.PID)
	binary.NativeEndian.PutUint64(key[8:], h.NameHash)
	var val []byte
	if err := mp.Lookup(key, &val); err != nil {
		return fmt.Errorf("probe %s: name %#x of pid %d: %w", lp.Name, h.NameHash, h.PID, err)
	}
	if err := lp.Metrics.Name(h, val); err != nil {
		return fmt.Errorf("probe %s: name of pid %d: %w", lp.Name, h.PID, err)
	}
	return nil
}
