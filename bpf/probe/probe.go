// Package probe describes an eBPF probe as data: where it attaches in a Go
// binary, which struct field offsets it needs as C constants, which Go
// versions it supports, and how its ring-buffer records decode. Attaching,
// constant injection and reading live in internal/uprobes; a probe package
// only declares.
package probe

import (
	"github.com/cilium/ebpf"
)

// Site is one attach point. A site is the entry of a Go function, placed
// on the prologue's PUSHQ BP (an instruction the kernel emulates, so a hit
// costs no single-step), or, with Returns, every RET of one.
type Site struct {
	// Symbol is the Go function, e.g. "net/http.serverHandler.ServeHTTP".
	Symbol string
	// Program is the name of the BPF program in the collection spec.
	Program string
	// VaddrConst, if set, names a u64 constant that receives the site's
	// link-time address: with ctx->ip it gives the load bias of a PIE.
	VaddrConst string
	// Optional sites may be missing from a binary: the linker drops a
	// method nothing can call (net/http.(*response).Hijack in a program
	// that never hijacks), and then nothing can reach the site either.
	Optional bool
	// OneOf, if set, names a group of optional sites that are one function
	// under the names of different releases (grpc-go renamed WriteStatus
	// to writeStatus in v1.69): a binary must have at least one of them.
	OneOf string
	// Returns attaches Program at every RET instruction of Symbol instead
	// of its entry (found by disassembly, one link for all): the one RET
	// that runs sees the results still in their registers. A RET is
	// single-stepped (it costs several µs more than an entry hit), so a
	// probe uses it only where no function entered afterwards can end the
	// call; VaddrConst is not set for such a site (it has many addresses).
	Returns bool
	// Calls, if set, attaches Program at every direct call from Symbol to
	// the function Calls (found by disassembly, one link for all) instead
	// of Symbol's entry: a CALL rel32 is emulated like a PUSHQ BP, and the
	// callee's arguments are in their registers. For "once Symbol has got
	// this far", where Symbol enters no function of its own (a router's
	// sync.(*Pool).Put of its request context, after the handler ran).
	// VaddrConst is not set for such a site.
	Calls string
	// When, if set, names a bool constant of the probe (e.g.
	// TCPPropagateConst), or TCPStreamsWhen: the site is attached only
	// where the loader sets it true, so that a feature that is off costs
	// no hit.
	When string
	// InlinedOK accepts a binary where Symbol is also inlined somewhere:
	// the site wants only the calls that enter it (net/http.NotFound
	// called through a handler value), not every call.
	InlinedOK bool
}

// Field names a struct field whose byte offset a probe needs.
type Field struct {
	// Module is "std" for the standard library, else the module path
	// (e.g. "google.golang.org/grpc"); it selects which version keys the
	// fallback offsets table.
	Module string
	// Package is the import path, e.g. "net/http".
	Package string
	// Struct is the type name within Package, e.g. "Request".
	Struct string
	// Field is the field name, e.g. "Method".
	Field string
}

// Const binds a C `volatile const` in the BPF object to a field offset.
type Const struct {
	// Name of the constant in the BPF object.
	Name  string
	Field Field
	// Optional fields exist only in some versions (net/http.Request.Pattern
	// since Go 1.23). When absent, the constant keeps the object's default,
	// which the C code must treat as "not present". In a binary without
	// DWARF whose module version the offsets table does not list, whether
	// the field exists is unknown, and the probe is refused
	// (unsupported_version), unless Secondary is set too.
	Optional bool
	// Secondary marks an optional field only one side path of the probe
	// needs (x/net's HTTP/2 server in the HTTP server probe): where its
	// module version is unknown, the constant keeps its default and the
	// probe loses what needs it (counted), rather than the whole probe
	// being refused.
	Secondary bool
}

// ITabConst binds a u64 constant in the BPF object to the link-time address
// of the itab for converting Type to Interface, whose method slots hold
// Methods (in the interface's method order). The loader leaves it 0 when
// the binary does not give the itab; the program must then do without.
type ITabConst struct {
	Name            string
	Type, Interface string
	Methods         []string
}

// FuncConst binds a u64 constant in the BPF object to the link-time entry
// address of the Go function Symbol (from .symtab, or .gopclntab when
// stripped). An error's dynamic type shows in its itab's first method slot
// (the Error method), also where no itab has a symbol (Go 1.27 emits none)
// or was made at run time.
type FuncConst struct {
	Name, Symbol string
	// Optional leaves the constant 0 when the binary lacks the function;
	// otherwise its absence refuses the probe for that binary.
	Optional bool
}

// Probe is the whole declaration of one instrumentation.
type Probe struct {
	// Name is short and stable; it appears in logs and metric labels.
	Name string
	// MinGo is the oldest Go release supported, as "go1.21".
	MinGo  string
	Sites  []Site
	Consts []Const
	ITabs  []ITabConst
	Funcs  []FuncConst
	// Spec loads the compiled BPF collection.
	Spec func() (*ebpf.CollectionSpec, error)
	// Decode turns one ring-buffer record into the probe's own event type
	// (Request for the HTTP server). It must not keep raw, which the reader
	// reuses.
	Decode func(raw []byte) (Event, error)
	// ProcessMaps lists maps whose keys hold a tgid, by name, with the tgid's
	// byte offset in the key: entries of an exited process are deleted.
	ProcessMaps map[string]int
	// Counters name the slots of the probe's obsd_counters per-CPU array
	// (bpf/include/obsd.h), each by the C enum constant bpf2go generates
	// for it, so that Go and C cannot disagree on positions.
	Counters []Counter
	// Active, if its Map is set, says how to count requests in flight.
	Active ActiveSlots
	// Metrics, if its Map is set, says how to read what the probe counts in
	// the kernel instead of sending records.
	Metrics MetricsMap
	// OnDemand probes are loaded for every binary that has their sites but
	// attached to a process only when asked (uprobes.Manager.Enable): what
	// they add is worth a hit per request only where a process needs it.
	OnDemand bool
	// EnabledFlag, for an OnDemand probe, names a shared one-entry array
	// map (u32 key and value) that is set to 1 once the probe is enabled
	// for any process: what other probes do for it only then.
	EnabledFlag string
	// Feeds names the probe this one only hands data to (a router's probe
	// feeds the HTTP server probe): it is not loaded for a binary the
	// other did not load for, and never makes a binary count as
	// instrumented by itself. The fed probe comes earlier in the list.
	Feeds string
}

// Counter is one slot of a probe's obsd_counters: either a loss (a call
// not reported, or not faithfully: obsd_events_lost_total{probe,reason}) or
// an anomaly (reported, but something about it was off:
// obsd_probe_anomalies_total{probe,reason}). Each is logged once per probe
// when it first becomes non-zero.
type Counter struct {
	// Index is the slot: the value of the probe's C enum constant.
	Index uint32
	// Reason is the reason label, e.g. "ringbuf_full".
	Reason string
	Lost   bool
}

// MetricsMap describes a per-CPU hash of duration histograms that a probe
// fills in the kernel. The loader sets the constants it names.
type MetricsMap struct {
	Map string
	// Kind is the kind of every series in Map, so that a reader of one
	// signal's series reads no other probe's map.
	Kind Kind
	// BoundsConst names a u64 array constant that receives the bucket upper
	// bounds in ns, from the exported histogram's buckets.
	BoundsConst string
	// RodataStartConst and RodataEndConst name u64 constants that receive
	// the link-time range of the executable's .rodata, where string literals
	// live; the probe reports those by address.
	RodataStartConst, RodataEndConst string
	// Decode turns one entry, with its value on every CPU, into a Histogram
	// whose Pattern is still an address, or whose strings are still a hash
	// (NameHashed).
	Decode func(key []byte, perCPU [][]byte) (Histogram, error)
	// Names, if set, names the hash map where the probe leaves, before a
	// series' first count, the strings its key holds only by hash (a
	// router's route, a gRPC method, a server address), keyed by (u32
	// tgid, u32 padding, u64 hash). Name reads one of its values into a
	// Histogram that Decode marked NameHashed.
	Names string
	Name  func(h *Histogram, val []byte) error
}

// Histogram is one series counted in the kernel, cumulative since the
// process was attached. The HTTP server's labels are its own fields
// (Method, Status, Pattern or Router, Protocol); every other kind's are
// Series, a value of that kind's event type (as its records decode) whose
// label fields are set and whose process and timing are not (so that two
// processes' series of the same labels compare equal).
type Histogram struct {
	Kind   Kind
	PID    uint32
	Method string
	Status int
	// Series holds the labels of a kind other than KindHTTPServer.
	Series Event
	// NameHashed says the series' strings are in the probe's MetricsMap
	// Names under NameHash, still to be read (MetricsMap.Name).
	NameHashed bool
	NameHash   uint64
	// PatternAddr and PatternLen locate the pattern's bytes in .rodata
	// (link-time address); the loader resolves them into Pattern.
	PatternAddr uint64
	PatternLen  int
	Pattern     string
	// Router, when set, is the third-party router that named the request
	// (RouterName): its route is then in the probe's Names (NameHashed),
	// and Pattern is the route as the router reported it (raw, see
	// Request.Router).
	Router           string
	PatternTruncated bool
	// Protocol is the HTTP version as semconv's network.protocol.version
	// ("1.0", "1.1", "2"), "" when unknown.
	Protocol string
	// Buckets are counts per bucket, not cumulative; the last is +Inf.
	Buckets []uint64
	SumNS   uint64
}

// ActiveSlots describes a map with one slot per goroutine, busy while a
// request is in flight, which user space counts at scrape time.
type ActiveSlots struct {
	Map string
	// TGIDOffset is the byte offset of the u32 tgid in the key.
	TGIDOffset int
	// StartOffset is the byte offset of a u64 in the value that is non-zero
	// while the slot is busy.
	StartOffset int
	// MethodLenOffset is the byte offset of a u8 length and MethodOffset of
	// the bytes of the request method, as received, in the value.
	MethodLenOffset, MethodOffset int
}

// Kind says which side of which protocol an Event was observed on. Each
// kind is one signal: its own event type (declared beside its probe), its
// own file in internal/export/prom and internal/export/otel, and its own
// handler in internal/agent, found by Kind.
type Kind uint8

const (
	KindHTTPServer Kind = iota + 1
	KindHTTPClient
	KindRPCServer
	KindRPCClient
)

// String names the kind as its signal's instruments do ("http.server").
func (k Kind) String() string {
	switch k {
	case KindHTTPServer:
		return "http.server"
	case KindHTTPClient:
		return "http.client"
	case KindRPCServer:
		return "rpc.server"
	case KindRPCClient:
		return "rpc.client"
	}
	return "unknown"
}

// Call holds what every observed call has, whatever its protocol. Event
// types embed it.
type Call struct {
	Kind Kind
	// PID is the thread group ID of the observed process.
	PID uint32
	// StartNS and EndNS are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
	StartNS, EndNS uint64
	// Sampled says the probe sampled the call for a span (only when spans
	// are on); TraceIDLow is then the value of the trace ID's last 8 bytes
	// (big-endian), drawn so that the configured ratio sampler agrees.
	Sampled    bool
	TraceIDLow uint64
	// Trace is the rest of the span's context, where the probe decided it.
	Trace Trace
}

// Common implements Event for every type that embeds Call.
func (c Call) Common() Call { return c }

// Event is one decoded record. Each probe declares its own concrete type
// (Request for the HTTP server); consumers find the type by Common().Kind.
type Event interface {
	Common() Call
}

// Common implements Event. Request predates Call and keeps its fields flat.
func (r Request) Common() Call {
	return Call{Kind: r.Kind, PID: r.PID, StartNS: r.StartNS, EndNS: r.EndNS, Sampled: r.Sampled, TraceIDLow: r.TraceIDLow, Trace: r.Trace}
}

// Request is one HTTP server request (KindHTTPServer), free of BPF types.
type Request struct {
	Kind Kind
	// PID is the thread group ID of the observed process.
	PID uint32
	// StartNS and EndNS are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
	StartNS, EndNS uint64
	// Method is the request method as sent, e.g. "GET".
	Method string
	// Path is the URL path as received (may be truncated, see Truncated).
	Path string
	// Pattern is the ServeMux pattern that routed the request, as written
	// in the program ("GET /items/{id}"), or "" when none did. When Router
	// is set, it is that router's route instead, raw: gin's FullPath(),
	// echo's Path(), gorilla/mux's path template, or chi's route patterns
	// joined but not yet cleaned as RoutePattern() cleans them; "" when
	// the router matched no route.
	Pattern string
	// Router is the third-party router (RouterName) that served the
	// request, "" for none.
	Router string
	// Status is the response status code; 0 never leaves the decoder.
	Status int
	// Truncated is set when Path or Pattern were longer than the record;
	// PathTruncated and PatternTruncated say which. MethodTruncated is set
	// when Method was longer than the probe copies.
	Truncated                       bool
	PathTruncated, PatternTruncated bool
	MethodTruncated                 bool
	// TLS says the request came over TLS (url.scheme "https").
	TLS bool
	// Protocol is the HTTP version as semconv's network.protocol.version
	// ("1.0", "1.1", "2"), from Request.ProtoMajor and ProtoMinor; "" when
	// unknown.
	Protocol string
	// Sampled says the probe sampled the request for a span (only when
	// spans are on); TraceIDLow is then the value of the trace ID's last 8
	// bytes (big-endian), drawn so that the configured ratio sampler agrees.
	Sampled    bool
	TraceIDLow uint64
	// Trace is the rest of the span's context (see Call.Trace).
	Trace Trace
}
