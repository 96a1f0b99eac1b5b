package export

import (
	"log/slog"
	"sort"
	"sync"
)

// LabelSet bounds the distinct values one label takes in one process. The
// first Max distinct values are admitted and stay admitted for the life of
// the set, so reaching the limit never relabels a value already exported;
// any other value is replaced by the set's overflow value and counted. Every
// label value that comes from request data (routes from patterns, mux
// redirects, CONNECT targets and the fallback; later gRPC methods, client
// addresses) passes through one. Safe for concurrent use.
type LabelSet struct {
	max      int
	overflow string
	// first runs once, at the first overflow (logging it).
	first func()

	mu     sync.Mutex
	known  map[string]struct{}
	over   uint64
	logged bool
}

// NewLabelSet admits up to max distinct values and replaces the rest by
// overflow; first, if not nil, runs once at the first overflow.
func NewLabelSet(max int, overflow string, first func()) *LabelSet {
	return &LabelSet{max: max, overflow: overflow, first: first, known: make(map[string]struct{})}
}

// Admit returns v if it is or becomes one of the admitted values, else the
// overflow value (and counts it). The overflow value itself is always
// admitted and does not use up a place.
func (s *LabelSet) Admit(v string) (string, bool) { return s.AdmitN(v, 1) }

// AdmitN is Admit for n calls at once (a series counted in the kernel,
// labelled at each scrape: n is what it counted since the last one, so
// that an overflow is counted once per call, not once per scrape).
func (s *LabelSet) AdmitN(v string, n uint64) (string, bool) {
	s.mu.Lock()
	if _, ok := s.known[v]; ok || v == s.overflow {
		s.mu.Unlock()
		return v, true
	}
	if len(s.known) < s.max {
		s.known[v] = struct{}{}
		s.mu.Unlock()
		return v, true
	}
	s.over += n
	runFirst := !s.logged
	s.logged = true
	s.mu.Unlock()
	if runFirst && s.first != nil {
		s.first()
	}
	return s.overflow, false
}

// Overflowed is how many values Admit replaced so far.
func (s *LabelSet) Overflowed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.over
}

// Len is how many distinct values are admitted.
func (s *LabelSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.known)
}

// Overflow is one process's count of values a LabelSet replaced.
type Overflow struct {
	Service Service
	Label   string
	N       uint64
}

// Bounded keeps one LabelSet per process for one label and logs, once per
// process, when a process first goes over the limit. Safe for concurrent
// use.
type Bounded struct {
	label    string
	max      int
	overflow string
	log      *slog.Logger

	mu   sync.Mutex
	sets map[string]*boundedSet // by Service.InstanceID
}

type boundedSet struct {
	svc Service
	*LabelSet
}

// NewBounded bounds label (a label name, for logs and Overflow) to max
// distinct values per process, replacing the rest by overflow. A nil log
// means slog.Default().
func NewBounded(label string, max int, overflow string, log *slog.Logger) *Bounded {
	if log == nil {
		log = slog.Default()
	}
	return &Bounded{label: label, max: max, overflow: overflow, log: log, sets: make(map[string]*boundedSet)}
}

// Set returns svc's LabelSet, creating it on first use.
func (b *Bounded) Set(svc Service) *LabelSet {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.sets[svc.InstanceID]; ok {
		return s.LabelSet
	}
	s := &boundedSet{svc: svc}
	s.LabelSet = NewLabelSet(b.max, b.overflow, func() {
		b.log.Warn("too many distinct label values in one process; new values are exported as the overflow value "+
			"and counted (logged once per process)",
			"label", b.label, "limit", b.max, "overflow_value", b.overflow,
			"service", svc.Name, "service_instance_id", svc.InstanceID)
	})
	b.sets[svc.InstanceID] = s
	return s.LabelSet
}

// Forget drops the set of an exited process.
func (b *Bounded) Forget(instance string) {
	b.mu.Lock()
	delete(b.sets, instance)
	b.mu.Unlock()
}

// Overflows returns the processes whose values overflowed, by instance.
func (b *Bounded) Overflows() []Overflow {
	b.mu.Lock()
	out := make([]Overflow, 0, len(b.sets))
	for _, s := range b.sets {
		if n := s.Overflowed(); n > 0 {
			out = append(out, Overflow{Service: s.svc, Label: b.label, N: n})
		}
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Service.InstanceID < out[j].Service.InstanceID })
	return out
}
