//go:build ignore

/* net/http server: one record per request.
 *
 * Start: net/http.serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request)
 * End:   net/http.(*response).finishRequest(w *response), which conn.serve calls
 *        right after ServeHTTP returns, on the same goroutine.
 * Both probes sit on the prologue's PUSHQ BP (emulated, not single-stepped).
 * In-flight state is keyed by (tgid, g): a goroutine runs one request at a time.
 */
#include "obsd.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define METHOD_MAX 16
#define PATH_MAX_LEN 128
#define PATTERN_MAX 128

/* Field offsets, rewritten per target binary by internal/uprobes. */
volatile const u64 off_request_method = OFF_NONE;
volatile const u64 off_request_url = OFF_NONE;
volatile const u64 off_request_pattern = OFF_NONE; /* Go 1.23+ */
volatile const u64 off_request_pat = OFF_NONE;     /* Go 1.22 */
volatile const u64 off_pattern_str = OFF_NONE;     /* Go 1.22 */
volatile const u64 off_url_path = OFF_NONE;
volatile const u64 off_response_req = OFF_NONE;
volatile const u64 off_response_status = OFF_NONE;
/* Set by the loader when spans are exported. The probe then samples: it
 * draws the low 64 bits of the trace ID and keeps the request when
 * (x >> 1) < sample_bound, the test of the OTel SDK's TraceIDRatioBased
 * sampler with sample_bound = ratio * 2^63, so the SDK, given that trace ID,
 * agrees. A sampled request becomes a record with its URL path (spans carry
 * url.path); the others are counted like requests without spans. */
volatile const u8 with_spans = 1;
volatile const u64 sample_bound = 1ULL << 63; /* ratio 1 */
/* Link-time addresses, set by the loader: the .rodata section, where Go
 * keeps string literals, and the end program's attach site. The site and
 * ctx->ip give the load bias of a PIE binary. rodata_end == 0 disables
 * in-kernel metrics. */
volatile const u64 rodata_start = 0;
volatile const u64 rodata_end = 0;
volatile const u64 end_site_vaddr = 0;
/* The itab of *response as a ResponseWriter and the start program's site,
 * both link-time, set by the loader when the binary gives the itab (0:
 * not known, read memory instead). */
volatile const u64 response_writer_itab = 0;
volatile const u64 start_site_vaddr = 0;

#define FLAG_PATH_TRUNCATED 1
#define FLAG_PATTERN_TRUNCATED 2
#define FLAG_READ_FAILED 4
#define FLAG_SAMPLED 8
#define FLAG_METHOD_TRUNCATED 16 /* the method was longer than METHOD_MAX */

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
	u32 _pad;
	u64 trace_id_low; /* when FLAG_SAMPLED: bytes 8..15 of the trace ID, big-endian value */
	char method[METHOD_MAX];
};

/* Where a record is assembled before it is copied into the ring. */
struct scratch {
	struct http_server_event h;
	char data[PATTERN_MAX + PATH_MAX_LEN];
};

struct inflight_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct inflight {
	u64 start_ns;
	u64 req; /* *http.Request, == w.req at the end */
	u64 url; /* req.URL */
	u8 method_len;
	u8 flags;
	u8 _pad[6];
	char method[METHOD_MAX];
};

/* One slot per goroutine that has served a request. A slot is reused in
 * place for the goroutine's next request (keep-alive connections keep their
 * goroutine), so the hot path does lookups, not inserts and deletes; a slot
 * with start_ns == 0 is idle. LRU evicts idle slots of goroutines gone.
 * User space counts the busy slots for http_server_active_requests. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} http_server_inflight SEC(".maps");

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
 * map) still becomes a record, so nothing is dropped. */
struct http_server_metric_key {
	u32 tgid;
	u16 status;
	u8 method_len;
	u8 _pad;
	char method[8]; /* no standard method is longer; longer ones are _OTHER */
	u64 pattern;    /* link-time address of the pattern's bytes */
	u32 pattern_len;
	u32 _pad2;
};

/* Upper bounds of the duration buckets in ns, set by the loader from the
 * exported histogram's (the semconv buckets of http.server.request.duration),
 * so the two cannot disagree. */
#define DURATION_BOUNDS 14
volatile const u64 duration_bounds_ns[DURATION_BOUNDS] = {};

struct http_server_metric {
	u64 buckets[DURATION_BOUNDS + 1]; /* non-cumulative; the last is +Inf */
	u64 sum_ns;
};

/* Per CPU, so the hot path needs no atomics; no preallocation, so memory
 * follows the series in use rather than max_entries times the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct http_server_metric_key);
	__type(value, struct http_server_metric);
} http_server_metrics SEC(".maps");

/* Keeps these structs in BTF for bpf2go -type. */
const struct http_server_event *unused_http_server_event __attribute__((unused));
const struct http_server_metric_key *unused_http_server_metric_key __attribute__((unused));
const struct http_server_metric *unused_http_server_metric __attribute__((unused));

/* count_request adds one request to the in-kernel metrics; 0 when the
 * map is full. */
static __always_inline int count_request(struct http_server_metric_key *k, u64 d)
{
	struct http_server_metric *v = bpf_map_lookup_elem(&http_server_metrics, k);
	if (!v) {
		struct http_server_metric fresh = {};
		/* EEXIST: another CPU added the key meanwhile; the lookup finds it. */
		bpf_map_update_elem(&http_server_metrics, k, &fresh, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&http_server_metrics, k);
		if (!v)
			return 0;
	}
	u32 b = 0;
#pragma unroll
	for (int i = 0; i < DURATION_BOUNDS; i++) {
		if (d <= duration_bounds_ns[i])
			break;
		b++;
	}
	if (b > DURATION_BOUNDS) /* bounds for the verifier */
		b = DURATION_BOUNDS;
	v->buckets[b] += 1; /* this CPU's copy: no atomics needed */
	v->sum_ns += d;
	return 1;
}

SEC("uprobe.multi")
int http_server_start(struct pt_regs *ctx)
{
	u64 req = GO_ARG4(ctx);
	u64 rw_data = GO_ARG3(ctx);
	if (!req || !rw_data)
		return 0;

	/* Only HTTP/1 requests end in (*response).finishRequest. HTTP/2 calls
	 * ServeHTTP with its own writer type. The itab register tells the type
	 * for free; without it, a *response always has w.req == req. */
	if (response_writer_itab) {
		if (GO_ARG2(ctx) != response_writer_itab + load_bias(ctx, start_site_vaddr))
			return 0;
	} else {
		u64 wreq = 0;
		if (bpf_probe_read_user(&wreq, sizeof(wreq), (void *)(rw_data + off_response_req)) != 0 || wreq != req)
			return 0;
	}

	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in) {
		struct inflight fresh = {};
		if (bpf_map_update_elem(&http_server_inflight, &key, &fresh, BPF_NOEXIST) != 0 ||
		    !(in = bpf_map_lookup_elem(&http_server_inflight, &key))) {
			count(CNT_INFLIGHT_FULL);
			return 0;
		}
	} else if (in->start_ns) {
		/* The goroutine's previous request never reached finishRequest. */
		count(CNT_STALE_START);
	}

	/* Method and URL are adjacent in every Go release (0 and 16); one read
	 * then gets both. The loader's constants make the other branch dead. */
	struct {
		struct go_string method;
		u64 url;
	} hdr = {};
	long err;
	if (off_request_url == off_request_method + 16) {
		err = bpf_probe_read_user(&hdr, sizeof(hdr), (void *)(req + off_request_method));
	} else {
		err = bpf_probe_read_user(&hdr.method, sizeof(hdr.method), (void *)(req + off_request_method));
		err |= bpf_probe_read_user(&hdr.url, sizeof(hdr.url), (void *)(req + off_request_url));
	}
	in->flags = 0;
	in->method_len = 0;
	u32 n = hdr.method.len < METHOD_MAX ? (u32)hdr.method.len : METHOD_MAX;
	if (err != 0 || (n > 0 && bpf_probe_read_user(in->method, n, (void *)hdr.method.ptr) != 0))
		in->flags |= FLAG_READ_FAILED;
	else
		in->method_len = n;
	if (hdr.method.len > METHOD_MAX)
		in->flags |= FLAG_METHOD_TRUNCATED;
	in->req = req;
	in->url = hdr.url;
	in->start_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("uprobe.multi")
int http_server_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 w = GO_ARG1(ctx);
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in || !in->start_ns) {
		count(CNT_UNMATCHED_END);
		return 0;
	}
	/* The slot stays this goroutine's until its next start: its method
	 * bytes can be used below. */
	u64 start = in->start_ns, req = in->req, url = in->url;
	in->start_ns = 0;
	u8 flags = in->flags;

	u64 trace_id_low = 0;
	if (with_spans) {
		u64 x = ((u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
		if ((x >> 1) < sample_bound) {
			flags |= FLAG_SAMPLED;
			trace_id_low = x;
		}
	}

	u64 status = 0;
	if (bpf_probe_read_user(&status, sizeof(status), (void *)(w + off_response_status)) != 0)
		flags |= FLAG_READ_FAILED;

	/* The pattern's string header: in the Request (1.23+), or behind
	 * Request.pat (1.22). */
	struct go_string pat = {};
	if (off_request_pattern != OFF_NONE) {
		bpf_probe_read_user(&pat, sizeof(pat), (void *)(req + off_request_pattern));
	} else if (off_request_pat != OFF_NONE) {
		u64 p = 0;
		bpf_probe_read_user(&p, sizeof(p), (void *)(req + off_request_pat));
		if (p)
			bpf_probe_read_user(&pat, sizeof(pat), (void *)(p + off_pattern_str));
	}

	/* The common case ends here, before any record is assembled. */
	if (!(flags & (FLAG_SAMPLED | FLAG_READ_FAILED)) && rodata_end && pat.len > 0 && pat.len <= PATTERN_MAX) {
		u64 va = pat.ptr - load_bias(ctx, end_site_vaddr);
		if (va >= rodata_start && va < rodata_end && pat.len <= rodata_end - va) {
			struct http_server_metric_key mk = {
				.tgid = key.tgid,
				.status = (u16)status,
				.method_len = in->method_len,
				.pattern = va,
				.pattern_len = pat.len,
			};
			__builtin_memcpy(mk.method, in->method, sizeof(mk.method));
			if (count_request(&mk, end - start))
				return 0;
			count(CNT_METRICS_FULL);
		}
	}

	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&http_server_scratch, &zero);
	if (!sc) /* cannot happen: a one-slot per-CPU array */
		return 0;
	struct http_server_event *e = &sc->h;
	e->start_ns = start;
	e->end_ns = end;
	e->tgid = key.tgid;
	e->status = (u16)status;
	e->method_len = in->method_len;
	__builtin_memcpy(e->method, in->method, METHOD_MAX);
	e->path_len = 0;
	e->pattern_len = 0;
	e->_pad = 0;
	e->trace_id_low = trace_id_low;

	u32 n = 0, used = 0;
	s64 full;
	if (pat.len > 0) {
		n = pat.len < PATTERN_MAX ? (u32)pat.len : PATTERN_MAX;
		if (bpf_probe_read_user(sc->data, n, (void *)pat.ptr) != 0)
			n = 0;
		if (pat.len > n)
			flags |= FLAG_PATTERN_TRUNCATED;
		e->pattern_len = n;
		used = n;
	}

	/* Metrics need the path only for the fallback route. */
	if ((flags & FLAG_SAMPLED) || used == 0) {
		if (used > PATTERN_MAX) /* bounds for the verifier */
			used = PATTERN_MAX;
		if (!url) {
			flags |= FLAG_READ_FAILED;
		} else {
			full = read_go_string(sc->data + used, PATH_MAX_LEN, url + off_url_path, &n);
			if (full < 0)
				flags |= FLAG_READ_FAILED;
			else if (full > n)
				flags |= FLAG_PATH_TRUNCATED;
			e->path_len = n;
			used += n;
		}
	}

	e->flags = flags;
	if (flags & FLAG_READ_FAILED)
		count(CNT_READ_FAILED);
	if (used > PATTERN_MAX + PATH_MAX_LEN)
		used = PATTERN_MAX + PATH_MAX_LEN;
	/* No wakeup: the reader polls, which saves ~7 us per request. */
	if (bpf_ringbuf_output(&events, sc, sizeof(sc->h) + used, BPF_RB_NO_WAKEUP) != 0)
		count(CNT_RINGBUF_FULL);
	return 0;
}
