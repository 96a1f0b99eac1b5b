/* Shared definitions for obsd's uprobe programs on Go binaries (amd64). */
#ifndef OBSD_H
#define OBSD_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;

/* User-space register layout the kernel hands uprobe programs on x86-64.
 * Defined here so the build needs no arch-specific kernel headers. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* Go's register ABI (ABIInternal, Go 1.17+ on amd64): integer arguments in
 * RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11; the current g in R14. At a
 * function's PUSHQ BP the arguments are still in their registers. */
#define GO_ARG1(r) ((r)->ax)
#define GO_ARG2(r) ((r)->bx)
#define GO_ARG3(r) ((r)->cx)
#define GO_ARG4(r) ((r)->di)
#define GO_G(r) ((r)->r14)

/* load_bias is what was added to the target's link-time addresses when it
 * was loaded (0 unless PIE): the probe's ip minus its site's link-time
 * address, which the loader sets. ip may be past the trap byte; a PIE's
 * bias is page-aligned, so round to the nearest page. */
static __always_inline u64 load_bias(struct pt_regs *ctx, u64 site_vaddr)
{
	return (ctx->ip - site_vaddr + 2048) & ~4095ULL;
}

/* An offset constant left at OFF_NONE means the field does not exist in the
 * target's version; the loader rewrites every offset it knows. */
#define OFF_NONE ((u64)-1)

/* Indexes of the per-CPU counters user space reads at scrape time
 * (internal/uprobes/stats.go names them and says which are losses). */
enum obsd_counter {
	CNT_RINGBUF_FULL = 0, /* lost: record not submitted, ring buffer full */
	CNT_INFLIGHT_FULL,    /* lost: start not recorded, in-flight map full */
	CNT_UNMATCHED_END,    /* end seen without its start (attached mid-request) */
	CNT_STALE_START,      /* lost: a start found its goroutine's previous request never ended */
	CNT_READ_FAILED,      /* lost: a user-memory read failed, nothing trustworthy to report */
	CNT_METRICS_FULL,     /* in-kernel metrics map full: sent as a record instead */
	CNT_INFLIGHT_BUDGET,  /* lost: the process has its budget of in-flight slots */
	CNT_METRICS_BUDGET,   /* the process has its budget of in-kernel series: sent as a record */
	CNT_TRACEPARENT_INVALID, /* an incoming traceparent was malformed or repeated: the span is a root */
	CNT_TRACECTX_UNREAD,  /* the headers could not be read for trace context: the span is a root */
	CNT_CTX_MAP_FULL,     /* the map of in-process parents is full: calls under this request start new traces */
	CNT_TCPCTX_CONN,      /* --propagate=tcp: a connection not a *net.TCPConn (or TLS over one), or unreadable: no context crosses it */
	CNT_TCPCTX_OUT_FULL,  /* --propagate=tcp: obsd_tcp_out full: this request carries no context */
	CNT_CTX_WALK_DEEP,    /* a client call's context chain is deeper than the walk for its server span: a root */
	CNT_TCPCTX_STREAM,    /* --propagate=tcp: a multiplexed stream whose connection's latest context was another stream's: a root */
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	/* Keyed by the enum, so that its BTF (and bpf2go's Go constants, by
	 * which each probe names its counters) exists in every object. */
	__type(key, enum obsd_counter);
	__type(value, u64);
} obsd_counters SEC(".maps");

static __always_inline void count(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&obsd_counters, &idx);
	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* Short strings as little-endian u64 values, to compare the first bytes
 * of a buffer in one go: M4('h', 't', 't', 'p'). */
#define C8(x, i) ((u64)(u8)(x) << (8 * (i)))
#define M3(a, b, c) (C8(a, 0) | C8(b, 1) | C8(c, 2))
#define M4(a, b, c, d) (M3(a, b, c) | C8(d, 3))
#define M5(a, b, c, d, e) (M4(a, b, c, d) | C8(e, 4))
#define M6(a, b, c, d, e, f) (M5(a, b, c, d, e) | C8(f, 5))
#define M7(a, b, c, d, e, f, g) (M6(a, b, c, d, e, f) | C8(g, 6))

/* A Go string header. */
struct go_string {
	u64 ptr;
	u64 len;
};

/* read_go_string copies at most max bytes of the Go string whose header is
 * at addr into dst and returns the string's full length (so the caller can
 * tell truncation), or -1 if the header could not be read. */
static __always_inline s64 read_go_string(void *dst, u32 max, u64 addr, u32 *copied)
{
	struct go_string s;
	*copied = 0;
	if (bpf_probe_read_user(&s, sizeof(s), (void *)addr) != 0)
		return -1;
	u32 n = s.len < max ? (u32)s.len : max;
	if (n > 0 && bpf_probe_read_user(dst, n, (void *)s.ptr) != 0)
		return -1;
	*copied = n;
	return (s64)s.len;
}

#endif
