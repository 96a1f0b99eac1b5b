/* W3C trace context for obsd's probes: reading an incoming traceparent and
 * tracestate out of a Go map[string][]string (net/http.Header, gRPC
 * metadata.MD) without calling into the target, and deciding the sampling
 * of a span at its start.
 *
 * Go maps have two layouts (amd64):
 *   runtime.hmap, Go 1.21-1.23 (and 1.24-1.25 built with
 *   GOEXPERIMENT=noswissmap): 2^B buckets of 8 slots, each bucket
 *   tophash[8], keys[8], elems[8], overflow pointer (runtime/map.go);
 *   internal/runtime/maps.Map, Go 1.24+ (swiss tables): a small map (at most
 *   8 entries, dirLen == 0) is one group; a larger one a directory of
 *   tables, each an array of groups; a group is a control word (one byte per
 *   slot, high bit clear when the slot is full) and 8 slots
 *   (internal/runtime/maps/group.go, table.go, map.go).
 * The loader sets the offsets of whichever the binary has (from its DWARF,
 * else the offsets table by Go version); the other stays OFF_NONE.
 *
 * For map[string][]string a key is a string header (16 bytes) and an element
 * a slice header (24 bytes), both stored inline in every Go release.
 *
 * The walk is bounded (TC_MAX_GROUPS groups or buckets): a map beyond it
 * (more than about a hundred headers) or a directory of several tables
 * (more than 1024 entries)
 * is not read, and counted as CNT_TRACECTX_UNREAD: the span is then a root.
 */
#ifndef OBSD_TRACECTX_H
#define OBSD_TRACECTX_H

#include "obsd.h"

volatile const u64 off_hmap_flags = OFF_NONE;
volatile const u64 off_hmap_b = OFF_NONE;
volatile const u64 off_hmap_buckets = OFF_NONE;
volatile const u64 off_hmap_oldbuckets = OFF_NONE;
volatile const u64 off_smap_dirptr = OFF_NONE;
volatile const u64 off_smap_dirlen = OFF_NONE;
volatile const u64 off_stable_groups = OFF_NONE;   /* table.groups, a groupsReference */
volatile const u64 off_sgroups_data = OFF_NONE;    /* groupsReference.data */
volatile const u64 off_sgroups_mask = OFF_NONE;    /* groupsReference.lengthMask */

/* Sampling, set by the loader from OTEL_TRACES_SAMPLER(_ARG). A new trace is
 * sampled when (x >> 1) < sample_bound, x being the trace ID's last 8 bytes
 * as a big-endian number (the OTel SDK's TraceIDRatioBased test, so an SDK
 * downstream with the same ratio agrees). With parent_based (the
 * parentbased_* samplers), a span with an incoming parent follows the
 * parent's sampled flag; otherwise the root test applies to the parent's
 * trace ID too, as the SDK's non-parent-based samplers do.
 * keep_slow_ns and keep_errors keep, at the end, a span head sampling
 * dropped that turned out slow or failing (0: off). */
volatile const u8 with_spans = 1;
volatile const u64 sample_bound = 1ULL << 63; /* ratio 1 */
volatile const u8 parent_based = 1;
volatile const u64 keep_slow_ns = 0;
volatile const u8 keep_errors = 0;

/* Bits of trace_ctx.trace. */
#define TR_SAMPLED 1     /* head sampling kept the span */
#define TR_REMOTE 2      /* the parent came with the request */
#define TR_KEPT_SLOW 4   /* not head-sampled, kept for its duration */
#define TR_KEPT_ERROR 8  /* not head-sampled, kept for its error */
#define TR_STATE 16      /* tracestate_ptr/len hold the incoming tracestate */

/* A span's context as decided at its start. trace_hi and trace_lo are the
 * trace ID's two halves as big-endian numbers (trace_lo is what the ratio
 * sampler tests); parent_span is 0 for a root. */
struct trace_ctx {
	u64 trace_hi;
	u64 trace_lo;
	u64 span;
	u64 parent_span;
	u64 tracestate_ptr;
	u16 tracestate_len;
	u8 trace; /* TR_* */
	u8 _pad[5];
};

#define TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACESTATE_MAX 512 /* W3C: at most 512 characters are propagated */
#define TC_MAX_GROUPS 16   /* groups (swiss) or buckets (hmap) one walk reads */

#define GOMAP_SLOTS 8
#define SLOT_SIZE 40 /* string key + []string element */
#define GROUP_SIZE (8 + GOMAP_SLOTS * SLOT_SIZE)
#define BUCKET_KEYS 8
#define BUCKET_ELEMS (8 + GOMAP_SLOTS * 16)
#define BUCKET_OVERFLOW (BUCKET_ELEMS + GOMAP_SLOTS * 24)
#define BUCKET_SIZE (BUCKET_OVERFLOW + 8)

/* What a walk found: the first element of each key's []string, and how
 * many elements each had (a repeated traceparent is invalid). */
struct tc_found {
	struct go_string parent;
	struct go_string state;
	u64 parent_n;
	u64 state_n;
};

struct tc_scratch {
	u8 buf[BUCKET_SIZE]; /* one group (swiss) or one bucket (hmap) */
	char value[TRACEPARENT_LEN + 1];
	char key[16];
	struct tc_found f;
	struct go_string first;
	u64 sl[2];
	/* The walk's state (see tc_walk). */
	u64 base, next, mask;
	u32 layout, nb, i, old, err;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct tc_scratch);
} obsd_tc_scratch SEC(".maps");

/* lower returns v with ASCII letters folded to lower case; the key bytes
 * compared are letters only, so a plain OR is enough. */
#define LC8(v) ((v) | 0x2020202020202020ULL)

/* tc_key classifies a slot's key: 1 traceparent, 2 tracestate, 0 other. Its
 * header k was read with the slot; only keys of the right length cost a
 * read. Header names match in any case: net/http canonicalises them
 * ("Traceparent"), gRPC metadata lowers them. */
static __always_inline int tc_key(struct tc_scratch *sc, const struct go_string *k)
{
	if (k->len != 11 && k->len != 10)
		return 0;
	if (bpf_probe_read_user(sc->key, k->len == 11 ? 11 : 10, (void *)k->ptr) != 0)
		return 0;
	u64 a;
	__builtin_memcpy(&a, sc->key, 8);
	a = LC8(a);
	/* "tracepar" and "tracesta" as little-endian words */
	if (k->len == 11 && a == 0x7261706563617274ULL) {
		u8 c8 = sc->key[8] | 0x20, c9 = sc->key[9] | 0x20, c10 = sc->key[10] | 0x20;
		return c8 == 'e' && c9 == 'n' && c10 == 't' ? 1 : 0;
	}
	if (k->len == 10 && a == 0x6174736563617274ULL) {
		u8 c8 = sc->key[8] | 0x20, c9 = sc->key[9] | 0x20;
		return c8 == 't' && c9 == 'e' ? 2 : 0;
	}
	return 0;
}

/* tc_slot looks at one slot whose key and element headers are at key and
 * elem (within sc->buf) and records what it is. */
static __always_inline void tc_slot(struct tc_scratch *sc, const u8 *key, const u8 *elem)
{
	int which = tc_key(sc, (const struct go_string *)key);
	if (!which)
		return;
	__builtin_memcpy(sc->sl, elem, sizeof(sc->sl)); /* the slice's data pointer and length */
	sc->first.ptr = sc->first.len = 0;
	if (sc->sl[1] > 0 && bpf_probe_read_user(&sc->first, sizeof(sc->first), (void *)sc->sl[0]) != 0)
		return;
	if (which == 1) {
		sc->f.parent = sc->first;
		sc->f.parent_n += sc->sl[1];
	} else {
		sc->f.state = sc->first;
		sc->f.state_n += sc->sl[1];
	}
}

/* read_group copies one group or bucket (size bytes at addr) into sc->buf.
 * Its first bytes (control word, tophash) are always written by Go, but
 * the slots after the used ones may never have been: memory fresh from the
 * OS is zero, Go does not clear it again, and its page may then not be
 * mapped yet, which fails the whole read. Such a page reads as zeros (empty
 * slots, no overflow bucket); a failure in the first page is an error. */
static __always_inline int read_group(struct tc_scratch *sc, u64 addr, u32 size)
{
	if (size > BUCKET_SIZE)
		size = BUCKET_SIZE;
	if (bpf_probe_read_user(sc->buf, size, (void *)addr) == 0)
		return 0;
	u64 cut = ((addr + 4096) & ~4095ULL) - addr; /* bytes up to the page's end */
	if (cut == 0 || cut >= size)
		return -1;
	__builtin_memset(sc->buf, 0, sizeof(sc->buf));
	if (bpf_probe_read_user(sc->buf, cut, (void *)addr) != 0)
		return -1;
	return 0; /* the rest stays zero */
}

/* The walk is bpf_loop callbacks, one per group or bucket and one per slot,
 * so that the verifier checks each once (unrolled, the branches of 128
 * slots exceed its budget). */
#define LAYOUT_SWISS 1
#define LAYOUT_HMAP 2
#define HMAP_SAME_SIZE_GROW 8 /* hmap.flags: sameSizeGrow */

/* bpf_loop's context must be on the stack: it carries the scratch. */
struct tc_loop {
	struct tc_scratch *sc;
};

/* tc_slot_cb scans slot i of the group or bucket in sc->buf. */
static long tc_slot_cb(u64 i, void *ctx)
{
	struct tc_scratch *sc = ((struct tc_loop *)ctx)->sc;
	if (i >= GOMAP_SLOTS)
		return 1;
	if (sc->layout == LAYOUT_SWISS) {
		if (sc->buf[i] & 0x80) /* empty or deleted */
			return 0;
		tc_slot(sc, sc->buf + 8 + i * SLOT_SIZE, sc->buf + 8 + i * SLOT_SIZE + 16);
	} else {
		if (sc->buf[i] < 5) /* below minTopHash: empty or evacuated */
			return 0;
		tc_slot(sc, sc->buf + BUCKET_KEYS + i * 16, sc->buf + BUCKET_ELEMS + i * 24);
	}
	return 0;
}

/* tc_group_cb reads and scans swiss group g of the table at sc->base. */
static long tc_group_cb(u64 g, void *ctx)
{
	struct tc_scratch *sc = ((struct tc_loop *)ctx)->sc;
	if (g > sc->mask)
		return 1;
	if (read_group(sc, sc->base + g * GROUP_SIZE, GROUP_SIZE) != 0) {
		sc->err = 1;
		return 1;
	}
	bpf_loop(GOMAP_SLOTS, tc_slot_cb, ctx, 0);
	return 0;
}

/* tc_bucket_cb reads and scans the next hmap bucket: the main buckets in
 * order (sc->i of sc->nb at sc->base), each followed by its overflow chain.
 * With sc->old, buckets already evacuated (tophash[0] between emptyOne and
 * minTopHash) are skipped: their entries are in the new ones. */
static long tc_bucket_cb(u64 n, void *ctx)
{
	struct tc_scratch *sc = ((struct tc_loop *)ctx)->sc;
	if (sc->i >= sc->nb)
		return 1; /* done */
	if (read_group(sc, sc->next, BUCKET_SIZE) != 0) {
		sc->err = 1;
		return 1;
	}
	u64 ovf = 0;
	if (!(sc->old && sc->next == sc->base + (u64)sc->i * BUCKET_SIZE && sc->buf[0] > 1 && sc->buf[0] < 5)) {
		bpf_loop(GOMAP_SLOTS, tc_slot_cb, ctx, 0);
		__builtin_memcpy(&ovf, sc->buf + BUCKET_OVERFLOW, 8);
	}
	if (ovf) {
		sc->next = ovf;
		return 0;
	}
	sc->i++;
	sc->next = sc->base + (u64)sc->i * BUCKET_SIZE;
	return 0;
}

/* hmap_scan scans nb buckets at buckets (old: the old array of a map being
 * grown), with what is left of a budget of TC_MAX_GROUPS reads. */
static __always_inline int hmap_scan(struct tc_scratch *sc, u64 buckets, u32 nb, u32 old)
{
	sc->base = sc->next = buckets;
	sc->nb = nb;
	sc->i = 0;
	sc->old = old;
	sc->err = 0;
	struct tc_loop lc = {.sc = sc};
	long n = bpf_loop(TC_MAX_GROUPS, tc_bucket_cb, &lc, 0);
	if (n < 0 || sc->err || sc->i < sc->nb)
		return -1; /* a failed read, or more than one walk reads */
	return 0;
}

/* tc_walk finds traceparent and tracestate in the map[string][]string
 * whose *hmap / *maps.Map is m, into sc->f. Returns 0 when the map was read
 * (found or not), -1 when it could not be. */
static __noinline int tc_walk(struct tc_scratch *sc, u64 m)
{
	if (!m)
		return 0; /* a nil map: no headers */
	if (off_smap_dirptr != OFF_NONE && off_smap_dirlen != OFF_NONE) {
		sc->layout = LAYOUT_SWISS;
		sc->err = 0;
		u64 dir = 0;
		s64 dirlen = 0;
		if (bpf_probe_read_user(&dir, sizeof(dir), (void *)(m + off_smap_dirptr)) != 0 ||
		    bpf_probe_read_user(&dirlen, sizeof(dirlen), (void *)(m + off_smap_dirlen)) != 0)
			return -1;
		if (!dir)
			return 0;
		if (dirlen == 0) { /* a small map: dir is its one group */
			sc->base = dir;
			sc->mask = 0;
		} else {
			if (dirlen != 1 || off_stable_groups == OFF_NONE || off_sgroups_data == OFF_NONE ||
			    off_sgroups_mask == OFF_NONE)
				return -1;
			u64 table = 0;
			if (bpf_probe_read_user(&table, sizeof(table), (void *)dir) != 0 || !table ||
			    bpf_probe_read_user(&sc->base, sizeof(sc->base),
						(void *)(table + off_stable_groups + off_sgroups_data)) != 0 ||
			    bpf_probe_read_user(&sc->mask, sizeof(sc->mask),
						(void *)(table + off_stable_groups + off_sgroups_mask)) != 0)
				return -1;
			if (sc->mask >= TC_MAX_GROUPS)
				return -1;
		}
		struct tc_loop lc = {.sc = sc};
		bpf_loop(TC_MAX_GROUPS, tc_group_cb, &lc, 0);
		return sc->err ? -1 : 0;
	}
	if (off_hmap_b == OFF_NONE || off_hmap_buckets == OFF_NONE || off_hmap_oldbuckets == OFF_NONE ||
	    off_hmap_flags == OFF_NONE)
		return -1;
	sc->layout = LAYOUT_HMAP;
	u8 b = 0, flags = 0;
	u64 buckets = 0, old = 0;
	if (bpf_probe_read_user(&b, sizeof(b), (void *)(m + off_hmap_b)) != 0 ||
	    bpf_probe_read_user(&flags, sizeof(flags), (void *)(m + off_hmap_flags)) != 0 ||
	    bpf_probe_read_user(&buckets, sizeof(buckets), (void *)(m + off_hmap_buckets)) != 0 ||
	    bpf_probe_read_user(&old, sizeof(old), (void *)(m + off_hmap_oldbuckets)) != 0)
		return -1;
	if (b > 4)
		return -1; /* more buckets than one walk reads */
	/* A map being grown keeps the entries of old buckets not evacuated
	 * yet there; each entry is in exactly one place (runtime/map.go,
	 * evacuate). */
	if (old) {
		u32 nold = (flags & HMAP_SAME_SIZE_GROW) ? 1U << b : (b ? 1U << (b - 1) : 1);
		if (hmap_scan(sc, old, nold, 1) != 0)
			return -1;
	}
	if (buckets && hmap_scan(sc, buckets, 1U << b, 0) != 0)
		return -1;
	return 0;
}

/* hex_val maps a byte to its lower-case hex digit's value, or 0x10 (W3C:
 * lower-case hex only). A table, not branches: the verifier would follow
 * every combination of the 48 digits' branches. */
static const u8 hex_val[256] = {
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
};

/* hex_u64 parses 16 hex digits at s; -1 on a bad digit. Not inlined:
 * three unrolled copies in one frame spill registers past what the
 * verifier's 512-byte limit on a call chain's stacks leaves (Linux 6.18.44
 * counted 384 bytes for tc_start alone). */
static __noinline int hex_u64(const char *s, u64 *out)
{
	u64 v = 0;
	u8 bad = 0;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		u8 d = hex_val[(u8)s[i]];
		bad |= d;
		v = v << 4 | (d & 15);
	}
	*out = v;
	return (bad & 0x10) ? -1 : 0;
}

/* tc_parse parses a traceparent value (W3C Trace Context level 1, section
 * 3.2): version 00 is exactly 55 characters; a later version may be longer
 * if the 55 are followed by '-'; ff is invalid, as are all-zero IDs.
 * Returns 0 and fills hi, lo, parent and the flags byte, or -1. */
static __always_inline int tc_parse(struct tc_scratch *sc, struct go_string *v, struct trace_ctx *out, u8 *flags)
{
	if (v->len < TRACEPARENT_LEN || v->len > 256)
		return -1;
	u32 n = v->len > TRACEPARENT_LEN ? TRACEPARENT_LEN + 1 : TRACEPARENT_LEN;
	if (bpf_probe_read_user(sc->value, n, (void *)v->ptr) != 0)
		return -1;
	const char *s = sc->value;
	u8 v1 = hex_val[(u8)s[0]], v2 = hex_val[(u8)s[1]];
	if ((v1 | v2) & 0x10 || (v1 == 15 && v2 == 15))
		return -1;
	if (v1 == 0 && v2 == 0 && v->len != TRACEPARENT_LEN)
		return -1;
	if (v->len > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-')
		return -1;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -1;
	u64 hi, lo, parent;
	if (hex_u64(s + 3, &hi) || hex_u64(s + 19, &lo) || hex_u64(s + 36, &parent))
		return -1;
	u8 f1 = hex_val[(u8)s[53]], f2 = hex_val[(u8)s[54]];
	if ((f1 | f2) & 0x10 || (!hi && !lo) || !parent)
		return -1;
	out->trace_hi = hi;
	out->trace_lo = lo;
	out->parent_span = parent;
	*flags = (u8)(f1 << 4 | f2);
	return 0;
}

static __always_inline u64 rand64(void)
{
	return ((u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
}

/* tc_root draws a new trace. */
static __always_inline void tc_root(struct trace_ctx *tc)
{
	tc->trace_lo = rand64();
	tc->trace_hi = rand64();
	if (!tc->trace_hi) /* the SDK never makes a zero high half either */
		tc->trace_hi = 1;
	if ((tc->trace_lo >> 1) < sample_bound)
		tc->trace |= TR_SAMPLED;
}

/* tc_remote makes tc (span ID aside) the child of a parent in another
 * process: trace ID hi/lo, span parent, sampled its W3C sampled flag,
 * which parent_based samplers follow. */
static __always_inline void tc_remote(struct trace_ctx *tc, u64 hi, u64 lo, u64 parent, u8 sampled)
{
	tc->trace_hi = hi;
	tc->trace_lo = lo;
	tc->parent_span = parent;
	tc->tracestate_ptr = 0;
	tc->tracestate_len = 0;
	tc->trace = TR_REMOTE;
	if (parent_based ? sampled : ((lo >> 1) < sample_bound))
		tc->trace |= TR_SAMPLED;
}

/* tc_start decides the context of a span starting now. hdrs is the
 * request's map[string][]string of headers or metadata (0: none). Only
 * with spans on: without them no span is made, and nothing is read. */
static __noinline __attribute__((unused)) void tc_start(u64 hdrs, struct trace_ctx *tc)
{
	__builtin_memset(tc, 0, sizeof(*tc));
	if (!with_spans)
		return;
	u32 zero = 0;
	struct tc_scratch *sc = bpf_map_lookup_elem(&obsd_tc_scratch, &zero);
	if (!sc) /* cannot happen: a one-slot per-CPU array */
		return;
	struct tc_found *f = &sc->f;
	__builtin_memset(f, 0, sizeof(*f));
	u8 flags = 0;
	int parent = 0;
	if (hdrs) {
		if (tc_walk(sc, hdrs) != 0) {
			count(CNT_TRACECTX_UNREAD);
		} else if (f->parent_n > 0) {
			if (f->parent_n == 1 && tc_parse(sc, &f->parent, tc, &flags) == 0)
				parent = 1;
			else
				count(CNT_TRACEPARENT_INVALID);
		}
	}
	if (parent) {
		tc_remote(tc, tc->trace_hi, tc->trace_lo, tc->parent_span, flags & 1);
		/* tracestate goes with a valid traceparent only (W3C 3.3). */
		if (f->state_n > 0 && f->state.len > 0 && f->state.len <= TRACESTATE_MAX) {
			tc->tracestate_ptr = f->state.ptr;
			tc->tracestate_len = (u16)f->state.len;
			tc->trace |= TR_STATE;
		}
	} else {
		tc_root(tc);
	}
	tc->span = rand64() | 1;
}

/* tc_end says whether the span whose context is tc, ended after d ns with
 * failed set when it failed, is exported, adding why to tc->trace. */
static __always_inline int tc_end(struct trace_ctx *tc, u64 d, int failed)
{
	if (!with_spans)
		return 0;
	if (tc->trace & TR_SAMPLED)
		return 1;
	if (keep_slow_ns && d >= keep_slow_ns)
		tc->trace |= TR_KEPT_SLOW;
	if (keep_errors && failed)
		tc->trace |= TR_KEPT_ERROR;
	return (tc->trace & (TR_KEPT_SLOW | TR_KEPT_ERROR)) != 0;
}

/* In-process parents. While a SERVER span's request is in flight, its
 * context.Context (the data word of Request.ctx: a *context.cancelCtx) maps
 * to the span's context here; a CLIENT span starting in the same process
 * walks its own context's chain of parents up to this entry. Every context
 * type of package context keeps its parent Context as its first field
 * (cancelCtx, timerCtx through its cancelCtx, valueCtx, withoutCancelCtx,
 * afterFuncCtx; context/context.go), so the walk reads 16 bytes per level
 * and stops at a nil parent, after CTX_WALK_MAX levels (counted), or at an entry. An
 * entry is deleted when its request ends: a goroutine that outlives the
 * request, or a pooled connection, finds nothing and starts a new trace.
 * Shared by every probe of a process (the obsd_shared_ prefix tells the
 * loader to give all probes one map). */
struct ctx_key {
	u64 ctx;
	u32 tgid;
	u32 _pad;
};

struct ctx_span {
	u64 trace_hi;
	u64 trace_lo;
	u64 span;
	u8 sampled;
	u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ctx_key);
	__type(value, struct ctx_span);
} obsd_shared_ctx_spans SEC(".maps");

/* Levels a walk reads: caddy's reverse proxy calls out 9 levels below its
 * request's context, a gRPC attempt adds 3 or 4. */
#define CTX_WALK_MAX 16

/* tc_publish makes tc the parent of client calls made under ctx. */
static __noinline __attribute__((unused)) void tc_publish(u32 tgid, u64 ctx, struct trace_ctx *tc)
{
	if (!ctx)
		return;
	struct ctx_key k = {.ctx = ctx, .tgid = tgid, ._pad = 0};
	struct ctx_span v = {.trace_hi = tc->trace_hi,
			     .trace_lo = tc->trace_lo,
			     .span = tc->span,
			     .sampled = (tc->trace & TR_SAMPLED) ? 1 : 0};
	if (bpf_map_update_elem(&obsd_shared_ctx_spans, &k, &v, BPF_ANY) != 0)
		count(CNT_CTX_MAP_FULL);
}

/* tc_forget ends what tc_publish started. */
static __always_inline void tc_forget(u32 tgid, u64 ctx)
{
	struct ctx_key k = {.ctx = ctx, .tgid = tgid, ._pad = 0};
	bpf_map_delete_elem(&obsd_shared_ctx_spans, &k);
}

/* tc_child decides the context of a CLIENT span starting under ctx (the
 * data word of its context.Context) in process tgid: the child of the
 * server span found up ctx's chain, else a new root. */
static __always_inline void tc_child(u32 tgid, u64 ctx, struct trace_ctx *tc)
{
	__builtin_memset(tc, 0, sizeof(*tc));
	if (!with_spans)
		return;
	struct ctx_key k = {.ctx = ctx, .tgid = tgid, ._pad = 0};
	struct ctx_span *v = NULL;
	for (int i = 0; i < CTX_WALK_MAX; i++) {
		if (!k.ctx)
			break;
		v = bpf_map_lookup_elem(&obsd_shared_ctx_spans, &k);
		if (v)
			break;
		u64 parent[2]; /* the parent Context: itab, data */
		if (bpf_probe_read_user(parent, sizeof(parent), (void *)k.ctx) != 0 || !parent[0]) {
			k.ctx = 0; /* the chain's end */
			break;
		}
		k.ctx = parent[1];
	}
	if (!v && k.ctx) /* more parents than the walk reads: maybe a parent missed */
		count(CNT_CTX_WALK_DEEP);
	if (v) {
		tc->trace_hi = v->trace_hi;
		tc->trace_lo = v->trace_lo;
		tc->parent_span = v->span;
		if (parent_based ? v->sampled : ((tc->trace_lo >> 1) < sample_bound))
			tc->trace |= TR_SAMPLED;
	} else {
		tc_root(tc);
	}
	tc->span = rand64() | 1;
}

/* tc_fill copies a sampled span's context into a record e, whose fields
 * share these names in every probe's event. A macro: the events are of
 * different types. */
#define tc_fill(e, tc)                                                                                                 \
	do {                                                                                                           \
		(e)->trace_id_low = (tc).trace_lo;                                                                     \
		(e)->trace_id_high = (tc).trace_hi;                                                                    \
		(e)->span_id = (tc).span;                                                                              \
		(e)->parent_span_id = (tc).parent_span;                                                                \
		(e)->trace = (tc).trace;                                                                               \
	} while (0)

#endif
