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

enum method_idx {
	M_OTHER = 0, M_GET, M_HEAD, M_POST, M_PUT, M_DELETE, M_CONNECT, M_OPTIONS, M_TRACE, M_PATCH,
};

#define FLAG_PATH_TRUNCATED 1
#define FLAG_PATTERN_TRUNCATED 2
#define FLAG_READ_FAILED 4

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
	char method[METHOD_MAX];
	char path[PATH_MAX_LEN];
	char pattern[PATTERN_MAX];
};

struct inflight_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct inflight {
	u64 start_ns;
	u8 method_len;
	u8 method_idx;
	u8 flags;
	u8 _pad[5];
	char method[METHOD_MAX];
};

struct active_key {
	u32 tgid;
	u32 method_idx;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} http_server_inflight SEC(".maps");

/* Requests in flight by process and method, for http_server_active_requests. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct active_key);
	__type(value, s64);
} http_server_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Keeps struct http_server_event in BTF for bpf2go -type. */
const struct http_server_event *unused_http_server_event __attribute__((unused));

static __always_inline u8 method_index(const char *m, u8 n)
{
	switch (n) {
	case 3:
		if (m[0] == 'G' && m[1] == 'E' && m[2] == 'T') return M_GET;
		if (m[0] == 'P' && m[1] == 'U' && m[2] == 'T') return M_PUT;
		break;
	case 4:
		if (m[0] == 'P' && m[1] == 'O' && m[2] == 'S' && m[3] == 'T') return M_POST;
		if (m[0] == 'H' && m[1] == 'E' && m[2] == 'A' && m[3] == 'D') return M_HEAD;
		break;
	case 5:
		if (m[0] == 'P' && m[1] == 'A' && m[2] == 'T' && m[3] == 'C' && m[4] == 'H') return M_PATCH;
		if (m[0] == 'T' && m[1] == 'R' && m[2] == 'A' && m[3] == 'C' && m[4] == 'E') return M_TRACE;
		break;
	case 6:
		if (m[0] == 'D' && m[1] == 'E' && m[2] == 'L' && m[3] == 'E' && m[4] == 'T' && m[5] == 'E') return M_DELETE;
		break;
	case 7:
		if (m[0] == 'O' && m[1] == 'P' && m[2] == 'T') return M_OPTIONS;
		if (m[0] == 'C' && m[1] == 'O' && m[2] == 'N') return M_CONNECT;
		break;
	}
	return M_OTHER;
}

static __always_inline void active_add(u32 tgid, u8 method_idx, s64 delta)
{
	struct active_key k = {.tgid = tgid, .method_idx = method_idx};
	s64 *v = bpf_map_lookup_elem(&http_server_active, &k);
	if (v) {
		__sync_fetch_and_add(v, delta);
		return;
	}
	if (delta < 0)
		return;
	s64 one = delta;
	if (bpf_map_update_elem(&http_server_active, &k, &one, BPF_NOEXIST) != 0) {
		/* Lost a race with another CPU creating it: add to theirs. */
		v = bpf_map_lookup_elem(&http_server_active, &k);
		if (v)
			__sync_fetch_and_add(v, delta);
		else
			count(CNT_ACTIVE_FULL);
	}
}

SEC("uprobe.multi")
int http_server_start(struct pt_regs *ctx)
{
	u64 req = GO_ARG4(ctx);
	u64 rw_data = GO_ARG3(ctx);
	if (!req || !rw_data)
		return 0;

	/* Only HTTP/1 requests end in (*response).finishRequest. HTTP/2 calls
	 * ServeHTTP with its own writer type; a *response always has w.req == req. */
	u64 wreq = 0;
	if (bpf_probe_read_user(&wreq, sizeof(wreq), (void *)(rw_data + off_response_req)) != 0 || wreq != req)
		return 0;

	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	struct inflight *old = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (old) {
		/* The goroutine's previous request never reached finishRequest. */
		count(CNT_STALE_START);
		active_add(key.tgid, old->method_idx, -1);
	}

	struct inflight in = {};
	u32 n = 0;
	if (read_go_string(in.method, METHOD_MAX, req + off_request_method, &n) < 0)
		in.flags |= FLAG_READ_FAILED;
	in.method_len = n;
	in.method_idx = method_index(in.method, in.method_len);
	in.start_ns = bpf_ktime_get_ns();

	if (bpf_map_update_elem(&http_server_inflight, &key, &in, BPF_ANY) != 0) {
		count(CNT_INFLIGHT_FULL);
		return 0;
	}
	active_add(key.tgid, in.method_idx, 1);
	return 0;
}

SEC("uprobe.multi")
int http_server_end(struct pt_regs *ctx)
{
	u64 end = bpf_ktime_get_ns();
	u64 w = GO_ARG1(ctx);
	struct inflight_key key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	struct inflight *in = bpf_map_lookup_elem(&http_server_inflight, &key);
	if (!in) {
		count(CNT_UNMATCHED_END);
		return 0;
	}

	struct http_server_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_RINGBUF_FULL);
		active_add(key.tgid, in->method_idx, -1);
		bpf_map_delete_elem(&http_server_inflight, &key);
		return 0;
	}

	e->start_ns = in->start_ns;
	e->end_ns = end;
	e->tgid = key.tgid;
	e->flags = in->flags;
	e->method_len = in->method_len;
	__builtin_memcpy(e->method, in->method, METHOD_MAX);
	active_add(key.tgid, in->method_idx, -1);
	bpf_map_delete_elem(&http_server_inflight, &key);

	/* Reserved memory is not zeroed; clear what may be read partially. */
	e->path_len = 0;
	e->pattern_len = 0;
	e->_pad = 0;

	u64 status = 0;
	if (bpf_probe_read_user(&status, sizeof(status), (void *)(w + off_response_status)) != 0)
		e->flags |= FLAG_READ_FAILED;
	e->status = (u16)status;

	u64 req = 0, url = 0;
	bpf_probe_read_user(&req, sizeof(req), (void *)(w + off_response_req));
	if (req)
		bpf_probe_read_user(&url, sizeof(url), (void *)(req + off_request_url));

	u32 n = 0;
	s64 full;
	if (url) {
		full = read_go_string(e->path, PATH_MAX_LEN, url + off_url_path, &n);
		if (full < 0)
			e->flags |= FLAG_READ_FAILED;
		else if (full > n)
			e->flags |= FLAG_PATH_TRUNCATED;
		e->path_len = n;
	} else {
		e->flags |= FLAG_READ_FAILED;
	}

	u64 pstr = 0;
	if (req && off_request_pattern != OFF_NONE) {
		pstr = req + off_request_pattern;
	} else if (req && off_request_pat != OFF_NONE) {
		u64 pat = 0;
		bpf_probe_read_user(&pat, sizeof(pat), (void *)(req + off_request_pat));
		if (pat)
			pstr = pat + off_pattern_str;
	}
	if (pstr) {
		full = read_go_string(e->pattern, PATTERN_MAX, pstr, &n);
		if (full > n)
			e->flags |= FLAG_PATTERN_TRUNCATED;
		e->pattern_len = n;
	}

	if (e->flags & FLAG_READ_FAILED)
		count(CNT_READ_FAILED);
	/* No wakeup: the reader polls, which saves ~7 us per request. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
