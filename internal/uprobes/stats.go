package uprobes

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/obsd-dev/obsd/bpf/probe"
)

type stats struct {
	m *Manager

	mu           sync.Mutex
	attachErrs   map[string]uint64
	loggedDecode atomic.Bool
	// loggedCounters holds the probe/reason pairs of BPF counters already
	// logged: each is logged the first time it is seen non-zero.
	loggedCounters map[string]bool

	processes, attachErrors, events, lost, anomalies *prometheus.Desc
}

func newStats(m *Manager) *stats {
	s := &stats{
		m:              m,
		attachErrs:     map[string]uint64{},
		loggedCounters: map[string]bool{},
		processes: prometheus.NewDesc("obsd_instrumented_processes",
			"Processes with probes attached now.", nil, nil),
		attachErrors: prometheus.NewDesc("obsd_instrumentation_errors_total",
			"Processes obsd selected but did not instrument, by reason.", []string{"reason"}, nil),
		events: prometheus.NewDesc("obsd_events_total",
			"Records read from a probe's ring buffer.", []string{"probe"}, nil),
		lost: prometheus.NewDesc("obsd_events_lost_total",
			"Requests observed but not reported, by probe and reason.", []string{"probe", "reason"}, nil),
		anomalies: prometheus.NewDesc("obsd_probe_anomalies_total",
			"Requests reported incompletely or state repaired in the probe, by probe and reason.", []string{"probe", "reason"}, nil),
	}
	return s
}

func (s *stats) attachError(reason string) {
	s.mu.Lock()
	s.attachErrs[reason]++
	s.mu.Unlock()
}

func (s *stats) decodeError(lp *loadedProbe, err error) {
	lp.decodeErrs.Add(1)
	if !s.loggedDecode.Swap(true) {
		s.m.log.Warn("dropping undecodable record (logged once; see obsd_events_lost_total{reason=\"decode\"})", "probe", lp.Name, "err", err)
	}
}

// CounterCheckInterval is how often the probes' BPF counters are checked
// for a loss or anomaly to log, whether or not anyone scrapes.
const CounterCheckInterval = 10 * time.Second

// logCounters (called from Run's goroutine only) logs, once per probe and
// reason, a BPF counter that has become non-zero: a loss as a warning, an
// anomaly as information. The metrics carry the running counts.
func (s *stats) logCounters() {
	for _, lp := range s.m.probes {
		counts, err := readCounters(lp.maps["obsd_counters"], lp.Counters)
		if err != nil {
			continue // the scrape reports it
		}
		for i, c := range lp.Counters {
			key := lp.Name + "/" + c.Reason
			if counts[i] == 0 || s.loggedCounters[key] {
				continue
			}
			s.loggedCounters[key] = true
			if c.Lost {
				s.m.log.Warn("requests observed but not reported (logged once; see obsd_events_lost_total)",
					"probe", lp.Name, "reason", c.Reason, "so_far", counts[i])
			} else {
				s.m.log.Info("probe anomaly (logged once; see obsd_probe_anomalies_total)",
					"probe", lp.Name, "reason", c.Reason, "so_far", counts[i])
			}
		}
	}
}

// Collector exposes obsd's own probe health. Counters kept in BPF maps are
// read at scrape time.
func (m *Manager) Collector() prometheus.Collector { return m.stats }

func (s *stats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.processes
	ch <- s.attachErrors
	ch <- s.events
	ch <- s.lost
	ch <- s.anomalies
}

func (s *stats) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(s.processes, prometheus.GaugeValue, float64(s.m.Processes()))
	s.mu.Lock()
	for reason, n := range s.attachErrs {
		ch <- prometheus.MustNewConstMetric(s.attachErrors, prometheus.CounterValue, float64(n), reason)
	}
	s.mu.Unlock()
	for _, lp := range s.m.probes {
		ch <- prometheus.MustNewConstMetric(s.events, prometheus.CounterValue, float64(lp.events.Load()), lp.Name)
		ch <- prometheus.MustNewConstMetric(s.lost, prometheus.CounterValue, float64(lp.decodeErrs.Load()), lp.Name, "decode")
		counts, err := readCounters(lp.maps["obsd_counters"], lp.Counters)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(s.lost, err)
			continue
		}
		for i, c := range lp.Counters {
			desc := s.anomalies
			if c.Lost {
				desc = s.lost
			}
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(counts[i]), lp.Name, c.Reason)
		}
	}
}

// readCounters sums the per-CPU counters cs name, in their order.
func readCounters(mp *ebpf.Map, cs []probe.Counter) ([]uint64, error) {
	out := make([]uint64, len(cs))
	if mp == nil {
		if len(cs) == 0 {
			return out, nil
		}
		return out, errors.New("probe has no obsd_counters map")
	}
	var perCPU []uint64
	for i := range out {
		if err := mp.Lookup(cs[i].Index, &perCPU); err != nil {
			return nil, err
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// Active is the number of requests in flight in one process for one
// method, as received (not normalised).
type Active struct {
	PID    uint32
	Method string
	N      int64
}

// ActiveRequests counts the busy in-flight slots of every probe that keeps
// them, by process and method. It runs at scrape time, so the probes pay
// nothing for the gauge.
func (m *Manager) ActiveRequests() ([]Active, error) {
	type key struct {
		pid    uint32
		method string
	}
	counts := map[key]int64{}
	var errs []error
	for _, lp := range m.probes {
		a := lp.Active
		mp := lp.maps[a.Map]
		if a.Map == "" || mp == nil {
			continue
		}
		k := make([]byte, mp.KeySize())
		v := make([]byte, mp.ValueSize())
		it := mp.Iterate()
		for it.Next(&k, &v) {
			if binary.NativeEndian.Uint64(v[a.StartOffset:]) == 0 {
				continue // idle slot
			}
			n := min(int(v[a.MethodLenOffset]), len(v)-a.MethodOffset)
			method := string(v[a.MethodOffset : a.MethodOffset+n])
			counts[key{binary.NativeEndian.Uint32(k[a.TGIDOffset:]), method}]++
		}
		errs = append(errs, it.Err())
	}
	out := make([]Active, 0, len(counts))
	for k, n := range counts {
		out = append(out, Active{PID: k.pid, Method: k.method, N: n})
	}
	return out, errors.Join(errs...)
}

// forgetPID deletes an exited process's entries from per-process maps.
// Called with m.mu held.
func (m *Manager) forgetPID(tgid uint32) {
	for _, lp := range m.probes {
		for name, off := range lp.ProcessMaps {
			mp := lp.maps[name]
			if mp == nil {
				continue
			}
			key := make([]byte, mp.KeySize())
			val := make([]byte, mp.ValueSize())
			var stale [][]byte
			it := mp.Iterate()
			for it.Next(&key, &val) {
				if binary.NativeEndian.Uint32(key[off:]) == tgid {
					stale = append(stale, append([]byte(nil), key...))
				}
			}
			for _, k := range stale {
				_ = mp.Delete(k) // already gone is fine
			}
		}
	}
}
