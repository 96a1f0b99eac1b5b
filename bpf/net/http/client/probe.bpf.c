//go:build ignore

/* net/http client: every round trip of an http.Transport, counted once.
 *
 * Start: entry of net/http.(*Transport).roundTrip(t, req *Request), on its
 *        PUSHQ BP. Every request an http.Transport sends passes there, once
 *        per hop: http.Client (each redirect hop is a new call), custom
 *        RoundTrippers that wrap a Transport, Transport.RoundTrip called
 *        directly, HTTP/1 and HTTP/2 (bundled h2 in Go 1.21-1.26,
 *        net/http/internal/http2 in 1.27, both reached from roundTrip).
 * End:   every RET of the same function (one link, one runs per call),
 *        where the results are still in their registers: AX = *Response,
 *        BX/CX = the error's itab and data. Nothing runs on the caller's
 *        goroutine between a successful persistConn.roundTrip (or h2
 *        RoundTrip) and roundTrip's return, so no later entry can end the
 *        call; a RET probe is the exact end (see the README for its cost).
 * In-flight state is keyed by (tgid, g): a goroutine runs one roundTrip at
 * a time, and R14 is g at the RET as at the entry.
 * With --propagate=tcp (goconn.h), a third site: the entry of
 *        (*persistConn).roundTrip(pc, treq), on the same goroutine once the
 *        HTTP/1 connection is chosen and before the writeLoop writes the
 *        request: the connection then carries the round trip's context
 *        (the server's parent) until the next request on it replaces it.
 *        HTTP/2 round trips never get there: a fourth site, the entry of
 *        the h2 client stream's encodeAndWriteHeaders, puts their context
 *        on the connection with the stream in the span ID (http_client_h2).
 * A round trip not sampled for a span is counted in the kernel (metrics.h)
 * under (tgid, status, error kind, protocol, hash of its method, scheme
 * and host): its path and query are never read. A record goes out for a
 * sampled one, or one whose method or host is too long to keep or whose
 * scheme is neither "http" nor "https".
 */
#include "obsd.h"
#include "tracectx.h"
#include "goconn.h"
#include "metrics.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define METHOD_MAX 16
#define SCHEME_MAX 8
#define HOST_MAX 128
#define PATH_MAX_LEN 128
#define QUERY_MAX 128

/* Field offsets, rewritten per target binary by internal/uprobes. */
volatile const u64 off_request_method = OFF_NONE;
volatile const u64 off_request_url = OFF_NONE;
volatile const u64 off_url_scheme = OFF_NONE;
volatile const u64 off_url_host = OFF_NONE;
volatile const u64 off_url_path = OFF_NONE;
volatile const u64 off_url_rawquery = OFF_NONE;
volatile const u64 off_response_statuscode = OFF_NONE;
volatile const u64 off_response_protomajor = OFF_NONE;
volatile const u64 off_response_protominor = OFF_NONE;
volatile const u64 off_operror_err = OFF_NONE;
volatile const u64 off_syscallerror_err = OFF_NONE;
volatile const u64 off_httperror_timeout = OFF_NONE;

volatile const u64 off_request_ctx = OFF_NONE; /* an interface: data word at +8 */
volatile const u64 off_persistconn_conn = OFF_NONE; /* --propagate=tcp: persistConn.conn, the net.Conn */
/* --propagate=tcp over HTTP/2: net/http's h2 client stream (http2clientStream
 * up to Go 1.26, internal/http2.clientStream in 1.27) and its connection,
 * and the goroutine ids that lead from the stream's writer back to the
 * round trip's caller. */
volatile const u64 off_h2cs_cc = OFF_NONE;     /* clientStream.cc, *ClientConn */
volatile const u64 off_h2cs_id = OFF_NONE;     /* clientStream.ID */
volatile const u64 off_h2cc_tconn = OFF_NONE;  /* ClientConn.tconn, a net.Conn */
volatile const u64 off_g_goid = OFF_NONE;      /* runtime.g.goid */
volatile const u64 off_g_parentgoid = OFF_NONE; /* runtime.g.parentGoid */

/* Link-time addresses of the entry sites, for the load bias of a PIE. */
volatile const u64 start_site_vaddr = 0;
volatile const u64 conn_site_vaddr = 0;
volatile const u64 h2_site_vaddr = 0;

/* Link-time addresses of the Error methods of error types, set by the
 * loader when the binary has them (0: never an error here). An error's
 * itab holds its type's Error method in its first slot (itab+24): that
 * tells the type for every Go release and build, with or without itab
 * symbols (Go 1.27 has none), also for itabs made at run time. */
volatile const u64 fn_op_error = 0;        /* *net.OpError */
volatile const u64 fn_syscall_error = 0;   /* *os.SyscallError */
volatile const u64 fn_poll_deadline = 0;   /* *internal/poll.DeadlineExceededError */
volatile const u64 fn_net_timeout = 0;     /* *net.timeoutError */
volatile const u64 fn_ctx_deadline = 0;    /* context.deadlineExceededError */
volatile const u64 fn_error_string = 0;    /* *errors.errorString (context.Canceled) */
volatile const u64 fn_http_error = 0;      /* *net/http.httpError */
volatile const u64 fn_tls_verify = 0;      /* *crypto/tls.CertificateVerificationError */
volatile const u64 fn_tls_record = 0;      /* crypto/tls.RecordHeaderError */
volatile const u64 fn_tls_alert = 0;       /* crypto/tls.AlertError */
volatile const u64 fn_x509_unknown_ca = 0; /* crypto/x509.UnknownAuthorityError */
volatile const u64 fn_x509_hostname = 0;   /* crypto/x509.HostnameError */

#define FLAG_SAMPLED 1
#define FLAG_METHOD_TRUNCATED 2
#define FLAG_HOST_TRUNCATED 4
#define FLAG_PATH_TRUNCATED 8
#define FLAG_QUERY_TRUNCATED 16
#define FLAG_READ_FAILED 32

/* Why no response came (enum error_kind; ERR_NONE with a status). */
enum error_kind {
	ERR_NONE = 0,
	ERR_OTHER,
	ERR_TIMEOUT,
	ERR_REFUSED,
	ERR_CANCELED,
	ERR_TLS,
};

#define ECONNREFUSED 111

/* A record is this header followed by path_len bytes of the path and
 * query_len bytes of the raw query (sampled records only). */
struct http_client_event {
	u64 start_ns;
	u64 end_ns;
	u64 trace_id_low;
	u32 tgid;
	u16 status;
	u8 proto_major;
	u8 proto_minor;
	u8 flags;
	u8 error_kind; /* enum error_kind */
	u8 method_len;
	u8 scheme_len;
	u8 host_len;
	u8 _pad0;
	u16 path_len;
	u16 query_len;
	u8 trace; /* TR_* (tracectx.h) */
	u8 _pad[5];
	u64 trace_id_high;
	u64 span_id;
	u64 parent_span_id; /* 0: a root */
	char method[METHOD_MAX];
	char scheme[SCHEME_MAX];
	char host[HOST_MAX];
};

struct scratch {
	struct http_client_event h;
	char data[PATH_MAX_LEN + QUERY_MAX];
};

struct inflight_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct inflight {
	u64 start_ns;
	u64 req;  /* *http.Request */
	u64 bias; /* load bias of the target */
	u64 goid; /* --propagate=tcp: the caller's goroutine id, in http_client_goids */
	u8 h2_tagged; /* --propagate=tcp: the span ID carries an HTTP/2 stream's bits (goconn.h) */
	u8 _pad[7];
	struct trace_ctx tc; /* with spans only: the child of the request being served, if any */
};

/* One entry per roundTrip in flight: inserted at the entry, deleted at the
 * RET. A goroutine whose roundTrip never returned (it panicked) leaves its
 * entry until its next roundTrip (counted stale) or its process's exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} http_client_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} http_client_scratch SEC(".maps");

/* --propagate=tcp: a sender's round trips in flight by their caller's
 * goroutine id (goid, tgid) -> the caller's g, for the HTTP/2 stream
 * writer the caller starts (its parentGoid). Goroutine ids are never
 * reused; an entry goes with its round trip. */
struct goid_key {
	u64 goid;
	u32 tgid;
	u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct goid_key);
	__type(value, u64);
} http_client_goids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* A series of http_client_metrics: the method and host are
 * http_client_names's entry under (tgid, names), the scheme its flags. */
struct http_client_metric_key {
	u32 tgid;
	u16 status;    /* 0: no response, error_kind says why */
	u8 error_kind; /* enum error_kind */
	u8 proto;      /* the response's major << 4 | minor */
	u64 names;     /* name_hash of the method (a), the host (b), the scheme (flags) */
};

/* obsd_name flags of http_client_names: the URL's scheme. */
#define NAME_SCHEME_HTTP 1
#define NAME_SCHEME_HTTPS 2

/* The name scratch: where the strings are read, zeroed past them. */
DECLARE_METRICS(http_client_metrics, http_client_names, http_client_series, http_client_name_scratch, struct http_client_metric_key, 16384);

const struct http_client_event *unused_http_client_event __attribute__((unused));
const struct http_client_metric_key *unused_http_client_metric_key __attribute__((unused));
const struct hist *unused_hist __attribute__((unused));
const struct obsd_name *unused_obsd_name __attribute__((unused));
const struct name_key *unused_name_key __attribute__((unused));
const struct inflight *unused_inflight __attribute__((unused));
const struct inflight_key *unused_inflight_key __attribute__((unused));
const struct goid_key *unused_goid_key __attribute__((unused));

static __always_inline void forget_goid(u32 tgid, u64 goid)
{
	if (!goid)
		return;
	struct goid_key gk = {.goid = goid, .tgid = tgid, ._pad = 0};
	bpf_map_delete_elem(&http_client_goids, &gk);
}

static __always_inline struct inflight_key key_of(struct pt_regs *ctx)
{
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32, ._pad = 0};
	return key;
}

SEC("uprobe.multi")
int http_client_start(struct pt_regs *ctx)
{
	u64 req = GO_ARG2(ctx);
	if (!req)
		return 0;
	struct inflight_key key = key_of(ctx);
	struct inflight in = {
		.req = req,
		.bias = load_bias(ctx, start_site_vaddr),
	};
	if (with_spans) {
		u64 rctx = 0;
		if (off_request_ctx != OFF_NONE)
			bpf_probe_read_user(&rctx, sizeof(rctx), (void *)(req + off_request_ctx + 8));
		tc_child(key.tgid, rctx, &in.tc);
		if (tcp_propagate && off_g_goid != OFF_NONE && goconn_sender(key.tgid) &&
		    bpf_probe_read_user(&in.goid, sizeof(in.goid), (void *)(key.g + off_g_goid)) == 0 && in.goid) {
			struct goid_key gk = {.goid = in.goid, .tgid = key.tgid, ._pad = 0};
			if (bpf_map_update_elem(&http_client_goids, &gk, &key.g, BPF_ANY) != 0) {
				count(CNT_TCPCTX_OUT_FULL);
				in.goid = 0;
			}
		}
	}
	in.start_ns = bpf_ktime_get_ns();
	/* BPF_NOEXIST fails only when the goroutine's previous roundTrip
	 * never returned (a panic): replace it, counted, with its goid entry
	 * (a g is reused by later goroutines, under new ids). */
	if (bpf_map_update_elem(&http_client_inflight, &key, &in, BPF_NOEXIST) != 0) {
		struct inflight *old = bpf_map_lookup_elem(&http_client_inflight, &key);
		if (old) {
			count(CNT_STALE_START);
			if (old->goid != in.goid)
				forget_goid(key.tgid, old->goid);
			bpf_map_update_elem(&http_client_inflight, &key, &in, BPF_ANY);
		} else {
			count(CNT_INFLIGHT_FULL);
			forget_goid(key.tgid, in.goid);
		}
	}
	return 0;
}

/* is_string says whether the *errors.errorString at data holds s (n <= 24
 * bytes): context.Canceled and net's errCanceled are errors.New values,
 * told apart only by their text. */
static __always_inline int is_string(u64 data, const char *s, u32 n)
{
	struct go_string str;
	char buf[24] = {};
	if (bpf_probe_read_user(&str, sizeof(str), (void *)data) != 0 || str.len != n || n > sizeof(buf))
		return 0;
	if (bpf_probe_read_user(buf, n, (void *)str.ptr) != 0)
		return 0;
	for (u32 i = 0; i < sizeof(buf); i++) {
		if (i >= n)
			break;
		if (buf[i] != s[i])
			return 0;
	}
	return 1;
}

/* error_type returns the link-time address of the Error method of the
 * error whose itab is itab (its first method slot), 0 if unreadable. */
static __always_inline u64 error_type(u64 itab, u64 bias)
{
	u64 fn = 0;
	if (!itab || bpf_probe_read_user(&fn, sizeof(fn), (void *)(itab + 24)) != 0 || !fn)
		return 0;
	return fn - bias;
}

#define IS(t, c) ((c) && (t) == (c))

/* leaf_kind classifies an error that wraps nothing obsd looks into. */
static __always_inline u8 leaf_kind(u64 t, u64 data)
{
	if (!t)
		return ERR_OTHER;
	if (IS(t, fn_poll_deadline) || IS(t, fn_net_timeout) || IS(t, fn_ctx_deadline))
		return ERR_TIMEOUT;
	if (IS(t, fn_tls_verify) || IS(t, fn_tls_record) || IS(t, fn_tls_alert) || IS(t, fn_x509_unknown_ca) ||
	    IS(t, fn_x509_hostname))
		return ERR_TLS;
	if (IS(t, fn_error_string) && data) {
		if (is_string(data, "context canceled", 16) || is_string(data, "operation was canceled", 22))
			return ERR_CANCELED;
		return ERR_OTHER;
	}
	if (IS(t, fn_http_error) && data && off_httperror_timeout != OFF_NONE) {
		u8 timeout = 0;
		if (bpf_probe_read_user(&timeout, 1, (void *)(data + off_httperror_timeout)) == 0 && timeout)
			return ERR_TIMEOUT;
	}
	return ERR_OTHER;
}

/* error_kind classifies roundTrip's error from its itab and data: a
 * *net.OpError by what it wraps (a refused connect is an *os.SyscallError
 * with ECONNREFUSED, a dial timeout a deadline error), anything else as a
 * leaf. A handful of dependent reads, on failures only. */
static __always_inline u8 error_kind(u64 itab, u64 data, u64 bias)
{
	u64 t = error_type(itab, bias);
	if (!IS(t, fn_op_error) || !data || off_operror_err == OFF_NONE)
		return leaf_kind(t, data);
	struct {
		u64 itab, data;
	} inner = {};
	if (bpf_probe_read_user(&inner, sizeof(inner), (void *)(data + off_operror_err)) != 0)
		return ERR_OTHER;
	t = error_type(inner.itab, bias);
	if (IS(t, fn_syscall_error) && inner.data && off_syscallerror_err != OFF_NONE) {
		/* SyscallError.Err is a syscall.Errno boxed in an error: the
		 * data word points at the number. */
		u64 errp = 0, errno = 0;
		if (bpf_probe_read_user(&errp, sizeof(errp), (void *)(inner.data + off_syscallerror_err + 8)) != 0 ||
		    !errp || bpf_probe_read_user(&errno, sizeof(errno), (void *)errp) != 0)
			return ERR_OTHER;
		return errno == ECONNREFUSED ? ERR_REFUSED : ERR_OTHER;
	}
	return leaf_kind(t, inner.data);
}

SEC("uprobe.multi")
int http_client_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	struct inflight_key key = key_of(ctx);
	struct inflight *inp = bpf_map_lookup_elem(&http_client_inflight, &key);
	if (!inp) {
		count(CNT_UNMATCHED_END);
		return 0;
	}
	struct inflight in = *inp;
	bpf_map_delete_elem(&http_client_inflight, &key);
	forget_goid(key.tgid, in.goid);

	u64 resp = ctx->ax, err_itab = ctx->bx, err_data = ctx->cx;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&http_client_scratch, &zero);
	struct obsd_name *nm = bpf_map_lookup_elem(&http_client_name_scratch, &zero);
	if (!sc || !nm)
		return 0;
	struct http_client_event *e = &sc->h;
	__builtin_memset(e, 0, sizeof(*e));
	e->start_ns = in.start_ns;
	e->end_ns = end;
	e->tgid = key.tgid;
	u8 flags = 0;

	if (resp) {
		u64 status = 0, proto[2] = {};
		long rerr = bpf_probe_read_user(&status, sizeof(status), (void *)(resp + off_response_statuscode));
		/* ProtoMajor and ProtoMinor are adjacent ints in every release. */
		if (off_response_protominor == off_response_protomajor + 8) {
			rerr |= bpf_probe_read_user(proto, sizeof(proto), (void *)(resp + off_response_protomajor));
		} else {
			rerr |= bpf_probe_read_user(&proto[0], 8, (void *)(resp + off_response_protomajor));
			rerr |= bpf_probe_read_user(&proto[1], 8, (void *)(resp + off_response_protominor));
		}
		if (rerr != 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
		e->status = (u16)status;
		e->proto_major = (u8)proto[0];
		e->proto_minor = (u8)proto[1];
	} else {
		e->error_kind = err_itab ? error_kind(err_itab, err_data, in.bias) : ERR_OTHER;
	}

	/* Head-sampled at the start, or kept now for being slow or failing
	 * (no response, or a 4xx/5xx: an error for a client span, semconv). */
	int sampled = tc_end(&in.tc, end - in.start_ns, !resp || e->status >= 400);
	if (sampled) {
		flags |= FLAG_SAMPLED;
		tc_fill(e, in.tc);
	}

	/* Method and URL are adjacent in every Go release (0 and 16). */
	struct {
		struct go_string method;
		u64 url;
	} hdr = {};
	long rerr;
	if (off_request_url == off_request_method + 16) {
		rerr = bpf_probe_read_user(&hdr, sizeof(hdr), (void *)(in.req + off_request_method));
	} else {
		rerr = bpf_probe_read_user(&hdr.method, sizeof(hdr.method), (void *)(in.req + off_request_method));
		rerr |= bpf_probe_read_user(&hdr.url, sizeof(hdr.url), (void *)(in.req + off_request_url));
	}
	if (rerr != 0 || !hdr.url) {
		count(CNT_READ_FAILED);
		return 0;
	}
	/* The method and host go to the name, zeroed past them for the hash. */
	__builtin_memset(nm, 0, sizeof(*nm));
	u32 n = hdr.method.len < METHOD_MAX ? (u32)hdr.method.len : METHOD_MAX;
	if (hdr.method.len > METHOD_MAX)
		flags |= FLAG_METHOD_TRUNCATED;
	if (n > 0 && bpf_probe_read_user(nm->name, n, (void *)hdr.method.ptr) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	e->method_len = n;

	s64 full = read_go_string(e->scheme, SCHEME_MAX, hdr.url + off_url_scheme, &n);
	if (full < 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	e->scheme_len = n; /* a longer scheme is not http(s): _OTHER port */
	/* Bounds for the verifier: off <= METHOD_MAX, within the name. */
	u32 off = e->method_len;
	asm volatile("" : "+r"(off));
	if (off > METHOD_MAX)
		off = METHOD_MAX;
	full = read_go_string(nm->name + off, HOST_MAX, hdr.url + off_url_host, &n);
	if (full < 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	if (full > n)
		flags |= FLAG_HOST_TRUNCATED;
	e->host_len = n;

	if (metrics_on() && !sampled && !(flags & (FLAG_METHOD_TRUNCATED | FLAG_HOST_TRUNCATED))) {
		/* The common case: counted here, no record. A scheme other than
		 * exactly http or https (whose default port user space derives)
		 * goes as a record, which keeps it. */
		u64 sch = 0;
		__builtin_memcpy(&sch, e->scheme, 8);
		u8 scheme = 0;
		if (e->scheme_len == 4 && (sch & 0xffffffffULL) == M4('h', 't', 't', 'p'))
			scheme = NAME_SCHEME_HTTP;
		else if (e->scheme_len == 5 && (sch & 0xffffffffffULL) == M5('h', 't', 't', 'p', 's'))
			scheme = NAME_SCHEME_HTTPS;
		if (scheme) {
			nm->len_a = e->method_len;
			nm->len_b = e->host_len;
			nm->flags = scheme;
			struct http_client_metric_key mk = {.tgid = key.tgid,
							    .status = e->status,
							    .error_kind = e->error_kind,
							    .proto = (u8)(e->proto_major << 4 | (e->proto_minor & 15)),
							    .names = name_hash(nm)};
			if (hist_count(&http_client_metrics, &http_client_names, &http_client_series, &mk, key.tgid,
				       mk.names, nm, end - in.start_ns))
				return 0;
		}
	}
	/* A record: the method and host from the name. */
	__builtin_memcpy(e->method, nm->name, METHOD_MAX);
	__builtin_memcpy(e->host, nm->name + off, HOST_MAX);

	u32 used = 0;
	if (flags & FLAG_SAMPLED) {
		full = read_go_string(sc->data, PATH_MAX_LEN, hdr.url + off_url_path, &n);
		if (full < 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
		if (full > n)
			flags |= FLAG_PATH_TRUNCATED;
		e->path_len = n;
		used = n;
		if (used > PATH_MAX_LEN) /* bounds for the verifier */
			used = PATH_MAX_LEN;
		full = read_go_string(sc->data + used, QUERY_MAX, hdr.url + off_url_rawquery, &n);
		if (full < 0) {
			count(CNT_READ_FAILED);
			return 0;
		}
		if (full > n)
			flags |= FLAG_QUERY_TRUNCATED;
		e->query_len = n;
		used += n;
	}
	e->flags = flags;
	if (used > PATH_MAX_LEN + QUERY_MAX)
		used = PATH_MAX_LEN + QUERY_MAX;
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + used, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
	return 0;
}

/* (*persistConn).roundTrip(pc, treq), only with --propagate=tcp: the
 * round trip in flight on this goroutine is about to be written on pc's
 * connection. */
SEC("uprobe.multi")
int http_client_conn(struct pt_regs *ctx)
{
	struct inflight_key key = key_of(ctx);
	if (!tcp_propagate || !goconn_sender(key.tgid))
		return 0;
	u64 pc = GO_ARG1(ctx);
	if (off_persistconn_conn == OFF_NONE || !pc) {
		count(CNT_TCPCTX_CONN);
		return 0;
	}
	/* Without its round trip (not recorded: the in-flight map was full),
	 * the connection carries nothing rather than the previous request's
	 * context. */
	struct inflight *in = bpf_map_lookup_elem(&http_client_inflight, &key);
	struct tcpctx_key k;
	if (goconn_key(pc + off_persistconn_conn, load_bias(ctx, conn_site_vaddr), &k) == 0)
		goconn_out(&k, in ? &in->tc : 0, key.tgid);
	return 0;
}

/* The entry of net/http's HTTP/2 (*clientStream).encodeAndWriteHeaders(cs,
 * req) (http2clientStream up to Go 1.26), on the stream's writer goroutine
 * (doRequest, started by the round trip's caller) once cs.ID is assigned
 * and before the HEADERS are written, with the connection's header lock
 * held (--propagate=tcp). The caller's round trip is found by this
 * goroutine's parentGoid; its CLIENT span gets the stream's bits in its ID
 * (goconn.h) once, and goes on the connection. Tagging once keeps the
 * exported span ID the one that went out; a writer that finds another
 * round trip of its caller (its own was canceled first: it then writes
 * nothing) cannot make a wrong join, its stream never being sent. */
SEC("uprobe.multi")
int http_client_h2(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!tcp_propagate || !goconn_sender(tgid))
		return 0;
	u64 cs = GO_ARG1(ctx), cc = 0, pgoid = 0;
	u32 sid = 0;
	if (off_h2cs_cc == OFF_NONE || off_h2cs_id == OFF_NONE || off_h2cc_tconn == OFF_NONE ||
	    off_g_parentgoid == OFF_NONE || !cs ||
	    bpf_probe_read_user(&pgoid, sizeof(pgoid), (void *)(GO_G(ctx) + off_g_parentgoid)) != 0 ||
	    bpf_probe_read_user(&cc, sizeof(cc), (void *)(cs + off_h2cs_cc)) != 0 || !cc ||
	    bpf_probe_read_user(&sid, sizeof(sid), (void *)(cs + off_h2cs_id)) != 0 || !sid) {
		count(CNT_TCPCTX_CONN);
		return 0;
	}
	struct goid_key gk = {.goid = pgoid, .tgid = tgid, ._pad = 0};
	u64 *g = bpf_map_lookup_elem(&http_client_goids, &gk);
	if (!g)
		return 0; /* the round trip ended, or was not recorded */
	struct inflight_key key = {.g = *g, .tgid = tgid, ._pad = 0};
	struct inflight *in = bpf_map_lookup_elem(&http_client_inflight, &key);
	if (!in || !in->tc.span || in->h2_tagged)
		return 0;
	struct tcpctx_key k;
	if (goconn_key(cc + off_h2cc_tconn, load_bias(ctx, h2_site_vaddr), &k) != 0)
		return 0;
	in->h2_tagged = 1;
	in->tc.span = goconn_stream_span(in->tc.span, sid);
	goconn_out_stream(&k, sid, &in->tc, tgid);
	return 0;
}
