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
 * With --propagate=tcp (goconn.h), the start also takes the context the
 * caller's obsd put on the HTTP/2 connection for this stream (its ID's
 * bits in the span ID) as the call's parent, when no traceparent came:
 * no extra hit.
 * A call not sampled for a span is counted in the kernel (metrics.h) under
 * (tgid, code, hash of its method); a record goes out only for a sampled
 * call, a code of Unimplemented (user space tells a call the server
 * rejected itself by its message) or a method too long to keep.
 */
#include "obsd.h"
#include "tracectx.h"
#include "goconn.h"
#include "metrics.h"

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
volatile const u64 off_stream_ctx = OFF_NONE;           /* transport.Stream.ctx, an interface */
/* --propagate=tcp (goconn.h): the stream's ID and its HTTP/2 connection. */
volatile const u64 off_stream_id = OFF_NONE;      /* transport.Stream.id */
volatile const u64 off_h2server_conn = OFF_NONE;  /* transport.http2Server.conn, a net.Conn */
volatile const u64 fn_h2server_close = 0;         /* transport.(*http2Server).Close: t's type */
volatile const u64 start_site_vaddr = 0;          /* for the load bias of a PIE */
/* Spans: the call's trace context is decided at its start (tracectx.h)
 * from the incoming metadata's traceparent. grpc-go's transport wraps the
 * stream's context in metadata.NewIncomingContext last (operateHeaders,
 * unless grpc-tags-bin, grpc-trace-bin or a tap handle wrap it further): a
 * context.WithValue whose value, an MD, is a map: the data word of the
 * valueCtx's val, at 40 (Context, key, val are interfaces). The stream's
 * context is published as the in-process parent of calls the handler
 * makes under it. */
#define VALUECTX_VAL_DATA 40

#define FLAG_SAMPLED 1
#define FLAG_METHOD_TRUNCATED 2

/* Unimplemented: the code of calls the server rejects itself. */
#define CODE_UNIMPLEMENTED 12

/* A record is this header followed by method_len bytes of the method
 * ("/pkg.Service/Method" as the client sent it) and tracestate_len bytes of
 * the incoming tracestate (sampled records only). */
struct rpc_server_event {
	u64 start_ns;
	u64 end_ns;
	u64 trace_id_low; /* when FLAG_SAMPLED: bytes 8..15 of the trace ID, big-endian value */
	u32 tgid;
	u32 code;     /* gRPC status code */
	u8 flags;
	u8 message_len; /* bytes of message: only for Unimplemented */
	u16 method_len;
	u16 tracestate_len;
	u16 _pad;
	u64 trace_id_high;
	u64 span_id;
	u64 parent_span_id; /* 0: a root */
	u8 trace;           /* TR_* */
	u8 _pad2[7];
	/* The status message's first bytes, for Unimplemented only: they tell
	 * a call the server rejected itself ("unknown service ...") from a
	 * handler's own Unimplemented. */
	char message[MESSAGE_MAX];
};

struct scratch {
	struct rpc_server_event h;
	char method[METHOD_MAX];
	char state[TRACESTATE_MAX]; /* follows the method's bytes in a record */
};

struct inflight_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct inflight {
	u64 start_ns;
	u64 stream; /* the stream handleStream got; the end's must be the same */
	u64 ctx;    /* the stream's context (data word), published as a parent */
	struct trace_ctx tc;
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

/* A series of rpc_server_metrics: the method is rpc_server_names's entry
 * under (tgid, method). */
struct rpc_server_metric_key {
	u32 tgid;
	u32 code;
	u64 method; /* name_hash of the method */
};

/* The name scratch: where the strings are read, zeroed past them. */
DECLARE_METRICS(rpc_server_metrics, rpc_server_names, rpc_server_budget, rpc_server_name_scratch, struct rpc_server_metric_key, 16384);

/* Keeps these structs in BTF for bpf2go -type. */
const struct rpc_server_event *unused_rpc_server_event __attribute__((unused));
const struct rpc_server_metric_key *unused_rpc_server_metric_key __attribute__((unused));
const struct hist *unused_hist __attribute__((unused));
const struct obsd_name *unused_obsd_name __attribute__((unused));
const struct name_key *unused_name_key __attribute__((unused));
const struct inflight_key *unused_inflight_key __attribute__((unused));
const struct inflight *unused_inflight __attribute__((unused));

static __always_inline struct inflight_key key_of(struct pt_regs *ctx)
{
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, ._pad = 0};
	return key;
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

/* tcp_parent takes the context the caller's obsd sent for this stream on
 * the connection of transport t (itab, data) as tc's parent
 * (--propagate=tcp), and returns goconn_in_stream's answer (0 when the
 * connection has no key). Only grpc-go's own HTTP/2 server has one:
 * ServeHTTP's transport rides net/http's connection. */
static __noinline int tcp_parent(struct pt_regs *ctx, u64 t_itab, u64 t_data, u64 stream_base, struct trace_ctx *tc)
{
	u64 fn = 0;
	u32 sid = 0;
	if (!fn_h2server_close || off_h2server_conn == OFF_NONE || off_stream_id == OFF_NONE || !t_itab ||
	    bpf_probe_read_user(&fn, sizeof(fn), (void *)(t_itab + 24)) != 0 ||
	    fn - load_bias(ctx, start_site_vaddr) != fn_h2server_close ||
	    bpf_probe_read_user(&sid, sizeof(sid), (void *)(stream_base + off_stream_id)) != 0)
		return 0;
	struct tcpctx_key k;
	if (goconn_key(t_data + off_h2server_conn, load_bias(ctx, start_site_vaddr), &k) != 0)
		return 0;
	/* Returned, not counted here: a noinline function whose result goes
	 * unused may leave clang's leftover (a stack pointer) in R0, which the
	 * verifier refuses. */
	return goconn_in_stream(&k, sid, tc);
}

SEC("uprobe.multi")
int rpc_server_start(struct pt_regs *ctx)
{
	u64 stream = GO_ARG4(ctx); /* after s and the two words of t */
	if (!stream)
		return 0;
	struct inflight_key key = key_of(ctx);
	struct inflight in = {.stream = stream};
	if (with_spans) {
		u64 md = 0, mh = method_header(stream);
		/* The Stream's base: method_header's, minus the method's offset. */
		if (mh && off_stream_ctx != OFF_NONE &&
		    bpf_probe_read_user(&in.ctx, sizeof(in.ctx), (void *)(mh - off_stream_method + off_stream_ctx + 8)) == 0 &&
		    in.ctx)
			bpf_probe_read_user(&md, sizeof(md), (void *)(in.ctx + VALUECTX_VAL_DATA));
		tc_start(md, &in.tc);
		if (tcp_propagate && mh && tcp_parent(ctx, GO_ARG2(ctx), GO_ARG3(ctx), mh - off_stream_method, &in.tc) < 0)
			count(CNT_TCPCTX_STREAM);
		tc_publish(key.tgid, in.ctx, &in.tc);
	}
	in.start_ns = bpf_ktime_get_ns();
	struct inflight *old = bpf_map_lookup_elem(&rpc_server_inflight, &key);
	if (old) {
		/* This goroutine's previous call never ended (a g is reused by
		 * later goroutines): lost. */
		count(CNT_STALE_START);
		if (old->ctx)
			tc_forget(key.tgid, old->ctx);
		*old = in;
		return 0;
	}
	if (bpf_map_update_elem(&rpc_server_inflight, &key, &in, BPF_ANY) != 0) {
		count(CNT_INFLIGHT_FULL);
		if (in.ctx)
			tc_forget(key.tgid, in.ctx);
	}
	return 0;
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
	struct trace_ctx tc = in->tc;
	if (in->ctx)
		tc_forget(key.tgid, in->ctx);
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
	e->tracestate_len = 0;
	e->trace_id_low = 0;
	e->trace_id_high = 0;
	e->span_id = 0;
	e->parent_span_id = 0;
	e->trace = 0;
	__builtin_memset(e->_pad2, 0, sizeof(e->_pad2));

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

	/* Head-sampled at the start, or kept for its duration or error (the
	 * codes semconv makes a server span's error: Unknown,
	 * DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss). */
	int sampled =
		tc_end(&tc, end - start, code == 2 || code == 4 || code == 12 || code == 13 || code == 14 || code == 15);

	u64 mh = method_header(s);
	u32 n = 0;
	s64 full = -1;
	if (metrics_on() && !sampled && code != CODE_UNIMPLEMENTED) {
		/* The common case: counted here, no record. */
		struct obsd_name *nm = bpf_map_lookup_elem(&rpc_server_name_scratch, &zero);
		if (!nm)
			return 0;
		__builtin_memset(nm, 0, sizeof(*nm));
		full = mh ? read_go_string(nm->name, METHOD_MAX, mh, &n) : -1;
		if (full < 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
		if (full == n) {
			nm->len_a = n;
			struct rpc_server_metric_key mk = {.tgid = key.tgid, .code = code, .method = name_hash(nm)};
			if (hist_count(&rpc_server_metrics, &rpc_server_names, &rpc_server_budget, &mk, key.tgid, mk.method,
				       nm, end - start))
				return 0;
		}
		/* Too long, or not counted: a record, with the bytes read. */
		if (n > METHOD_MAX) /* bounds for the verifier */
			n = METHOD_MAX;
		__builtin_memcpy(sc->method, nm->name, METHOD_MAX);
	} else {
		full = mh ? read_go_string(sc->method, METHOD_MAX, mh, &n) : -1;
		if (full < 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
	}
	if (full > n)
		e->flags |= FLAG_METHOD_TRUNCATED;
	e->method_len = n;
	if (sampled) {
		e->flags |= FLAG_SAMPLED;
		tc_fill(e, tc);
	}
	if (n > METHOD_MAX) /* bounds for the verifier */
		n = METHOD_MAX;
	u32 used = n;
	/* The incoming tracestate, for the span only, right after the method. */
	if (sampled && (tc.trace & TR_STATE)) {
		u32 ts = tc.tracestate_len;
		if (ts > TRACESTATE_MAX)
			ts = TRACESTATE_MAX;
		if (ts > 0 && bpf_probe_read_user(sc->method + n, ts, (void *)tc.tracestate_ptr) == 0) {
			e->tracestate_len = ts;
			used += ts;
		}
	}
	if (used > METHOD_MAX + TRACESTATE_MAX) /* bounds for the verifier */
		used = METHOD_MAX + TRACESTATE_MAX;
	/* No wakeup: the reader polls. */
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + used, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
	return 0;
}
