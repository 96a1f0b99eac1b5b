//go:build ignore

/* grpc-go client: every attempt of every call a ClientConn makes, unary
 * or stream, counted once with its status, as grpc-go's own stats handlers
 * see them (stats.Begin and stats.End are per attempt too).
 *
 * Start: google.golang.org/grpc.(*csAttempt).getTransport(a), on the
 *        caller's goroutine, once per attempt, before the transport is
 *        picked: an attempt that never reaches a server (connection
 *        refused, no address, deadline while connecting) is counted too.
 * End:   (*csAttempt).finish(a, err), the first call per attempt (grpc-go
 *        ignores later ones through a.finished; so does the probe, whose
 *        entry is gone by then). It is called from (*clientStream).finish
 *        for an attempt that got a stream, on whichever goroutine ends the
 *        call (a stream's reader, or its context watcher), and from
 *        retryLocked for a failed attempt, including the last one of a
 *        call that never got a stream (which never reaches
 *        clientStream.finish). Attempts are keyed by (tgid, a), not by
 *        goroutine.
 * Status: err nil: OK; a *internal/status.Error: its s.s.Code; anything
 *        else: Unknown (what status.Code says of it). io.EOF is special:
 *        only retryLocked passes it (clientStream.finish turns it into nil
 *        first), for a SendMsg that found the stream already ended by the
 *        server, and the status is then still in the stream: the attempt
 *        stays open until the clientStream.finish that RecvMsg (or the
 *        stream's context) brings, whose err carries it. grpc-go's own stats
 *        handlers report such an attempt as OK; the client sees the status.
 * Probe hits, all on the prologue's PUSHQ BP: two per attempt that ends OK;
 * three when it fails before a response committed it (retryLocked finishes
 * it, then clientStream.finish calls finish again, a no-op for grpc-go and
 * the probe) or after a SendMsg io.EOF. A call that is not retried is one
 * attempt.
 * An attempt whose csAttempt is collected without finish (a stream its user
 * abandoned: grpc-go leaks it too) holds its slot until the address is
 * reused by a new attempt (counted: start_without_end) or the process
 * exits; a per-process budget bounds what one process can hold.
 * With --propagate=tcp (goconn.h), a third site: the entry of the loopy
 *        writer's clientHeaderHandler(l, hdr) (grpc-go v1.82.1+), one hit
 *        per stream on the goroutine that writes its HEADERS: the stream's
 *        attempt's context goes on the connection, its stream in the span
 *        ID's low bits (rpc_client_stream).
 * An attempt not sampled for a span is counted in the kernel (metrics.h)
 * under (tgid, code, hash of its method and authority); a record goes out
 * only for a sampled one, or one whose method or authority is too long to
 * keep.
 */
#include "obsd.h"
#include "tracectx.h"
#include "goconn.h"
#include "metrics.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define METHOD_MAX 128
#define HOST_MAX 128

/* Field offsets, rewritten per target binary by internal/uprobes. */
volatile const u64 off_attempt_cs = OFF_NONE;     /* grpc.csAttempt.cs */
volatile const u64 off_cs_callhdr = OFF_NONE;     /* grpc.clientStream.callHdr */
volatile const u64 off_callhdr_host = OFF_NONE;   /* transport.CallHdr.Host */
volatile const u64 off_callhdr_method = OFF_NONE; /* transport.CallHdr.Method */
volatile const u64 off_error_s = OFF_NONE;        /* internal/status.Error.s */
volatile const u64 off_status_s = OFF_NONE;       /* internal/status.Status.s */
volatile const u64 off_spb_code = OFF_NONE;       /* genproto rpc/status.Status.Code */
volatile const u64 off_errorstring_s = OFF_NONE;  /* errors.errorString.s */
/* Link-time addresses, set by the loader: the Error method of the two
 * error types finish tells apart (an itab's first method slot holds it),
 * and the end program's site, for the load bias of a PIE. */
volatile const u64 status_error_fn = 0;
volatile const u64 errorstring_fn = 0;
volatile const u64 end_site_vaddr = 0;
/* The attempt's context (csAttempt.ctx, an interface): walked for the
 * server span the call was made under (tracectx.h). */
volatile const u64 off_attempt_ctx = OFF_NONE;
/* --propagate=tcp (goconn.h): from the loopy writer's HEADERS of a new
 * stream back to its attempt, and the connection. grpc-go v1.82.1+ only
 * (clientHeaders; Stream embedded by value, so hdr.wq points into it). */
volatile const u64 off_clienthdrs_streamid = OFF_NONE; /* transport.clientHeaders.streamID */
volatile const u64 off_clienthdrs_wq = OFF_NONE;       /* transport.clientHeaders.wq, &stream.wq */
volatile const u64 off_tstream_wq = OFF_NONE;          /* transport.Stream.wq */
volatile const u64 off_tstream_ctx = OFF_NONE;         /* transport.Stream.ctx, an interface */
volatile const u64 off_loopy_conn = OFF_NONE;          /* transport.loopyWriter.conn, a net.Conn */
volatile const u64 stream_site_vaddr = 0;
/* Per-process budget of attempts in flight in the map every process shares. */
volatile const s64 budget_calls = 16384;

#define FLAG_METHOD_TRUNCATED 1
#define FLAG_HOST_TRUNCATED 2
#define FLAG_SAMPLED 4
#define FLAG_OTHER_ERROR 8 /* err was neither a status error nor io.EOF */

/* The status codes finish can derive without a status (codes.Code). */
#define CODE_OK 0
#define CODE_UNKNOWN 2
/* status_code's answer for io.EOF: no status yet (see the top). */
#define CODE_EOF (-2)

/* A record is this header followed by method_len bytes of the method and
 * host_len bytes of the authority. */
struct rpc_client_event {
	u64 start_ns;
	u64 end_ns;
	u64 trace_id_low; /* when FLAG_SAMPLED */
	u32 tgid;
	u32 code; /* grpc status code */
	u16 method_len;
	u16 host_len;
	u8 flags;
	u8 trace; /* TR_* */
	u8 _pad[2];
	u64 trace_id_high;
	u64 span_id;
	u64 parent_span_id; /* 0: a root */
};

struct scratch {
	struct rpc_client_event h;
	char data[METHOD_MAX + HOST_MAX];
};

struct call_key {
	u64 attempt; /* *csAttempt */
	u32 tgid;
	u32 _pad;
};

struct call {
	u64 start_ns;
	u64 actx; /* --propagate=tcp: the attempt's context (data word), in rpc_client_ctx */
	struct trace_ctx tc; /* with spans only */
};

/* Attempts in flight. A plain hash, not an LRU: an LRU would drop a long
 * stream's start silently; here a full map or budget is a counted loss. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct call_key);
	__type(value, struct call);
} rpc_client_calls SEC(".maps");

/* --propagate=tcp: an attempt's context (csAttempt.ctx's data word) to the
 * attempt, for the stream's HEADERS written on another goroutine, whose
 * stream context is a child of it. One entry per rpc_client_calls entry
 * of a sender process, deleted with it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ctx_key);
	__type(value, u64);
} rpc_client_ctx SEC(".maps");

/* Entries of rpc_client_calls per process, against budget_calls. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, s64);
} rpc_client_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} rpc_client_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* A series of rpc_client_metrics: the method and authority are
 * rpc_client_names's entry under (tgid, names). */
struct rpc_client_metric_key {
	u32 tgid;
	u32 code;
	u64 names; /* name_hash of the method (a) and the authority (b) */
};

/* The name scratch: where the strings are read, zeroed past them. */
DECLARE_METRICS(rpc_client_metrics, rpc_client_names, rpc_client_series, rpc_client_name_scratch, struct rpc_client_metric_key, 16384);

/* Keeps these structs in BTF for bpf2go -type. */
const struct rpc_client_event *unused_rpc_client_event __attribute__((unused));
const struct rpc_client_metric_key *unused_rpc_client_metric_key __attribute__((unused));
const struct hist *unused_hist __attribute__((unused));
const struct obsd_name *unused_obsd_name __attribute__((unused));
const struct name_key *unused_name_key __attribute__((unused));
const struct call_key *unused_call_key __attribute__((unused));
const struct call *unused_call __attribute__((unused));

static __always_inline void forget_ctx(u32 tgid, u64 actx)
{
	struct ctx_key ck = {.ctx = actx, .tgid = tgid, ._pad = 0};
	bpf_map_delete_elem(&rpc_client_ctx, &ck);
}

static __always_inline s64 *budget_of(u32 tgid)
{
	s64 *b = bpf_map_lookup_elem(&rpc_client_budget, &tgid);
	if (b)
		return b;
	s64 fresh = 0;
	bpf_map_update_elem(&rpc_client_budget, &tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&rpc_client_budget, &tgid);
}

SEC("uprobe.multi")
int rpc_client_start(struct pt_regs *ctx)
{
	struct call_key key = {.attempt = GO_ARG1(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, ._pad = 0};
	struct call fresh = {};
	if (with_spans) {
		u64 actx = 0;
		if (off_attempt_ctx != OFF_NONE)
			bpf_probe_read_user(&actx, sizeof(actx), (void *)(key.attempt + off_attempt_ctx + 8));
		tc_child(key.tgid, actx, &fresh.tc);
		if (tcp_propagate && actx && goconn_sender(key.tgid)) {
			struct ctx_key ck = {.ctx = actx, .tgid = key.tgid, ._pad = 0};
			if (bpf_map_update_elem(&rpc_client_ctx, &ck, &key.attempt, BPF_ANY) == 0)
				fresh.actx = actx;
			else
				count(CNT_TCPCTX_OUT_FULL);
		}
	}
	fresh.start_ns = bpf_ktime_get_ns();
	struct call *c = bpf_map_lookup_elem(&rpc_client_calls, &key);
	if (c) {
		/* A csAttempt at this address never finished, and the Go GC has
		 * since reused its memory: that attempt is over, unreported. */
		count(CNT_STALE_START);
		if (c->actx && c->actx != fresh.actx)
			forget_ctx(key.tgid, c->actx);
		*c = fresh;
		return 0;
	}
	s64 *b = budget_of(key.tgid);
	if (!b || *b >= budget_calls) {
		count(CNT_INFLIGHT_BUDGET);
		return 0;
	}
	__sync_fetch_and_add(b, 1);
	if (bpf_map_update_elem(&rpc_client_calls, &key, &fresh, BPF_NOEXIST) != 0) {
		__sync_fetch_and_add(b, -1);
		count(CNT_INFLIGHT_FULL);
		if (fresh.actx)
			forget_ctx(key.tgid, fresh.actx);
	}
	return 0;
}

#define STREAM_CTX_WALK 4

/* The entry of (*loopyWriter).clientHeaderHandler(l, hdr), on the loopy
 * writer's goroutine just before it writes a new stream's HEADERS
 * (--propagate=tcp): the stream's context leads, up at most
 * STREAM_CTX_WALK parents (NewStream's peer value, a picker's metadata),
 * to its attempt's; the attempt's CLIENT span then gets the stream's bits
 * in its ID (goconn.h) and goes on the connection. A stream no attempt of
 * a sender made (a health check's) leaves the connection as it is: its
 * server finds another stream's bits. */
SEC("uprobe.multi")
int rpc_client_stream(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!tcp_propagate || !goconn_sender(tgid))
		return 0;
	if (off_clienthdrs_wq == OFF_NONE || off_clienthdrs_streamid == OFF_NONE || off_tstream_wq == OFF_NONE ||
	    off_tstream_ctx == OFF_NONE || off_loopy_conn == OFF_NONE) {
		count(CNT_TCPCTX_CONN); /* a release whose layout obsd does not know */
		return 0;
	}
	u64 l = GO_ARG1(ctx), hdr = GO_ARG2(ctx), wq = 0;
	u32 sid = 0;
	if (bpf_probe_read_user(&wq, sizeof(wq), (void *)(hdr + off_clienthdrs_wq)) != 0 || !wq ||
	    bpf_probe_read_user(&sid, sizeof(sid), (void *)(hdr + off_clienthdrs_streamid)) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	struct ctx_key ck = {.tgid = tgid, ._pad = 0};
	if (bpf_probe_read_user(&ck.ctx, sizeof(ck.ctx), (void *)(wq - off_tstream_wq + off_tstream_ctx + 8)) != 0)
		return 0;
	u64 *attempt = NULL;
	for (int i = 0; i < STREAM_CTX_WALK && ck.ctx; i++) {
		attempt = bpf_map_lookup_elem(&rpc_client_ctx, &ck);
		if (attempt)
			break;
		u64 parent[2]; /* a context's parent Context: itab, data (tracectx.h) */
		if (bpf_probe_read_user(parent, sizeof(parent), (void *)ck.ctx) != 0 || !parent[0])
			break;
		ck.ctx = parent[1];
	}
	if (!attempt)
		return 0;
	struct call_key key = {.attempt = *attempt, .tgid = tgid, ._pad = 0};
	struct call *c = bpf_map_lookup_elem(&rpc_client_calls, &key);
	if (!c || !c->tc.span)
		return 0;
	struct tcpctx_key k;
	if (goconn_key(l + off_loopy_conn, load_bias(ctx, stream_site_vaddr), &k) != 0)
		return 0;
	c->tc.span = goconn_stream_span(c->tc.span, sid);
	goconn_out_stream(&k, sid, &c->tc, tgid);
	return 0;
}

/* status_code derives codes.Code from finish's err, whose itab is itab
 * and data pointer data; FLAG_OTHER_ERROR is or'ed into *flags for an error
 * of another type. -1: memory unreadable; CODE_EOF: err is io.EOF. */
static __always_inline s64 status_code(struct pt_regs *ctx, u64 itab, u64 data, u8 *flags)
{
	if (!itab)
		return CODE_OK;
	/* An itab is {inter, _type, hash, _, fun[0], ...}: fun[0] at 24 is
	 * the type's Error method, the only method of error. */
	u64 fn = 0;
	if (bpf_probe_read_user(&fn, sizeof(fn), (void *)(itab + 24)) != 0)
		return -1;
	fn -= load_bias(ctx, end_site_vaddr);
	if (status_error_fn && fn == status_error_fn) {
		u64 st = 0, pb = 0;
		__s32 code = 0;
		if (bpf_probe_read_user(&st, sizeof(st), (void *)(data + off_error_s)) != 0)
			return -1;
		if (!st) /* (*Status)(nil).Code() is OK */
			return CODE_OK;
		if (bpf_probe_read_user(&pb, sizeof(pb), (void *)(st + off_status_s)) != 0)
			return -1;
		if (!pb)
			return CODE_OK;
		if (bpf_probe_read_user(&code, sizeof(code), (void *)(pb + off_spb_code)) != 0)
			return -1;
		return (u32)code;
	}
	if (errorstring_fn && fn == errorstring_fn) {
		/* io.EOF is errors.New("EOF"). */
		struct go_string s = {};
		char b[4] = {};
		if (bpf_probe_read_user(&s, sizeof(s), (void *)(data + off_errorstring_s)) != 0)
			return -1;
		if (s.len == 3 && bpf_probe_read_user(b, 3, (void *)s.ptr) == 0 && b[0] == 'E' && b[1] == 'O' &&
		    b[2] == 'F')
			return CODE_EOF;
	}
	*flags |= FLAG_OTHER_ERROR;
	return CODE_UNKNOWN;
}

SEC("uprobe.multi")
int rpc_client_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 a = GO_ARG1(ctx);
	struct call_key key = {.attempt = a, .tgid = bpf_get_current_pid_tgid() >> 32, ._pad = 0};
	struct call *c = bpf_map_lookup_elem(&rpc_client_calls, &key);
	if (!c)
		return 0; /* a later finish of the same attempt, or attached mid-call */
	u64 start = c->start_ns;
	u64 actx = c->actx;
	struct trace_ctx tc = c->tc;
	u8 flags = 0;
	s64 code = status_code(ctx, GO_ARG2(ctx), GO_ARG3(ctx), &flags);
	if (code == CODE_EOF)
		return 0; /* the status comes with this attempt's next finish */
	if (bpf_map_delete_elem(&rpc_client_calls, &key) != 0)
		return 0; /* another CPU's finish of the same attempt won */
	if (actx)
		forget_ctx(key.tgid, actx);
	s64 *b = bpf_map_lookup_elem(&rpc_client_budget, &key.tgid);
	if (b)
		__sync_fetch_and_add(b, -1);
	if (code < 0) {
		count(CNT_READ_FAILED);
		return 0;
	}

	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&rpc_client_scratch, &zero);
	struct obsd_name *nm = bpf_map_lookup_elem(&rpc_client_name_scratch, &zero);
	if (!sc || !nm)
		return 0;
	struct rpc_client_event *e = &sc->h;

	/* Host and Method are adjacent in every grpc-go release (0 and 16):
	 * one read gets both. */
	u64 cs = 0, hdr = 0;
	struct {
		struct go_string host;
		struct go_string method;
	} h = {};
	long err = bpf_probe_read_user(&cs, sizeof(cs), (void *)(a + off_attempt_cs));
	if (err == 0 && cs)
		err = bpf_probe_read_user(&hdr, sizeof(hdr), (void *)(cs + off_cs_callhdr));
	if (err == 0 && hdr) {
		if (off_callhdr_method == off_callhdr_host + 16) {
			err = bpf_probe_read_user(&h, sizeof(h), (void *)(hdr + off_callhdr_host));
		} else {
			err = bpf_probe_read_user(&h.host, sizeof(h.host), (void *)(hdr + off_callhdr_host));
			err |= bpf_probe_read_user(&h.method, sizeof(h.method), (void *)(hdr + off_callhdr_method));
		}
	}
	if (err != 0 || !hdr) {
		count(CNT_READ_FAILED);
		return 0;
	}
	u32 mn = h.method.len < METHOD_MAX ? (u32)h.method.len : METHOD_MAX;
	u32 hn = h.host.len < HOST_MAX ? (u32)h.host.len : HOST_MAX;
	if (h.method.len > METHOD_MAX)
		flags |= FLAG_METHOD_TRUNCATED;
	if (h.host.len > HOST_MAX)
		flags |= FLAG_HOST_TRUNCATED;
	/* Zeroed past the strings, for the hash. */
	__builtin_memset(nm, 0, sizeof(*nm));
	if (mn > 0 && bpf_probe_read_user(nm->name, mn, (void *)h.method.ptr) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	/* Bounds for the verifier: off <= METHOD_MAX, hn <= HOST_MAX, within
	 * the name's NAME_MAX_LEN. The empty asm keeps clang from dropping a
	 * check it proves redundant. */
	u32 off = mn;
	asm volatile("" : "+r"(off));
	if (off > METHOD_MAX)
		off = METHOD_MAX;
	if (hn > HOST_MAX)
		hn = HOST_MAX;
	if (hn > 0 && bpf_probe_read_user(nm->name + off, hn, (void *)h.host.ptr) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	/* Head-sampled at the start, or kept: any status but OK is a client
	 * span's error (semconv). */
	int sampled = tc_end(&tc, end - start, code != CODE_OK);
	if (metrics_on() && !sampled && !(flags & (FLAG_METHOD_TRUNCATED | FLAG_HOST_TRUNCATED))) {
		/* The common case: counted here, no record. */
		nm->len_a = mn;
		nm->len_b = hn;
		struct rpc_client_metric_key mk = {.tgid = key.tgid, .code = (u32)code, .names = name_hash(nm)};
		if (hist_count(&rpc_client_metrics, &rpc_client_names, &rpc_client_series, &mk, key.tgid, mk.names, nm,
			       end - start))
			return 0;
	}
	__builtin_memcpy(sc->data, nm->name, METHOD_MAX + HOST_MAX);

	e->trace_id_low = 0;
	e->trace_id_high = 0;
	e->span_id = 0;
	e->parent_span_id = 0;
	e->trace = 0;
	if (sampled) {
		flags |= FLAG_SAMPLED;
		tc_fill(e, tc);
	}
	e->start_ns = start;
	e->end_ns = end;
	e->tgid = key.tgid;
	e->code = (u32)code;
	e->method_len = mn;
	e->host_len = hn;
	e->flags = flags;
	e->_pad[0] = e->_pad[1] = 0;
	u32 used = mn + hn;
	if (used > METHOD_MAX + HOST_MAX) /* bounds for the verifier */
		used = METHOD_MAX + HOST_MAX;
	/* No wakeup: the reader polls. */
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + used, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
	return 0;
}
