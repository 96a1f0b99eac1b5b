package probe

// Trace is a span's W3C trace context as a probe decided it at the call's
// start (bpf/include/tracectx.h). A probe that does not decide it leaves
// SpanID 0: the span is then a root whose IDs user space draws, with the
// probe's TraceIDLow.
type Trace struct {
	// TraceIDHigh is the value of the trace ID's first 8 bytes, big-endian;
	// the last 8 are Call.TraceIDLow.
	TraceIDHigh uint64
	// SpanID is the span's own ID; ParentSpanID its parent's, 0 for a root.
	SpanID, ParentSpanID uint64
	// Remote says the parent came with the request (a traceparent header),
	// from another process.
	Remote bool
	// ParentSampled is the parent's sampled flag, when Remote.
	ParentSampled bool
	// KeptSlow and KeptError say head sampling dropped the span but it was
	// kept at its end for its duration or its error.
	KeptSlow, KeptError bool
	// TraceState is the incoming tracestate header as received, when Remote.
	TraceState string
}

// Bits of a record's trace byte (TR_* in bpf/include/tracectx.h).
const (
	trSampled   = 1
	trRemote    = 2
	trKeptSlow  = 4
	trKeptError = 8
)

// DecodeTrace builds a Trace from a record's fields: the TR_* bits, the
// trace ID's high half, the span and parent IDs, and the tracestate bytes.
func DecodeTrace(bits byte, high, span, parent uint64, state []byte) Trace {
	return Trace{
		TraceIDHigh:   high,
		SpanID:        span,
		ParentSpanID:  parent,
		Remote:        bits&trRemote != 0,
		ParentSampled: bits&trRemote != 0 && bits&trSampled != 0,
		KeptSlow:      bits&trKeptSlow != 0,
		KeptError:     bits&trKeptError != 0,
		TraceState:    string(state),
	}
}

// TraceConsts are the constants of bpf/include/tracectx.h: the layout of
// Go maps, old (runtime.hmap, Go 1.21-1.23) and swiss
// (internal/runtime/maps, Go 1.24+), whichever the binary has. They are
// secondary: where they are unknown, trace context is not read (counted as
// trace_context_unread) and the probe works on.
func TraceConsts() []Const {
	f := func(name, pkg, typ, field string) Const {
		return Const{Name: name, Optional: true, Secondary: true,
			Field: Field{Module: "std", Package: pkg, Struct: typ, Field: field}}
	}
	const swiss = "internal/runtime/maps"
	return []Const{
		f("off_hmap_flags", "runtime", "hmap", "flags"),
		f("off_hmap_b", "runtime", "hmap", "B"),
		f("off_hmap_buckets", "runtime", "hmap", "buckets"),
		f("off_hmap_oldbuckets", "runtime", "hmap", "oldbuckets"),
		f("off_smap_dirptr", swiss, "Map", "dirPtr"),
		f("off_smap_dirlen", swiss, "Map", "dirLen"),
		f("off_stable_groups", swiss, "table", "groups"),
		f("off_sgroups_data", swiss, "groupsReference", "data"),
		f("off_sgroups_mask", swiss, "groupsReference", "lengthMask"),
	}
}

// CtxSpansMap is the map of in-process parents (bpf/include/tracectx.h),
// one for all probes: the loader shares every map whose name has the
// SharedMapPrefix. CtxSpansTGIDOffset is the tgid's offset in its key.
const (
	SharedMapPrefix    = "obsd_shared_"
	CtxSpansMap        = "obsd_shared_ctx_spans"
	CtxSpansTGIDOffset = 8
)
