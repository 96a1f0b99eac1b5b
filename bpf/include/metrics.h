/* In-kernel duration histograms for the call probes (gRPC server and
 * client, HTTP client): a call that is not sampled for a span is counted
 * here, under a key of its labels, instead of being sent as a record, as
 * the HTTP server probe does. Labels that are strings (a gRPC method, a
 * server address) are in the key by hash; the string itself is left once,
 * before its first series, in the probe's names map, where user space
 * reads it at scrape time.
 *
 * A probe declares its maps with DECLARE_METRICS (its histograms by its
 * own key, the names, its series per process and a per-CPU name to read
 * strings into) and counts with hist_count. */
#ifndef OBSD_METRICS_H
#define OBSD_METRICS_H

#include "obsd.h"

/* Upper bounds of the duration buckets in ns, set by the loader from the
 * exported histogram's (the semconv buckets), so the two cannot disagree. */
#define DURATION_BOUNDS 14
volatile const u64 duration_bounds_ns[DURATION_BOUNDS] = {};

/* The loader sets the bounds only where user space reads the histograms
 * (a metrics exporter): until then every call is a record. */
static __always_inline int metrics_on(void)
{
	return duration_bounds_ns[DURATION_BOUNDS - 1] != 0;
}

/* Series one process may hold in the probe's metrics map (shared by every
 * process): past it, its calls go out as records (counted). */
volatile const s64 hist_budget_series = 1024;

struct hist {
	u64 buckets[DURATION_BOUNDS + 1]; /* non-cumulative; the last is +Inf */
	u64 sum_ns;
};

/* Bytes of names kept: longer ones are cut and flagged. */
#define NAME_MAX_LEN 256

struct name_key {
	u32 tgid;
	u32 _pad;
	u64 hash;
};

/* One or two strings (a method and a host) back to back: the first len_a
 * bytes, then len_b. */
struct obsd_name {
	u16 len_a;
	u16 len_b;
	u8 flags; /* the probe's own truncation flags */
	u8 _pad[3];
	char name[NAME_MAX_LEN];
};

#define DECLARE_METRICS(metrics, names, budget, scratch, key_type, max_series)                                         \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                                                                \
		__uint(max_entries, max_series);                                                                       \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                                                  \
		__type(key, key_type);                                                                                 \
		__type(value, struct hist);                                                                            \
	} metrics SEC(".maps");                                                                                        \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_HASH);                                                                       \
		__uint(max_entries, max_series);                                                                       \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                                                  \
		__type(key, struct name_key);                                                                          \
		__type(value, struct obsd_name);                                                                       \
	} names SEC(".maps");                                                                                          \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_HASH);                                                                       \
		__uint(max_entries, 8192);                                                                             \
		__type(key, u32);                                                                                      \
		__type(value, s64);                                                                                    \
	} budget SEC(".maps");                                                                                         \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                                               \
		__uint(max_entries, 1);                                                                                \
		__type(key, u32);                                                                                      \
		__type(value, struct obsd_name);                                                                       \
	} scratch SEC(".maps")

/* name_hash hashes n's lengths, flags and every byte of its name (zero past
 * its lengths, as name_zero leaves it): the series key's half that stands
 * for the strings. */
static __always_inline u64 name_hash(const struct obsd_name *n)
{
	u64 h = 0xcbf29ce484222325ULL ^ ((u64)n->flags << 32 | (u64)n->len_b << 16 | n->len_a);
	const u64 *w = (const u64 *)n->name;
#pragma unroll
	for (int i = 0; i < NAME_MAX_LEN / 8; i++) {
		h = (h ^ w[i]) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	return h;
}

/* hist_add adds one call of d ns to v (this CPU's copy: no atomics). */
static __always_inline void hist_add(struct hist *v, u64 d)
{
	u32 b = 0;
#pragma unroll
	for (int i = 0; i < DURATION_BOUNDS; i++) {
		if (d <= duration_bounds_ns[i])
			break;
		b++;
	}
	if (b > DURATION_BOUNDS) /* bounds for the verifier */
		b = DURATION_BOUNDS;
	v->buckets[b] += 1;
	v->sum_ns += d;
}

/* hist_count counts a call of d ns under key (whose first u32 is the
 * tgid) in metrics; a new series first leaves n under (tgid, hash) in
 * names and takes one of the process's budget. 0 when it could not (map
 * full or the budget spent; counted): the caller sends a record instead,
 * which loses nothing. */
static __always_inline int hist_count(void *metrics, void *names, void *budget, void *key, u32 tgid, u64 hash,
				      const struct obsd_name *n, u64 d)
{
	struct hist *v = bpf_map_lookup_elem(metrics, key);
	if (v) {
		hist_add(v, d);
		return 1;
	}
	s64 *used = bpf_map_lookup_elem(budget, &tgid);
	if (!used) {
		s64 zero = 0;
		bpf_map_update_elem(budget, &tgid, &zero, BPF_NOEXIST);
		used = bpf_map_lookup_elem(budget, &tgid);
	}
	if (!used || *used >= hist_budget_series) {
		count(CNT_METRICS_BUDGET);
		return 0;
	}
	/* Concurrent takers may overshoot by one per CPU: harmless. */
	__sync_fetch_and_add(used, 1);
	struct name_key nk = {.tgid = tgid, .hash = hash};
	long err = bpf_map_update_elem(names, &nk, n, BPF_NOEXIST);
	if (err != 0 && err != -17 /* EEXIST: another series of the same strings */) {
		__sync_fetch_and_add(used, -1);
		count(CNT_METRICS_FULL);
		return 0;
	}
	struct hist fresh = {};
	/* EEXIST: another CPU added the key meanwhile; the lookup finds it. */
	bpf_map_update_elem(metrics, key, &fresh, BPF_NOEXIST);
	v = bpf_map_lookup_elem(metrics, key);
	if (!v) {
		__sync_fetch_and_add(used, -1);
		count(CNT_METRICS_FULL);
		return 0;
	}
	hist_add(v, d);
	return 1;
}

#endif
