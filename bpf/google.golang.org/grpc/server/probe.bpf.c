//go:build ignore

/* grpc-go server: every call a grpc.Server hands to handleStream, counted
 * once, unary and streaming alike.
 *
 * Start: google.golang.org/grpc.(*Server).handleStream(s, t ServerTransport,
 *        stream), on the goroutine grpc-go starts (or a stream worker) for
 *        the stream; stream is *transport.Stream before v1.69,
 *        *transport.ServerStream since.
 * End:   the HTTP/2 transport's status write, which sends the trailers:
 *        (*http2Server).WriteStatus(s, st *status.Status) before v1.69,
 *        (*http2Server).writeStatus(s, st) since. The server calls it on the
 *        same goroutine once the handler returned (processUnaryRPC,
 *        processStreamingRPC, processRPC), and handleStream calls it itself
 *        for a call it rejects (unknown service or method, malformed name).
 *        (*Server).ServeHTTP's transport has the same method,
 *        (*serverHandlerTransport).WriteStatus/writeStatus, with the same
 *        arguments, run on handleStream's goroutine too.
 *        The status code is st.s.Code; a nil st.s is OK.
 * Two hits per call whatever the number of messages: both sites are
 * entries, on the prologue's PUSHQ BP. In-flight state is keyed by (tgid,
 * g) and remembers the stream, so an end is matched to its own start; the
 * first end of a stream ends it (a streaming SendMsg that fails writes a
 * status before the handler returns; the second write of that stream finds
 * no start and is counted as end_without_start).
 */
#include "obsd.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define METHOD_MAX 128
#define MESSAGE_MAX 32

/* Field offsets, rewritten per target binary by internal/uprobes. */
volatile const u64 off_stream_method = OFF_NONE;        /* transport.Stream.method */
volatile const u64 off_server_stream_stream = OFF_NONE; /* transport.ServerStream.Stream, v1.69+ */
volatile const u64 off_server_stream_st = OFF_NONE;     /* transport.ServerStream.st, v1.69+ */
volatile const u64 off_status_s = OFF_NONE;             /* internal/status.Status.s */
volatile const u64 off_spb_status_code = OFF_NONE;      /* genproto rpc/status.Status.Code */
volatile const u64 off_spb_status_message = OFF_NONE;   /* genproto rpc/status.Status.Message */
/* Spans, as in the net/http server probe: a sampled call's record says so
 * and carries the trace ID's low 64 bits, drawn so that the OTel SDK's
 * TraceIDRatioBased sampler with sample_bound = ratio * 2^63 agrees. */
volatile const u8 with_spans = 1;
volatile const u64 sample_bound = 1ULL << 63;

#define FLAG_SAMPLED 1
#define FLAG_METHOD_TRUNCATED 2

/* Unimplemented: the code of calls the server rejects itself. */
#define CODE_UNIMPLEMENTED 12

/* A record is this header followed by method_len bytes of the method
 * ("/pkg.Service/Method" as the client sent it). */
struct rpc_server_event {
	u64 start_ns;
	u64 end_ns;
	u64 trace_id_low; /* when FLAG_SAMPLED: bytes 8..15 of the trace ID, big-endian value */
	u32 tgid;
	u32 code;     /* gRPC status code */
	u8 flags;
	u8 message_len; /* bytes of message: only for Unimplemented */
	u16 method_len;
	u32 _pad;
	/* The status message's first bytes, for Unimplemented only: they tell
	 * a call the server rejected itself ("unknown service ...") from a
	 * handler's own Unimplemented. */
	char message[MESSAGE_MAX];
};

struct scratch {
	struct rpc_server_event h;
	char method[METHOD_MAX];
};

struct inflight_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct inflight {
	u64 start_ns;
	u64 stream; /* the stream handleStream got; the end's must be the same */
};

/* One entry per call in flight, deleted at its end. A plain hash, not an
 * LRU, so that a full map is counted (inflight_map_full) rather than
 * evicting a call in flight silently. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} rpc_server_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} rpc_server_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Keeps these structs in BTF for bpf2go -type. */
const struct rpc_server_event *unused_rpc_server_event __attribute__((unused));
const struct inflight_key *unused_inflight_key __attribute__((unused));
const struct inflight *unused_inflight __attribute__((unused));

static __always_inline struct inflight_key key_of(struct pt_regs *ctx)
{
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, ._pad = 0};
	return key;
}

SEC("uprobe.multi")
int rpc_server_start(struct pt_regs *ctx)
{
	u64 stream = GO_ARG4(ctx); /* after s and the two words of t */
	if (!stream)
		return 0;
	struct inflight_key key = key_of(ctx);
	struct inflight in = {.start_ns = bpf_ktime_get_ns(), .stream = stream};
	struct inflight *old = bpf_map_lookup_elem(&rpc_server_inflight, &key);
	if (old) {
		/* This goroutine's previous call never ended (a g is reused by
		 * later goroutines): lost. */
		count(CNT_STALE_START);
		*old = in;
		return 0;
	}
	if (bpf_map_update_elem(&rpc_server_inflight, &key, &in, BPF_ANY) != 0)
		count(CNT_INFLIGHT_FULL);
	return 0;
}

/* method_header returns the address of the method's string header in the
 * stream, 0 when it cannot be read. Since v1.69 the argument is a
 * *ServerStream embedding Stream: by pointer until v1.76, by value since
 * v1.77. A pointer embedding is followed directly by ServerStream.st, so
 * the two offsets tell which (a Stream is far larger than 8 bytes). */
static __always_inline u64 method_header(u64 s)
{
	if (off_server_stream_stream == OFF_NONE)
		return s + off_stream_method;
	u64 base = s + off_server_stream_stream;
	if (off_server_stream_st == off_server_stream_stream + 8) {
		if (bpf_probe_read_user(&base, sizeof(base), (void *)base) != 0 || !base)
			return 0;
	}
	return base + off_stream_method;
}

SEC("uprobe.multi")
int rpc_server_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 s = GO_ARG2(ctx), st = GO_ARG3(ctx);
	struct inflight_key key = key_of(ctx);
	struct inflight *in = bpf_map_lookup_elem(&rpc_server_inflight, &key);
	if (!in || in->stream != s) {
		/* Attached mid-call, the second status write of a stream whose
		 * send failed, or a status written off the call's goroutine. */
		count(CNT_UNMATCHED_END);
		return 0;
	}
	u64 start = in->start_ns;
	bpf_map_delete_elem(&rpc_server_inflight, &key);

	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&rpc_server_scratch, &zero);
	if (!sc) /* cannot happen: a one-slot per-CPU array */
		return 0;
	struct rpc_server_event *e = &sc->h;
	e->start_ns = start;
	e->end_ns = end;
	e->tgid = key.tgid;
	e->flags = 0;
	e->message_len = 0;
	e->_pad = 0;
	e->trace_id_low = 0;

	/* st.s: nil is OK (status.Status.Code says so). */
	u64 sp = 0;
	u32 code = 0;
	if (!st || bpf_probe_read_user(&sp, sizeof(sp), (void *)(st + off_status_s)) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	if (sp && bpf_probe_read_user(&code, sizeof(code), (void *)(sp + off_spb_status_code)) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	e->code = code;
	if (sp && code == CODE_UNIMPLEMENTED) {
		u32 n = 0;
		if (read_go_string(e->message, MESSAGE_MAX, sp + off_spb_status_message, &n) < 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
		e->message_len = n;
	}

	u64 mh = method_header(s);
	u32 n = 0;
	s64 full = mh ? read_go_string(sc->method, METHOD_MAX, mh, &n) : -1;
	if (full < 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	if (full > n)
		e->flags |= FLAG_METHOD_TRUNCATED;
	e->method_len = n;

	if (with_spans) {
		u64 x = ((u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
		if ((x >> 1) < sample_bound) {
			e->flags |= FLAG_SAMPLED;
			e->trace_id_low = x;
		}
	}
	if (n > METHOD_MAX) /* bounds for the verifier */
		n = METHOD_MAX;
	/* No wakeup: the reader polls. */
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + n, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
	return 0;
}
