/* Routes as a third-party router reports them to its own middleware
 * (chi's RoutePattern(), gin's FullPath(), echo's Path(), gorilla/mux's
 * GetPathTemplate()). A router's probe fires once per request the router
 * served, on the request's goroutine, after the router matched (at its
 * sync.(*Pool).Put of the request context, or gorilla's requestWithRoute),
 * and leaves the route here under the goroutine; the HTTP server probe's
 * end, on the same goroutine, takes it for the request. */
#ifndef OBSD_ROUTE_H
#define OBSD_ROUTE_H

#include "obsd.h"

/* Bytes of a route kept; longer ones are cut and flagged. */
#define ROUTE_MAX 128

/* Which router reported the route: user space finishes the raw bytes as
 * that router does (chi joins its per-router patterns and then cleans
 * wildcards) and names the source. */
enum route_kind {
	ROUTE_NONE = 0,
	ROUTE_CHI = 1,
	ROUTE_GIN = 2,
	ROUTE_ECHO = 3,
	ROUTE_GORILLA = 4,
	/* Not a router's route: the *http.Request a ServeMux routed (req),
	 * whose pattern the server probe reads instead of its own request's
	 * (an inner mux behind middleware that copied the request). */
	ROUTE_SERVEMUX = 5,
};

#define ROUTE_TRUNCATED 1

struct route_key {
	u64 g;
	u32 tgid;
	u32 _pad;
};

struct route {
	u64 at_ns; /* when the router reported it: before the request's start, it is an earlier request's */
	u64 hash;  /* of kind, len and name (zero past len): the in-kernel series key */
	u16 len;   /* bytes of name used; 0: the router matched no route */
	u8 kind;   /* enum route_kind */
	u8 flags;  /* ROUTE_TRUNCATED */
	u32 _pad;
	u64 req; /* ROUTE_SERVEMUX: the *http.Request the mux routed */
	char name[ROUTE_MAX];
};

/* One entry per goroutine that served a routed request. Never deleted by
 * the end (a goroutine's next routed request overwrites it in place, and
 * at_ns tells an earlier request's apart): an LRU, so goroutines that are
 * gone (or that ran a router outside any server request) age out. A live
 * entry is evicted only after 16384 newer routed requests while its own
 * is in flight; that request then gets the fallback route. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct route_key);
	__type(value, struct route);
} obsd_shared_http_routes SEC(".maps");

/* Where a route is assembled: parts are copied at any offset below
 * ROUTE_MAX with up to ROUTE_MAX bytes each, which spill stays within. */
struct route_build {
	struct route r;
	char spill[ROUTE_MAX];
};

/* Per CPU, not on the stack: the verifier refuses a copy to the stack at a
 * variable offset. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct route_build);
} route_scratch SEC(".maps");

/* route_begin returns this CPU's empty route of kind; NULL cannot happen. */
static __always_inline struct route_build *route_begin(u8 kind)
{
	u32 zero = 0;
	struct route_build *b = bpf_map_lookup_elem(&route_scratch, &zero);
	if (!b)
		return NULL;
	/* The route only: the spill is never read (len bounds every use). */
	__builtin_memset(&b->r, 0, sizeof(b->r));
	b->r.kind = kind;
	return b;
}

/* route_append copies the Go string s after what b holds; 0 when the
 * target's memory could not be read. */
static __always_inline int route_append(struct route_build *b, struct go_string s)
{
	u32 off = b->r.len;
	if (s.len == 0)
		return 1;
	if (off >= ROUTE_MAX || s.len > ROUTE_MAX - off) {
		b->r.flags |= ROUTE_TRUNCATED;
		if (off >= ROUTE_MAX)
			return 1;
	}
	u32 n = s.len < ROUTE_MAX - off ? (u32)s.len : ROUTE_MAX - off;
	/* Bounds for the verifier: off < ROUTE_MAX, n <= ROUTE_MAX. The empty
	 * asm keeps clang from dropping a mask it proves redundant (the
	 * verifier tracked the check on a copy). */
	asm volatile("" : "+r"(off));
	off &= ROUTE_MAX - 1;
	if (n > ROUTE_MAX)
		n = ROUTE_MAX;
	if (bpf_probe_read_user(&b->r.name[off], n, (void *)s.ptr) != 0)
		return 0;
	b->r.len = off + n;
	return 1;
}

/* route_commit hashes b's route and leaves it for the current goroutine's
 * request. */
static __always_inline void route_commit(struct pt_regs *ctx, struct route_build *b)
{
	/* name is zero past len (route_begin): every word is hashed, with
	 * no branch per word. */
	u64 h = 0xcbf29ce484222325ULL ^ ((u64)b->r.kind << 56 | (u64)b->r.flags << 48 | b->r.len);
	u64 *w = (u64 *)b->r.name;
#pragma unroll
	for (int i = 0; i < ROUTE_MAX / 8; i++) {
		h = (h ^ w[i]) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	b->r.hash = h;
	b->r.at_ns = bpf_ktime_get_ns();
	struct route_key k = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	/* The goroutine's entry from an earlier request is rewritten in place
	 * (only this goroutine writes it): an LRU update allocates and swaps
	 * an element, which costs more than the copy. at_ns goes last, so a
	 * reader that sees it new sees the rest new too. */
	struct route *old = bpf_map_lookup_elem(&obsd_shared_http_routes, &k);
	if (old) {
		old->at_ns = 0;
		__builtin_memcpy(old->name, b->r.name, ROUTE_MAX);
		old->hash = b->r.hash;
		old->len = b->r.len;
		old->kind = b->r.kind;
		old->flags = b->r.flags;
		old->req = b->r.req;
		asm volatile("" ::: "memory"); /* in order: x86 keeps stores in order too */
		old->at_ns = b->r.at_ns;
		return;
	}
	if (bpf_map_update_elem(&obsd_shared_http_routes, &k, &b->r, BPF_ANY) != 0)
		count(CNT_READ_FAILED); /* not handed over: the request gets the fallback */
}

/* A mux that runs on a goroutine of its own (http.TimeoutHandler runs the
 * handler on a new one) cannot leave its request under the serving
 * goroutine. The servemux probe then also leaves it under the contexts up
 * its request's context chain (every context type of package context keeps
 * its parent first), where the server probe's end finds it by its own
 * request's context. Only while obsd_shared_route_ctx_on is set (user
 * space sets it once a process has the on-demand servemux probe), so
 * other servers pay one array read. */
#define ROUTE_CTX_LEVELS 3

struct route_ctx_key {
	u64 ctx;
	u32 tgid;
	u32 _pad;
};

struct route_ctx {
	u64 at_ns;
	u64 req;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct route_ctx_key);
	__type(value, struct route_ctx);
} obsd_shared_route_ctx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} obsd_shared_route_ctx_on SEC(".maps");

static __always_inline int route_ctx_on(void)
{
	u32 zero = 0;
	u32 *on = bpf_map_lookup_elem(&obsd_shared_route_ctx_on, &zero);
	return on && *on;
}

/* route_string leaves s (a Go string already read from the target) as the
 * current goroutine's route of kind; its bytes are read here. */
static __always_inline void route_string(struct pt_regs *ctx, u8 kind, struct go_string s)
{
	struct route_build *b = route_begin(kind);
	if (!b)
		return;
	if (!route_append(b, s)) {
		count(CNT_READ_FAILED);
		return;
	}
	route_commit(ctx, b);
}

/* route_of returns the route a router left for the current goroutine's
 * request that started at start, or NULL. */
static __always_inline struct route *route_of(struct pt_regs *ctx, u32 tgid, u64 start)
{
	struct route_key k = {.g = GO_G(ctx), .tgid = tgid};
	struct route *r = bpf_map_lookup_elem(&obsd_shared_http_routes, &k);
	if (!r || r->at_ns < start || r->len > ROUTE_MAX)
		return NULL;
	return r;
}

#endif
