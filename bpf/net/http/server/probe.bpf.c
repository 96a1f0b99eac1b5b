//go:build ignore

/* net/http server: every HTTP/1 and HTTP/2 request net/http (or x/net's
 * http2 server) parsed, counted once.
 *
 * Start: net/http.serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request),
 *        or (*response).sendExpectationFailed(w) for a request net/http
 *        answers itself (417, unsupported Expect) without the handler.
 * End:   net/http.(*response).finishRequest(w *response), which conn.serve
 *        calls right after ServeHTTP returns, on the same goroutine; or,
 *        for requests that never get there:
 *        (*response).Hijack(w): the handler takes the connection (WebSocket,
 *        any Upgrade, x/net h2c); reported with the status written before
 *        the hijack, else 101;
 *        (*conn).close(c): once per connection, from conn.serve's deferred
 *        recover; a request still in flight there was ended by a panic
 *        (http.ErrAbortHandler included) or runtime.Goexit: reported as 500.
 * HTTP/2 (bundled in net/http as http2* up to Go 1.26, net/http/internal/
 * http2 from 1.27, and golang.org/x/net/http2):
 * Start: serverHandler.ServeHTTP as above, with the h2 ResponseWriter (TLS
 *        via initALPNRequest, h2c via Server.Protocols, 1.27's adapter);
 *        or x/net's (*serverConn).runHandler, for x/net servers that call
 *        the handler directly (h2c.NewHandler, ServeConn).
 * End:   (*responseWriter).handlerDone(w), which runHandler's deferred
 *        function calls after the handler returns, on the same goroutine;
 *        status from w.rws.status (0: handlerDone writes 200). Or, when the
 *        handler panicked (handlerDone is skipped), handlerPanicRST's
 *        writeFrame on the connection's serving goroutine, as the stream is
 *        reset: reported as 500, like an HTTP/1 panic.
 * Every probe sits on the prologue's PUSHQ BP (emulated, not single-stepped).
 * In-flight state is keyed by (tgid, g) for HTTP/1: a goroutine runs one
 * request at a time. A keep-alive request costs exactly two hits (start,
 * finishRequest); close and Hijack run once per connection. An HTTP/2
 * request is keyed by (tgid, serverConn, stream id), which every one of its
 * sites can compute: also two hits (ServeHTTP or runHandler, handlerDone).
 */
#include "obsd.h"
#include "tracectx.h"
#include "goconn.h"
#include "route.h"
#include "metrics.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define METHOD_MAX 16
#define PATH_MAX_LEN 128
#define PATTERN_MAX 128

/* Field offsets, rewritten per target binary by internal/uprobes. */
volatile const u64 off_request_method = OFF_NONE;
volatile const u64 off_request_url = OFF_NONE;
volatile const u64 off_request_pattern = OFF_NONE; /* Go 1.23+ */
volatile const u64 off_request_pat = OFF_NONE;     /* Go 1.22+ */
volatile const u64 off_request_tls = OFF_NONE;
volatile const u64 off_pattern_str = OFF_NONE; /* Go 1.22+ */
volatile const u64 off_url_path = OFF_NONE;
volatile const u64 off_response_req = OFF_NONE;
volatile const u64 off_response_status = OFF_NONE;
volatile const u64 off_request_proto_major = OFF_NONE;
volatile const u64 off_request_proto_minor = OFF_NONE;
/* HTTP/2: net/http's own (bundled, or net/http/internal/http2 in 1.27) and
 * golang.org/x/net/http2's (xh2_). OFF_NONE: that server is not in the
 * binary, or its offsets are unknown (a stripped x/net server). */
volatile const u64 off_h2_w_rws = OFF_NONE;      /* responseWriter.rws */
volatile const u64 off_h2_rws_stream = OFF_NONE; /* responseWriterState.stream */
volatile const u64 off_h2_rws_conn = OFF_NONE;   /* responseWriterState.conn */
volatile const u64 off_h2_rws_status = OFF_NONE; /* responseWriterState.status */
volatile const u64 off_h2_stream_sc = OFF_NONE;  /* stream.sc */
volatile const u64 off_h2_stream_id = OFF_NONE;  /* stream.id */
volatile const u64 off_h2_sc_conn = OFF_NONE;    /* serverConn.conn, a net.Conn: --propagate=tcp */
volatile const u64 off_xh2_w_rws = OFF_NONE;
volatile const u64 off_xh2_rws_stream = OFF_NONE;
volatile const u64 off_xh2_rws_conn = OFF_NONE;
volatile const u64 off_xh2_rws_status = OFF_NONE;
volatile const u64 off_xh2_stream_sc = OFF_NONE;
volatile const u64 off_xh2_stream_id = OFF_NONE;
volatile const u64 off_xh2_sc_conn = OFF_NONE;
volatile const u64 off_request_header = OFF_NONE;
volatile const u64 off_request_ctx = OFF_NONE; /* an interface: data word at +8 */
/* --propagate=tcp (goconn.h): the HTTP/1 connection of a *response. */
volatile const u64 off_response_conn = OFF_NONE; /* response.conn, *conn */
volatile const u64 off_conn_rwc = OFF_NONE;      /* conn.rwc, the net.Conn */
/* With spans on (with_spans, tracectx.h), each request's trace context is
 * decided at its start from its traceparent header, if any, and the
 * sampler. A sampled request becomes a record with its URL path (spans
 * carry url.path); the others are counted like requests without spans. */
/* Link-time addresses, set by the loader: the .rodata section, where Go
 * keeps string literals, and each program's attach site. A site and
 * ctx->ip give the load bias of a PIE binary. rodata_end == 0 disables
 * in-kernel metrics. */
volatile const u64 rodata_start = 0;
volatile const u64 rodata_end = 0;
volatile const u64 end_site_vaddr = 0;
volatile const u64 hijack_site_vaddr = 0;
volatile const u64 close_site_vaddr = 0;
volatile const u64 h2_end_site_vaddr = 0;
volatile const u64 h2_panic_site_vaddr = 0;
volatile const u64 xh2_end_site_vaddr = 0;
volatile const u64 xh2_start_site_vaddr = 0;
volatile const u64 xh2_panic_site_vaddr = 0;
/* The itab of *response as a ResponseWriter and the start program's site,
 * both link-time, set by the loader when the binary gives the itab (0:
 * not known, read memory instead). */
volatile const u64 response_writer_itab = 0;
volatile const u64 start_site_vaddr = 0;
volatile const u64 expect_site_vaddr = 0;
/* Per-process budgets in the maps every process on the node shares: one
 * process (or one client of it) cannot fill them for the others. */
volatile const s64 budget_slots = 32768;
volatile const s64 budget_series = 2048;

#define FLAG_PATH_TRUNCATED 1
#define FLAG_PATTERN_TRUNCATED 2
#define FLAG_READ_FAILED 4
#define FLAG_SAMPLED 8
#define FLAG_TLS 16      /* the request came over TLS (records only) */
#define FLAG_HIJACKED 32 /* ended by Hijack */
#define FLAG_ABORTED 64  /* ended by the connection's close: panic */
#define FLAG_METHOD_TRUNCATED 128 /* the method was longer than METHOD_MAX */

/* The protocol version as one byte, major << 4 | minor (HTTP/1.1: 0x11,
 * HTTP/2: 0x20); 0 when unknown. */
static __always_inline u8 proto_byte(s64 major, s64 minor)
{
	if (major < 0 || major > 15 || minor < 0 || minor > 15)
		return 0;
	return (u8)(major << 4 | minor);
}

/* Status codes the probe reports for requests that never reach
 * finishRequest (see the top of this file). */
#define STATUS_HIJACKED 101
#define STATUS_ABORTED 500

/* Standard methods as a small number: the in-kernel key holds this, never
 * the method's bytes. M_OTHER is any other method. */
enum method_id {
	M_OTHER = 0,
	M_GET,
	M_HEAD,
	M_POST,
	M_PUT,
	M_DELETE,
	M_CONNECT,
	M_OPTIONS,
	M_TRACE,
	M_PATCH,
};

/* A record is this header followed by pattern_len bytes of the pattern and
 * path_len bytes of the path. Records carry only the bytes used: every
 * record's cache lines travel from the target's CPU to the reader's, which
 * costs the target more than writing them. */
struct http_server_event {
	u64 start_ns;
	u64 end_ns;
	u32 tgid;
	u16 status;
	u8 method_len;
	u8 flags;
	u16 path_len;
	u16 pattern_len;
	u8 proto; /* proto_byte */
	u8 route_kind; /* enum route_kind: the pattern is that router's route (route.h) */
	u8 _pad[2];
	u64 trace_id_low; /* when FLAG_SAMPLED: bytes 8..15 of the trace ID, big-endian value */
	u64 trace_id_high; /* bytes 0..7 */
	u64 span_id;
	u64 parent_span_id; /* 0: a root */
	u8 trace;           /* TR_* (tracectx.h) */
	u8 _pad2;
	u16 tracestate_len; /* bytes of tracestate after the path */
	u32 _pad3;
	char method[METHOD_MAX];
};

/* Where a record is assembled before it is copied into the ring. */
struct scratch {
	struct http_server_event h;
	char data[PATTERN_MAX + PATH_MAX_LEN + TRACESTATE_MAX];
};

/* HTTP/1: g is the goroutine, stream 0. HTTP/2: g is the *serverConn,
 * stream the stream's id (never 0). */
struct inflight_key {
	u64 g;
	u32 tgid;
	u32 stream;
};

struct inflight {
	u64 start_ns;
	u64 req; /* *http.Request, == w.req at the end */
	u64 url; /* req.URL */
	u8 method_len;
	u8 flags;
	u8 method_id; /* enum method_id */
	u8 proto;     /* proto_byte */
	u8 _pad[4];
	char method[METHOD_MAX]; /* method_len bytes are the method's */
	struct trace_ctx tc;     /* with spans only */
	u64 ctx;                 /* Request.ctx's data word, published as a parent (tracectx.h) */
};

/* One slot per goroutine serving an HTTP/1 connection. A slot is reused in
 * place for the connection's next request (no inserts or deletes on the
 * keep-alive path); start_ns == 0 is idle. The connection's close, or a
 * hijack, deletes it. A plain hash, not an LRU: an LRU would evict busy
 * slots silently; here a full map or budget is counted as a loss.
 * Preallocated (as the LRU was): an insert then never fails for want of
 * memory when many connections open at once.
 * User space counts the busy slots for http_server_active_requests. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} http_server_inflight SEC(".maps");

/* What each process holds in the shared maps, against its budget. Created
 * by the probe on a process's first insert, deleted by user space when the
 * process is detached. */
struct budget {
	s64 slots;  /* entries of http_server_inflight */
	s64 series; /* entries of http_server_metrics */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, struct budget);
} http_server_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} http_server_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* In-kernel metrics. Without spans, a request routed by a ServeMux
 * pattern that is a string literal (it lives in .rodata for the life of the
 * process) is counted here, keyed by the pattern's link-time address, and
 * needs no record: no ring-buffer traffic, no work in user space. User
 * space reads the pattern from the executable file and the sums at scrape
 * time. Anything else (fallback routes, patterns built at run time, a full
 * map or budget) still becomes a record, so nothing is dropped.
 * The key is canonical: every byte is set (no padding left to chance), the
 * method is an enum_method_id, so one series has one key. */
struct http_server_metric_key {
	u32 tgid;
	u16 status;
	u8 method; /* enum method_id */
	u8 proto;  /* proto_byte */
	u32 pattern_len;
	u8 route_kind; /* enum route_kind: pattern is then the route's hash (route.h) */
	u8 _pad2[3];
	u64 pattern; /* link-time address of the pattern's bytes, or a route's hash */
};

/* The names of the routes counted in the kernel, by process and hash:
 * written with a route's first series, read by user space at scrape time,
 * deleted with the process. */
struct route_name_key {
	u32 tgid;
	u32 _pad;
	u64 hash;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_name_key);
	__type(value, struct route);
} http_server_route_names SEC(".maps");

/* The duration bounds (duration_bounds_ns) and the bucket arithmetic are
 * metrics.h's; this probe keys and budgets its series itself. The value is
 * laid out as metrics.h's struct hist. */
struct http_server_metric {
	u64 buckets[DURATION_BOUNDS + 1]; /* non-cumulative; the last is +Inf */
	u64 sum_ns;
};

/* Per CPU, so the hot path needs no atomics; no preallocation, so memory
 * follows the series in use rather than max_entries times the CPUs. An
 * insert can then fail for a moment when many new series arrive at once
 * (the kernel refills its per-CPU caches asynchronously): counted as
 * metrics_map_full, the request sent as a record, the next one retries. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct http_server_metric_key);
	__type(value, struct http_server_metric);
} http_server_metrics SEC(".maps");

/* Keeps these structs in BTF for bpf2go -type. */
const struct http_server_event *unused_http_server_event __attribute__((unused));
const struct http_server_metric_key *unused_http_server_metric_key __attribute__((unused));
const struct http_server_metric *unused_http_server_metric __attribute__((unused));
const struct inflight *unused_inflight __attribute__((unused));
const struct budget *unused_budget __attribute__((unused));
const struct route *unused_route __attribute__((unused));
const struct route_name_key *unused_route_name_key __attribute__((unused));

/* budget_of returns tgid's budget entry, creating it; NULL when the budget
 * map itself is full. */
static __always_inline struct budget *budget_of(u32 tgid)
{
	struct budget *b = bpf_map_lookup_elem(&http_server_budget, &tgid);
	if (b)
		return b;
	struct budget fresh = {};
	bpf_map_update_elem(&http_server_budget, &tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&http_server_budget, &tgid);
}

/* take reserves one entry of a budget; 0 when it is spent. Concurrent
 * takers may overshoot by at most one per CPU, which is harmless. */
static __always_inline int take(s64 *used, s64 limit)
{
	if (*used >= limit)
		return 0;
	__sync_fetch_and_add(used, 1);
	return 1;
}


/* method_id classifies the n bytes of a method at m (which holds at least
 * 8 bytes; those past n are ignored). */
static __always_inline u8 method_id(const char *m, u32 n)
{
	if (n < 3 || n > 7)
		return M_OTHER;
	u64 v;
	__builtin_memcpy(&v, m, 8);
	v &= (1ULL << (8 * n)) - 1;
	switch (n) {
	case 3:
		if (v == M3('G', 'E', 'T'))
			return M_GET;
		if (v == M3('P', 'U', 'T'))
			return M_PUT;
		break;
	case 4:
		if (v == M4('P', 'O', 'S', 'T'))
			return M_POST;
		if (v == M4('H', 'E', 'A', 'D'))
			return M_HEAD;
		break;
	case 5:
		if (v == M5('P', 'A', 'T', 'C', 'H'))
			return M_PATCH;
		if (v == M5('T', 'R', 'A', 'C', 'E'))
			return M_TRACE;
		break;
	case 6:
		if (v == M6('D', 'E', 'L', 'E', 'T', 'E'))
			return M_DELETE;
		break;
	case 7:
		if (v == M7('O', 'P', 'T', 'I', 'O', 'N', 'S'))
			return M_OPTIONS;
		if (v == M7('C', 'O', 'N', 'N', 'E', 'C', 'T'))
			return M_CONNECT;
		break;
	}
	return M_OTHER;
}

/* count_request adds one request to the in-kernel metrics; 0 when it
 * could not (map full or the process's budget spent). */
static __always_inline int count_request(struct http_server_metric_key *k, u64 d, struct route *rt)
{
	struct http_server_metric *v = bpf_map_lookup_elem(&http_server_metrics, k);
	if (!v) {
		struct budget *b = budget_of(k->tgid);
		if (!b || !take(&b->series, budget_series)) {
			count(CNT_METRICS_BUDGET);
			return 0;
		}
		if (rt) {
			/* A route's name, before its first series: user space
			 * must be able to name every series it reads. */
			struct route_name_key nk = {.tgid = k->tgid, .hash = k->pattern};
			long err = bpf_map_update_elem(&http_server_route_names, &nk, rt, BPF_NOEXIST);
			if (err != 0 && err != -17 /* EEXIST */) {
				__sync_fetch_and_add(&b->series, -1);
				count(CNT_METRICS_FULL);
				return 0;
			}
		}
		struct http_server_metric fresh = {};
		/* EEXIST: another CPU added the key meanwhile; the lookup finds it
		 * (and this CPU's reservation stays taken, a bounded overcount). */
		bpf_map_update_elem(&http_server_metrics, k, &fresh, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&http_server_metrics, k);
		if (!v) {
			__sync_fetch_and_add(&b->series, -1);
			count(CNT_METRICS_FULL);
			return 0;
		}
	}
	_Static_assert(sizeof(struct http_server_metric) == sizeof(struct hist), "laid out as struct hist");
	hist_add((struct hist *)v, d);
	return 1;
}

static __always_inline struct inflight_key key_of(struct pt_regs *ctx)
{
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, .stream = 0};
	return key;
}

/* tcp_parent takes the context the caller's obsd sent on the HTTP/1
 * connection of the *response w (--propagate=tcp) as tc's parent; with tc
 * NULL, only marks it taken. */
static __noinline void tcp_parent(u64 w, u64 bias, struct trace_ctx *tc)
{
	u64 c = 0;
	struct tcpctx_key k;
	if (off_response_conn == OFF_NONE || off_conn_rwc == OFF_NONE ||
	    bpf_probe_read_user(&c, sizeof(c), (void *)(w + off_response_conn)) != 0 || !c) {
		count(CNT_TCPCTX_CONN);
		return;
	}
	if (goconn_key(c + off_conn_rwc, bias, &k) == 0)
		goconn_in(&k, tc);
}

/* tcp_parent_h2 takes the context the caller's obsd sent for HTTP/2 stream
 * id on the connection whose net.Conn is at h2conn (--propagate=tcp) as
 * tc's parent; goconn_in_stream's answer (0: the connection has no key). */
static __noinline int tcp_parent_h2(u64 h2conn, u32 id, u64 bias, struct trace_ctx *tc)
{
	struct tcpctx_key k;
	if (goconn_key(h2conn, bias, &k) != 0)
		return 0;
	return goconn_in_stream(&k, id, tc);
}

/* start records req as in flight under key: the current goroutine's for
 * HTTP/1, the stream's for HTTP/2. w is HTTP/1's *response (0 for HTTP/2),
 * bias the target's load bias, h2conn the address of an HTTP/2 request's
 * serverConn.conn (0: unknown, or HTTP/1). */
static __always_inline void start(struct inflight_key key, u64 req, u64 w, u64 bias, u64 h2conn)
{
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (in && in->start_ns && in->req == req && key.stream)
		/* The same HTTP/2 request again: x/net's server started it at
		 * runHandler and now calls net/http's serverHandler (an x/net
		 * server configured onto a net/http.Server). */
		return;
	if (!in) {
		/* A connection's first request (HTTP/1), or a stream's (HTTP/2):
		 * the slot's one insert. */
		struct budget *b = budget_of(key.tgid);
		if (!b || !take(&b->slots, budget_slots)) {
			count(CNT_INFLIGHT_BUDGET);
			goto lost;
		}
		struct inflight fresh = {};
		if (bpf_map_update_elem(&http_server_inflight, &key, &fresh, BPF_NOEXIST) != 0 ||
		    !(in = bpf_map_lookup_elem(&http_server_inflight, &key))) {
			__sync_fetch_and_add(&b->slots, -1);
			count(CNT_INFLIGHT_FULL);
			goto lost;
		}
	} else if (in->start_ns) {
		/* The goroutine's previous request was never ended: lost. */
		count(CNT_STALE_START);
	}

	/* Method, URL, Proto, ProtoMajor and ProtoMinor are adjacent in every
	 * Go release (0, 16, 24, 40, 48); one read then gets them all. The
	 * loader's constants make the other branch dead. */
	struct {
		struct go_string method;
		u64 url;
		struct go_string proto;
		s64 major;
		s64 minor;
		u64 header; /* Request.Header, with spans only */
	} hdr = {};
	long err;
	/* Header follows at 56 in every release: read with the rest only when
	 * spans need it. */
	if (off_request_url == off_request_method + 16 && off_request_proto_major == off_request_method + 40 &&
	    off_request_proto_minor == off_request_method + 48 &&
	    (!with_spans || off_request_header == off_request_method + 56)) {
		err = bpf_probe_read_user(&hdr, with_spans ? sizeof(hdr) : sizeof(hdr) - 8,
					  (void *)(req + off_request_method));
	} else {
		err = bpf_probe_read_user(&hdr.method, sizeof(hdr.method), (void *)(req + off_request_method));
		err |= bpf_probe_read_user(&hdr.url, sizeof(hdr.url), (void *)(req + off_request_url));
		err |= bpf_probe_read_user(&hdr.major, sizeof(hdr.major), (void *)(req + off_request_proto_major));
		err |= bpf_probe_read_user(&hdr.minor, sizeof(hdr.minor), (void *)(req + off_request_proto_minor));
		if (with_spans && off_request_header != OFF_NONE)
			err |= bpf_probe_read_user(&hdr.header, sizeof(hdr.header), (void *)(req + off_request_header));
	}
	in->proto = proto_byte(hdr.major, hdr.minor);
	in->flags = 0;
	in->method_len = 0;
	in->method_id = M_OTHER;
	u32 n = hdr.method.len < METHOD_MAX ? (u32)hdr.method.len : METHOD_MAX;
	if (hdr.method.len > METHOD_MAX)
		in->flags |= FLAG_METHOD_TRUNCATED;
	if (err != 0 || (n > 0 && bpf_probe_read_user(in->method, n, (void *)hdr.method.ptr) != 0)) {
		in->flags |= FLAG_READ_FAILED;
	} else {
		in->method_len = n;
		/* A method longer than METHOD_MAX is not standard, whatever its
		 * first bytes say. */
		if (hdr.method.len <= METHOD_MAX)
			in->method_id = method_id(in->method, n);
	}
	in->req = req;
	in->url = hdr.url;
	if (with_spans) {
		tc_start(err == 0 ? hdr.header : 0, &in->tc);
		if (tcp_propagate && w)
			tcp_parent(w, bias, &in->tc);
		else if (tcp_propagate && h2conn && tcp_parent_h2(h2conn, key.stream, bias, &in->tc) < 0)
			count(CNT_TCPCTX_STREAM);
		if (in->ctx) /* a start that found its slot's request still in flight */
			tc_forget(key.tgid, in->ctx);
		in->ctx = 0;
		if (off_request_ctx != OFF_NONE &&
		    bpf_probe_read_user(&in->ctx, sizeof(in->ctx), (void *)(req + off_request_ctx + 8)) == 0)
			tc_publish(key.tgid, in->ctx, &in->tc);
	}
	in->start_ns = bpf_ktime_get_ns();
	return;
lost:
	/* The request is lost (counted), but the context its caller sent is
	 * still its own: taken, so that no later request on the connection
	 * inherits it. */
	if (with_spans && tcp_propagate && w)
		tcp_parent(w, bias, 0);
}

/* report counts or sends the request in flight in in, ended at end with
 * status. w is the *response when known (its status was read by the
 * caller); site_vaddr is the calling program's site, for the load bias. */
static __always_inline void report(struct pt_regs *ctx, u64 site_vaddr, u32 tgid, struct inflight *in, u64 end,
				   u64 status, u8 flags)
{
	u64 start = in->start_ns, req = in->req, url = in->url;
	flags |= in->flags;
	if (in->ctx) { /* calls made under the request from now on start new traces */
		tc_forget(tgid, in->ctx);
		in->ctx = 0;
	}
	if (flags & FLAG_READ_FAILED) {
		/* Nothing trustworthy to report: a loss, not a 200 or a
		 * made-up route. */
		count(CNT_READ_FAILED);
		return;
	}

	/* Head-sampled at the start, or kept now for being slow or failing. */
	if (tc_end(&in->tc, end - start, status >= 500))
		flags |= FLAG_SAMPLED;

	/* The pattern's string header: in the Request (1.23+), or behind
	 * Request.pat (1.22). A pattern counts only when the mux registered
	 * it: Go 1.23-1.25 set Request.Pattern to the concrete target of the
	 * mux's own redirects, and every version does so for CONNECT, with
	 * Request.pat nil. In 1.23+ both lie within 40 bytes of each other, so
	 * one read gets them. */
	struct go_string pat = {};
	u64 patp = 1;
	long err = 0;
	/* A third-party router's route (route.h) names the request instead of
	 * any ServeMux pattern; without spans it is counted here, by hash. */
	struct route *rt = route_of(ctx, tgid, start);
	/* Or the request an inner ServeMux routed (net/http/servemux), whose
	 * pattern is read instead of this request's. */
	u64 preq = req;
	if (rt && rt->kind == ROUTE_SERVEMUX) {
		if (rt->req)
			preq = rt->req;
		rt = NULL;
	} else if (!rt && off_request_ctx != OFF_NONE && route_ctx_on()) {
		/* Or one on a goroutine of its own, by this request's context. */
		struct route_ctx_key k = {.tgid = tgid};
		struct route_ctx *v;
		if (bpf_probe_read_user(&k.ctx, sizeof(k.ctx), (void *)(req + off_request_ctx + 8)) == 0 && k.ctx &&
		    (v = bpf_map_lookup_elem(&obsd_shared_route_ctx, &k)) && v->at_ns >= start && v->req)
			preq = v->req;
	}
	if (rt) {
		if (!(flags & FLAG_SAMPLED)) {
			struct http_server_metric_key mk;
			__builtin_memset(&mk, 0, sizeof(mk));
			mk.tgid = tgid;
			mk.status = (u16)status;
			mk.method = in->method_id;
			mk.proto = in->proto;
			mk.route_kind = rt->kind;
			mk.pattern = rt->hash;
			mk.pattern_len = rt->len;
			if (count_request(&mk, end - start, rt))
				return;
		}
	} else if (off_request_pattern != OFF_NONE) {
		if (off_request_pat != OFF_NONE && off_request_pat >= off_request_pattern + 16 &&
		    off_request_pat - off_request_pattern <= 56) {
			u64 buf[8] = {};
			u64 span = off_request_pat - off_request_pattern + 8;
			if (span > sizeof(buf)) /* bounds for the verifier */
				span = sizeof(buf);
			err = bpf_probe_read_user(buf, span, (void *)(preq + off_request_pattern));
			pat.ptr = buf[0];
			pat.len = buf[1];
			u32 i = (off_request_pat - off_request_pattern) / 8;
			if (i > 7)
				i = 7;
			patp = buf[i];
		} else {
			err = bpf_probe_read_user(&pat, sizeof(pat), (void *)(preq + off_request_pattern));
			if (off_request_pat != OFF_NONE)
				err |= bpf_probe_read_user(&patp, sizeof(patp), (void *)(preq + off_request_pat));
		}
	} else if (off_request_pat != OFF_NONE) {
		err = bpf_probe_read_user(&patp, sizeof(patp), (void *)(preq + off_request_pat));
		if (!err && patp)
			err = bpf_probe_read_user(&pat, sizeof(pat), (void *)(patp + off_pattern_str));
	}
	if (err != 0) {
		count(CNT_READ_FAILED);
		return;
	}
	if (!patp)
		pat.len = 0;

	/* The common case ends here, before any record is assembled. */
	if (!(flags & FLAG_SAMPLED) && rodata_end && pat.len > 0 && pat.len <= PATTERN_MAX) {
		u64 va = pat.ptr - load_bias(ctx, site_vaddr);
		if (va >= rodata_start && va < rodata_end && pat.len <= rodata_end - va) {
			struct http_server_metric_key mk;
			__builtin_memset(&mk, 0, sizeof(mk));
			mk.tgid = tgid;
			mk.status = (u16)status;
			mk.method = in->method_id;
			mk.proto = in->proto;
			mk.pattern = va;
			mk.pattern_len = pat.len;
			if (count_request(&mk, end - start, NULL))
				return;
		}
	}

	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&http_server_scratch, &zero);
	if (!sc) /* cannot happen: a one-slot per-CPU array */
		return;
	struct http_server_event *e = &sc->h;
	e->start_ns = start;
	e->end_ns = end;
	e->tgid = tgid;
	e->status = (u16)status;
	e->method_len = in->method_len;
	__builtin_memcpy(e->method, in->method, METHOD_MAX);
	e->path_len = 0;
	e->pattern_len = 0;
	e->proto = in->proto;
	e->route_kind = 0;
	e->_pad[0] = e->_pad[1] = 0;
	e->trace_id_low = 0;
	e->trace_id_high = 0;
	e->span_id = 0;
	e->parent_span_id = 0;
	e->trace = 0;
	e->_pad2 = 0;
	e->tracestate_len = 0;
	e->_pad3 = 0;
	if (flags & FLAG_SAMPLED) {
		tc_fill(e, in->tc);
	}

	/* Records only: the scheme, from Request.TLS. */
	if (off_request_tls != OFF_NONE) {
		u64 tls = 0;
		if (bpf_probe_read_user(&tls, sizeof(tls), (void *)(req + off_request_tls)) == 0 && tls)
			flags |= FLAG_TLS;
	}

	u32 n = 0, used = 0;
	s64 full;
	if (pat.len > 0) {
		n = pat.len < PATTERN_MAX ? (u32)pat.len : PATTERN_MAX;
		if (bpf_probe_read_user(sc->data, n, (void *)pat.ptr) != 0) {
			count(CNT_READ_FAILED);
			return;
		}
		if (pat.len > n)
			flags |= FLAG_PATTERN_TRUNCATED;
		e->pattern_len = n;
		used = n;
	} else if (rt) {
		n = rt->len;
		if (n > ROUTE_MAX) /* bounds for the verifier; route_of checked */
			n = ROUTE_MAX;
		if (n > 0 && bpf_probe_read_kernel(sc->data, n, rt->name) != 0) {
			count(CNT_READ_FAILED);
			return;
		}
		if (rt->flags & ROUTE_TRUNCATED)
			flags |= FLAG_PATTERN_TRUNCATED;
		e->route_kind = rt->kind;
		e->pattern_len = n;
		used = n;
	}

	/* Metrics need the path only for the fallback route. */
	if ((flags & FLAG_SAMPLED) || used == 0) {
		if (used > PATTERN_MAX) /* bounds for the verifier */
			used = PATTERN_MAX;
		if (!url) {
			count(CNT_READ_FAILED);
			return;
		}
		full = read_go_string(sc->data + used, PATH_MAX_LEN, url + off_url_path, &n);
		if (full < 0) {
			count(CNT_READ_FAILED);
			return;
		}
		if (full > n)
			flags |= FLAG_PATH_TRUNCATED;
		e->path_len = n;
		used += n;
	}

	/* The incoming tracestate, for the span only. */
	if ((flags & FLAG_SAMPLED) && (in->tc.trace & TR_STATE)) {
		if (used > PATTERN_MAX + PATH_MAX_LEN) /* bounds for the verifier */
			used = PATTERN_MAX + PATH_MAX_LEN;
		u32 ts = in->tc.tracestate_len;
		if (ts > TRACESTATE_MAX)
			ts = TRACESTATE_MAX;
		if (ts > 0 && bpf_probe_read_user(sc->data + used, ts, (void *)in->tc.tracestate_ptr) == 0) {
			e->tracestate_len = ts;
			used += ts;
		}
	}

	e->flags = flags;
	if (used > PATTERN_MAX + PATH_MAX_LEN + TRACESTATE_MAX)
		used = PATTERN_MAX + PATH_MAX_LEN + TRACESTATE_MAX;
	/* No wakeup: the reader polls, which saves ~7 us per request. */
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + used, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
}

/* release deletes the goroutine's slot: its connection is done. */
static __always_inline void release(struct inflight_key *key)
{
	if (bpf_map_delete_elem(&http_server_inflight, key) != 0)
		return;
	struct budget *b = bpf_map_lookup_elem(&http_server_budget, &key->tgid);
	if (b)
		__sync_fetch_and_add(&b->slots, -1);
}

/* The offsets of one HTTP/2 server implementation's types. */
struct h2_offs {
	u64 w_rws, rws_stream, rws_conn, rws_status, stream_sc, stream_id;
	u64 sc_conn; /* --propagate=tcp only: not in h2_known */
};

static __always_inline struct h2_offs h2_std(void)
{
	struct h2_offs o = {off_h2_w_rws,	  off_h2_rws_stream, off_h2_rws_conn,	off_h2_rws_status,
			    off_h2_stream_sc, off_h2_stream_id,	 off_h2_sc_conn};
	return o;
}

static __always_inline struct h2_offs h2_xnet(void)
{
	struct h2_offs o = {off_xh2_w_rws,	   off_xh2_rws_stream, off_xh2_rws_conn,  off_xh2_rws_status,
			    off_xh2_stream_sc, off_xh2_stream_id,  off_xh2_sc_conn};
	return o;
}

static __always_inline int h2_known(struct h2_offs *o)
{
	return o->w_rws != OFF_NONE && o->rws_stream != OFF_NONE && o->rws_conn != OFF_NONE &&
	       o->rws_status != OFF_NONE && o->stream_sc != OFF_NONE && o->stream_id != OFF_NONE;
}

/* h2_key fills key with the HTTP/2 request whose *responseWriter is w:
 * (serverConn, stream id), from w.rws.stream. With status non-NULL it also
 * reads w.rws.status. Returns 0 unless w is a live HTTP/2 writer: its
 * stream's connection must be its own (rws.conn), its id non-zero, which
 * also tells an h2 writer from any other ResponseWriter. */
static __always_inline int h2_key(struct h2_offs *o, u64 w, struct inflight_key *key, u64 *status)
{
	u64 rws = 0, stream = 0, conn = 0, sc = 0;
	u32 id = 0;
	if (bpf_probe_read_user(&rws, sizeof(rws), (void *)(w + o->w_rws)) != 0 || !rws)
		return 0;
	if (bpf_probe_read_user(&stream, sizeof(stream), (void *)(rws + o->rws_stream)) != 0 || !stream ||
	    bpf_probe_read_user(&conn, sizeof(conn), (void *)(rws + o->rws_conn)) != 0)
		return 0;
	if (status && bpf_probe_read_user(status, sizeof(*status), (void *)(rws + o->rws_status)) != 0)
		return 0;
	if (bpf_probe_read_user(&sc, sizeof(sc), (void *)(stream + o->stream_sc)) != 0 ||
	    bpf_probe_read_user(&id, sizeof(id), (void *)(stream + o->stream_id)) != 0)
		return 0;
	if (!sc || sc != conn || !id)
		return 0;
	key->g = sc;
	key->tgid = bpf_get_current_pid_tgid() >> 32;
	key->stream = id;
	return 1;
}

/* h2_start starts the HTTP/2 request req whose writer is w; bias is the
 * target's load bias. */
static __always_inline void h2_start(struct h2_offs *o, u64 w, u64 req, u64 bias)
{
	if (!h2_known(o)) {
		/* An HTTP/2 server whose offsets are unknown: a loss, counted. */
		count(CNT_READ_FAILED);
		return;
	}
	struct inflight_key key = {};
	if (!h2_key(o, w, &key, NULL))
		return; /* not an HTTP/2 writer (a custom TLSNextProto's) */
	/* key.g is the *serverConn: its connection, for --propagate=tcp. */
	start(key, req, 0, bias, o->sc_conn != OFF_NONE ? key.g + o->sc_conn : 0);
}

/* h2_end ends the HTTP/2 request whose writer w finished its handler. */
static __always_inline void h2_end(struct pt_regs *ctx, struct h2_offs *o, u64 site_vaddr, u64 w)
{
	u64 end = bpf_ktime_get_ns();
	if (!h2_known(o))
		return; /* counted at the start */
	struct inflight_key key = {};
	u64 status = 0;
	if (!h2_key(o, w, &key, &status)) {
		count(CNT_READ_FAILED);
		return;
	}
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in || !in->start_ns) {
		/* Attached mid-request, or a request net/http's h2 server
		 * answers itself (431) without the handler. */
		count(CNT_UNMATCHED_END);
		return;
	}
	/* handlerDone's Flush writes 200 for a handler that wrote nothing. */
	if (status == 0)
		status = 200;
	report(ctx, site_vaddr, key.tgid, in, end, status, 0);
	release(&key);
}

/* h2_panic ends the HTTP/2 request on stream id of serverConn sc, whose
 * handler panicked. */
static __always_inline void h2_panic(struct pt_regs *ctx, u64 site_vaddr, u64 sc, u32 id)
{
	u64 end = bpf_ktime_get_ns();
	struct inflight_key key = {.g = sc, .tgid = bpf_get_current_pid_tgid() >> 32, .stream = id};
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in || !in->start_ns)
		return;
	report(ctx, site_vaddr, key.tgid, in, end, STATUS_ABORTED, FLAG_ABORTED);
	release(&key);
}

SEC("uprobe.multi")
int http_server_start(struct pt_regs *ctx)
{
	u64 req = GO_ARG4(ctx);
	u64 rw_data = GO_ARG3(ctx);
	if (!req || !rw_data)
		return 0;

	/* HTTP/1 requests end in (*response).finishRequest; HTTP/2 calls
	 * ServeHTTP with its own writer type. The itab register tells the type
	 * for free; without it, a *response always has w.req == req. */
	if (response_writer_itab) {
		if (GO_ARG2(ctx) != response_writer_itab + load_bias(ctx, start_site_vaddr))
			goto h2;
	} else {
		u64 wreq = 0;
		if (bpf_probe_read_user(&wreq, sizeof(wreq), (void *)(rw_data + off_response_req)) != 0 || wreq != req)
			goto h2;
	}
	start(key_of(ctx), req, rw_data, load_bias(ctx, start_site_vaddr), 0);
	return 0;
h2:;
	/* net/http's HTTP/2 writer: *http2responseWriter up to Go 1.26, an
	 * http2ResponseWriter{*http2.responseWriter} from 1.27, either way a
	 * pointer to a responseWriter in the data word. */
	struct h2_offs o = h2_std();
	h2_start(&o, rw_data, req, load_bias(ctx, start_site_vaddr));
	return 0;
}

/* (*http2responseWriter).handlerDone(w) (Go 1.21-1.26), or net/http/
 * internal/http2.(*responseWriter).handlerDone(w) (1.27). */
SEC("uprobe.multi")
int http_server_h2_end(struct pt_regs *ctx)
{
	struct h2_offs o = h2_std();
	h2_end(ctx, &o, h2_end_site_vaddr, GO_ARG1(ctx));
	return 0;
}

/* http2handlerPanicRST.writeFrame(hp, ctx writeContext): hp is the struct
 * {StreamID uint32} by value, ctx's data word the *serverConn. The handler
 * panicked; net/http recovered it and resets the stream. */
SEC("uprobe.multi")
int http_server_h2_panic(struct pt_regs *ctx)
{
	h2_panic(ctx, h2_panic_site_vaddr, GO_ARG3(ctx), (u32)GO_ARG1(ctx));
	return 0;
}

/* golang.org/x/net/http2.(*serverConn).runHandler(sc, rw, req, handler):
 * the start of x/net's requests, which may never pass net/http's
 * serverHandler (h2c.NewHandler calls the handler itself). */
SEC("uprobe.multi")
int http_server_xh2_start(struct pt_regs *ctx)
{
	u64 rw = GO_ARG2(ctx), req = GO_ARG3(ctx);
	if (!rw || !req)
		return 0;
	struct h2_offs o = h2_xnet();
	h2_start(&o, rw, req, load_bias(ctx, xh2_start_site_vaddr));
	return 0;
}

SEC("uprobe.multi")
int http_server_xh2_end(struct pt_regs *ctx)
{
	struct h2_offs o = h2_xnet();
	h2_end(ctx, &o, xh2_end_site_vaddr, GO_ARG1(ctx));
	return 0;
}

SEC("uprobe.multi")
int http_server_xh2_panic(struct pt_regs *ctx)
{
	h2_panic(ctx, xh2_panic_site_vaddr, GO_ARG3(ctx), (u32)GO_ARG1(ctx));
	return 0;
}

/* (*response).sendExpectationFailed(w): net/http answers 417 itself and
 * calls finishRequest, without the handler. The request starts here. */
SEC("uprobe.multi")
int http_server_expect(struct pt_regs *ctx)
{
	u64 w = GO_ARG1(ctx);
	u64 req = 0;
	if (!w || bpf_probe_read_user(&req, sizeof(req), (void *)(w + off_response_req)) != 0 || !req) {
		count(CNT_READ_FAILED);
		return 0;
	}
	start(key_of(ctx), req, w, load_bias(ctx, expect_site_vaddr), 0);
	return 0;
}

SEC("uprobe.multi")
int http_server_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 w = GO_ARG1(ctx);
	struct inflight_key key = key_of(ctx);
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in || !in->start_ns) {
		count(CNT_UNMATCHED_END);
		return 0;
	}
	/* The slot stays this goroutine's until its next start: its method
	 * bytes can be used by report. */
	u8 flags = 0;
	u64 status = 0;
	if (bpf_probe_read_user(&status, sizeof(status), (void *)(w + off_response_status)) != 0)
		flags |= FLAG_READ_FAILED;
	/* finishRequest writes 200 for a handler that wrote nothing. */
	if (status == 0)
		status = 200;
	report(ctx, end_site_vaddr, key.tgid, in, end, status, flags);
	in->start_ns = 0;
	return 0;
}

/* (*response).Hijack(w): the handler takes the connection; finishRequest
 * will not run. What the handler writes on the raw connection is out of
 * sight: the request is reported with the status written through the
 * ResponseWriter before the hijack, else 101 (what WebSocket and h2c
 * upgrades write), its duration ending at the hijack. */
SEC("uprobe.multi")
int http_server_hijack(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 w = GO_ARG1(ctx);
	struct inflight_key key = key_of(ctx);
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in || !in->start_ns) {
		/* Hijacked on another goroutine than the handler's, or attached
		 * mid-request. */
		count(CNT_UNMATCHED_END);
		return 0;
	}
	struct {
		u64 req;
		u64 status;
	} f = {};
	u8 flags = FLAG_HIJACKED;
	if (bpf_probe_read_user(&f.req, sizeof(f.req), (void *)(w + off_response_req)) != 0 ||
	    bpf_probe_read_user(&f.status, sizeof(f.status), (void *)(w + off_response_status)) != 0)
		flags |= FLAG_READ_FAILED;
	else if (f.req != in->req)
		return 0; /* not this goroutine's request: leave it be */
	if (f.status == 0)
		f.status = STATUS_HIJACKED;
	/* "PRI * HTTP/2.0" is the HTTP/2 connection preface, which x/net's
	 * h2c handler takes over: not a request; the requests that follow on
	 * the connection are counted as HTTP/2. */
	if (in->method_len == 3 && in->method[0] == 'P' && in->method[1] == 'R' && in->method[2] == 'I' &&
	    !(flags & FLAG_READ_FAILED)) {
		release(&key);
		return 0;
	}
	report(ctx, hijack_site_vaddr, key.tgid, in, end, f.status, flags);
	/* conn.serve returns after a hijack without closing: the slot goes
	 * now. */
	release(&key);
	return 0;
}

/* (*conn).close(c): once per connection, from conn.serve's deferred
 * function, on the serving goroutine. A request still in flight never
 * reached finishRequest or Hijack: its handler panicked (net/http
 * recovered it and drops the connection) or called runtime.Goexit. */
SEC("uprobe.multi")
int http_server_close(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	struct inflight_key key = key_of(ctx);
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in)
		return 0;
	if (in->start_ns)
		report(ctx, close_site_vaddr, key.tgid, in, end, STATUS_ABORTED, FLAG_ABORTED);
	release(&key);
	return 0;
}
