//go:build ignore

/* sock_ops program, attached at the cgroup v2 root, that carries W3C trace
 * context across a TCP connection in an experimental header option (see
 * tcpctx.h for the wire format and the maps), and an sk_msg program that
 * adds a traceparent header to outgoing HTTP/1.x requests:
 *
 *  - sender: a connection opened (connect) by a process listed in
 *    obsd_tcp_senders gets the header-option write callbacks
 *    (write_options); each data segment it sends while obsd_tcp_out holds
 *    an entry for it carries that context. With inject_headers, the
 *    connection also joins obsd_tcp_socks once established, whose sk_msg
 *    program sees each of its sendmsg calls before TCP does: the first one
 *    after a new obsd_tcp_out entry, when it holds a whole HTTP/1.x request
 *    head without a traceparent, gets one (bpf_msg_push_data: the bytes are
 *    the kernel's copy of the message, never the process's memory).
 *  - receiver: a connection accepted on a (netns, port) listed in
 *    obsd_tcp_receivers gets the parse callback for segments with an
 *    option the kernel does not know; the context found is kept in
 *    obsd_tcp_in.
 *
 * Both callbacks are per socket, so other connections on the host never run
 * this program per packet; a connection's entries are deleted when it
 * closes. */
#include <bpf/bpf_endian.h>
#include "tcpctx.h"
#include "tcpctx_rx.h"
#include "tcpctx_socks.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCPHDR_SYN 0x02
#define TCPHDR_RST 0x04
#define ENOMSG 42

/* Indexes of the per-CPU counters internal/tcpctx reads. */
enum tcpctx_counter {
	TCPCTX_WRITTEN = 0,     /* segments sent with the option */
	TCPCTX_NO_SPACE,        /* lost: a data segment with a context had no option space left (SACK, MD5) */
	TCPCTX_STORE_FAILED,    /* lost: the option could not be written into reserved space */
	TCPCTX_PARSED,          /* segments whose option was read */
	TCPCTX_IN_FULL,         /* lost: obsd_tcp_in full, a new connection's context not kept */
	TCPCTX_MALFORMED,       /* an option with our ExID but the wrong length: ignored */
	TCPCTX_FLAGS_FAILED,    /* a connection that could not get the callbacks */
	TCPCTX_NETNS_FAILED,    /* a socket whose network namespace could not be read */
	TCPCTX_HDR_INJECTED,    /* requests given a traceparent header */
	TCPCTX_HDR_PRESENT,     /* requests that already carried one: left as they were */
	TCPCTX_HDR_NOT_HTTP1,   /* a context whose first message was not an HTTP/1.x request head (HTTP/2, TLS, ...) */
	TCPCTX_HDR_TOO_LONG,    /* a request head not whole in its first message's first 4 KiB: left as it was */
	TCPCTX_HDR_FAILED,      /* no room: send buffer or TCP memory too tight, or pull/push failed: left as it was */
	TCPCTX_HDR_RACED,       /* the scan buffer was reused mid-scan on this CPU: left as it was */
	TCPCTX_SOCKS_FAILED,    /* a sender's connection that could not join obsd_tcp_socks: no headers on it */
	TCPCTX_HDR_H2_LOST,     /* an HTTP/2 connection whose frames the injector lost track of: no headers on it from then on */
	TCPCTX_HDR_H2_UNREAD,   /* an HTTP/2 request on a connection where an earlier header block could not be read whole */
	TCPCTX_HDR_H2_NO_CTX,   /* an HTTP/2 request of a sender with no stream context: a client the stream sites miss */
	TCPCTX_CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPCTX_CNT_MAX);
	__type(key, enum tcpctx_counter);
	__type(value, __u64);
} obsd_tcp_counters SEC(".maps");

/* What senders' connections do, set by user space at load: carry the
 * option (--propagate=tcp), get headers (--propagate=headers), or both. */
volatile const __u8 write_options = 1;
volatile const __u8 inject_headers = 0;
/* 0 makes the injector do what it does where the kernel refuses a push at
 * a message's end (bpf_msg_push_data returned -EINVAL there until the 2024
 * fix "bpf, sockmap: Several fixes to bpf_msg_push_data"): tests set it to
 * cover both paths on one kernel. */
volatile const __u8 push_at_end = 1;

/* Just the fields used, relocated against the running kernel's BTF
 * (struct net is in tcpctx.h). */
typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;
struct proto {
	unsigned long *memory_pressure;
} __attribute__((preserve_access_index));
struct sock_common {
	possible_net_t skc_net;
	struct proto *skc_prot;
} __attribute__((preserve_access_index));
struct sock {
	struct sock_common __sk_common;
	int sk_sndbuf;
	int sk_wmem_queued;
} __attribute__((preserve_access_index));
struct tcp_sock {
	__u64 bytes_sent; /* data bytes sent, retransmissions included */
	__u32 snd_nxt;
	__u32 write_seq;  /* sequence number after the last byte queued */
} __attribute__((preserve_access_index));

/* The wire option. */
struct tcpctx_opt {
	__u8 kind;
	__u8 len;
	__u8 exid[2];
	__u8 trace_id[16];
	__u8 span_id[8];
} __attribute__((packed));

_Static_assert(sizeof(struct tcpctx_opt) == TCPCTX_OPT_LEN, "option length");
_Static_assert(sizeof(struct tcpctx_key) == 40, "key layout");
_Static_assert(sizeof(struct tcpctx_out) == 32, "out layout");
_Static_assert(sizeof(struct tcpctx_in) == 40, "in layout");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&obsd_tcp_counters, &idx);
	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* netns_of returns the inode of the socket's network namespace, 0 if it
 * cannot be read. */
static __always_inline __u32 netns_of(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 0;
	struct sock *s = (struct sock *)bpf_skc_to_tcp_sock(sk);
	if (!s)
		return 0;
	return BPF_CORE_READ(s, __sk_common.skc_net.net, ns.inum);
}

/* ctx_u32 reads one 32-bit context field: the verifier refuses the 64-bit
 * loads clang would otherwise merge neighbouring fields into. */
static __always_inline __u32 ctx_u32(const __u32 *f)
{
	return *(volatile const __u32 *)f;
}

static __always_inline void v4mapped(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* key_of fills k with the connection as this end sees it; 0 if the
 * family is not IP or the namespace is unreadable. */
static __always_inline int key_of(struct bpf_sock_ops *skops, struct tcpctx_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = netns_of(skops);
	if (k->netns == 0) {
		count(TCPCTX_NETNS_FAILED);
		return 0;
	}
	k->lport = (__u16)skops->local_port;
	k->rport = (__u16)bpf_ntohl(skops->remote_port);
	switch (skops->family) {
	case AF_INET:
		v4mapped(k->laddr, skops->local_ip4);
		v4mapped(k->raddr, skops->remote_ip4);
		return 1;
	case AF_INET6: {
		__u32 a[4];
		a[0] = ctx_u32(&skops->local_ip6[0]);
		a[1] = ctx_u32(&skops->local_ip6[1]);
		a[2] = ctx_u32(&skops->local_ip6[2]);
		a[3] = ctx_u32(&skops->local_ip6[3]);
		__builtin_memcpy(k->laddr, a, 16);
		a[0] = ctx_u32(&skops->remote_ip6[0]);
		a[1] = ctx_u32(&skops->remote_ip6[1]);
		a[2] = ctx_u32(&skops->remote_ip6[2]);
		a[3] = ctx_u32(&skops->remote_ip6[3]);
		__builtin_memcpy(k->raddr, a, 16);
		return 1;
	}
	}
	return 0;
}

/* conn_key returns the socket's key: its stored copy, else one formed in
 * buf (and stored when memory allows); NULL when it cannot be formed. Call
 * it only once the connection is established (addresses final). */
static __always_inline struct tcpctx_key *conn_key(struct bpf_sock_ops *skops, struct tcpctx_key *buf)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 0;
	struct tcpctx_key *k = bpf_sk_storage_get(&obsd_tcp_keys, sk, 0, 0);
	if (k)
		return k;
	if (!key_of(skops, buf))
		return 0;
	k = bpf_sk_storage_get(&obsd_tcp_keys, sk, buf, BPF_SK_STORAGE_GET_F_CREATE);
	return k ? k : buf;
}

static __always_inline void set_flags(struct bpf_sock_ops *skops, int add)
{
	if (bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | add) != 0)
		count(TCPCTX_FLAGS_FAILED);
}

/* connect(2), in the connecting task: only senders' connections get the
 * per-segment write callbacks. */
static __always_inline void on_connect(struct bpf_sock_ops *skops)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&obsd_tcp_senders, &tgid))
		return;
	/* The state callback deletes the connection's entries at close. */
	set_flags(skops, (write_options ? BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG : 0) | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (inject_headers && skops->sk) {
		__u8 one = 1;
		if (!bpf_sk_storage_get(&obsd_tcp_hdr_mark, skops->sk, &one, BPF_SK_STORAGE_GET_F_CREATE))
			count(TCPCTX_SOCKS_FAILED);
	}
}

/* A sender's connection is established: give it the header injector. Its
 * key is stored now, for the sk_msg program, which cannot form one. */
static __always_inline void on_active(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!inject_headers || !sk || !bpf_sk_storage_get(&obsd_tcp_hdr_mark, sk, 0, 0))
		return;
	struct tcpctx_key buf;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tcpctx_key *k = conn_key(skops, &buf);
	if (!k) {
		count(TCPCTX_SOCKS_FAILED);
		return;
	}
	/* No probe has written for this connection yet (its program is still
	 * dialling): an entry is a leftover of an earlier connection with the
	 * same addresses that never got the close callback, and must not
	 * reach this one's first message (a CONNECT to a proxy, say). */
	bpf_map_delete_elem(&obsd_tcp_out, k);
	if (bpf_sock_hash_update(skops, &obsd_tcp_socks, &cookie, BPF_NOEXIST) != 0)
		count(TCPCTX_SOCKS_FAILED);
}

/* reserve runs before each segment is built, and with no segment when the
 * kernel sizes the MSS. */
static __always_inline void reserve(struct bpf_sock_ops *skops)
{
	if (!write_options)
		return;
	__u32 fl = skops->skb_tcp_flags;
	if (fl == 0) {
		/* MSS computation (no skb): always leave room, so that a
		 * full-sized segment never outgrows the path MTU when a context
		 * appears later. Failing here loses nothing yet. */
		bpf_reserve_hdr_opt(skops, TCPCTX_OPT_LEN, 0);
		return;
	}
	if (fl & (TCPHDR_SYN | TCPHDR_RST))
		return;
	if (skops->skb_len == 0) /* pure ACK or FIN: no request bytes */
		return;
	struct tcpctx_key buf;
	struct tcpctx_key *k = conn_key(skops, &buf);
	if (!k)
		return;
	if (!bpf_map_lookup_elem(&obsd_tcp_out, k))
		return;
	if (bpf_reserve_hdr_opt(skops, TCPCTX_OPT_LEN, 0) != 0)
		count(TCPCTX_NO_SPACE);
}

static __always_inline void write_opt(struct bpf_sock_ops *skops)
{
	if (!write_options)
		return;
	__u32 fl = skops->skb_tcp_flags;
	if (fl & (TCPHDR_SYN | TCPHDR_RST))
		return;
	struct tcpctx_key buf;
	struct tcpctx_key *k = conn_key(skops, &buf);
	if (!k)
		return;
	struct tcpctx_out *v = bpf_map_lookup_elem(&obsd_tcp_out, k);
	if (!v)
		return; /* deleted since reserve: the kernel pads with NOPs */
	struct tcpctx_opt o = {
		.kind = TCPCTX_OPT_KIND,
		.len = TCPCTX_OPT_LEN,
	};
	__u16 exid = TCPCTX_EXID | (v->flags & TCPCTX_FLAG_SAMPLED);
	o.exid[0] = exid >> 8;
	o.exid[1] = exid & 0xff;
	__builtin_memcpy(o.trace_id, v->trace_id, 16);
	__builtin_memcpy(o.span_id, v->span_id, 8);
	if (bpf_store_hdr_opt(skops, &o, sizeof(o), 0) != 0) {
		count(TCPCTX_STORE_FAILED);
		return;
	}
	count(TCPCTX_WRITTEN);
}

/* find copies our option from the segment into o; its sampled flag in
 * *sampled. 1 found, 0 absent, -1 malformed. */
static __always_inline int find(struct bpf_sock_ops *skops, struct tcpctx_opt *o, __u8 *sampled)
{
	for (__u8 s = 0; s < 2; s++) {
		__builtin_memset(o, 0, sizeof(*o));
		__u16 exid = TCPCTX_EXID | s;
		o->kind = TCPCTX_OPT_KIND;
		o->len = 4; /* search by a 2-byte ExID */
		o->exid[0] = exid >> 8;
		o->exid[1] = exid & 0xff;
		long n = bpf_load_hdr_opt(skops, o, sizeof(*o), 0);
		if (n == TCPCTX_OPT_LEN) {
			*sampled = s;
			return 1;
		}
		if (n != -ENOMSG)
			return -1; /* wrong length (-ENOSPC when longer) or unparsable */
	}
	return 0;
}

static __always_inline void parse(struct bpf_sock_ops *skops)
{
	struct tcpctx_opt o;
	__u8 sampled = 0;
	int r = find(skops, &o, &sampled);
	if (r == 0)
		return;
	if (r < 0) {
		count(TCPCTX_MALFORMED);
		return;
	}
	struct tcpctx_key buf;
	struct tcpctx_key *k = conn_key(skops, &buf);
	if (!k)
		return;
	count(TCPCTX_PARSED);
	struct tcpctx_in *old = bpf_map_lookup_elem(&obsd_tcp_in, k);
	struct tcpctx_in v = {};
	if (old) {
		/* Later segments of the same request repeat its context: keep
		 * the entry (and what its consumer wrote) as it is. */
		if (old->flags == sampled && __builtin_memcmp(old->span_id, o.span_id, 8) == 0 &&
		    __builtin_memcmp(old->trace_id, o.trace_id, 16) == 0)
			return;
		v.gen = old->gen + 1;
		v.taken_gen = old->taken_gen;
	} else {
		v.gen = 1;
	}
	__builtin_memcpy(v.trace_id, o.trace_id, 16);
	__builtin_memcpy(v.span_id, o.span_id, 8);
	v.flags = sampled;
	if (bpf_map_update_elem(&obsd_tcp_in, k, &v, BPF_ANY) != 0)
		count(TCPCTX_IN_FULL);
}

/* The last ACK of the handshake (or the first data segment, when that ACK
 * was lost): parse this connection's segments from now on if its
 * (netns, port) is a receiver's. */
static __always_inline void on_passive(struct bpf_sock_ops *skops)
{
	struct tcpctx_rx_key rk = {};
	rk.netns = netns_of(skops);
	if (rk.netns == 0) {
		count(TCPCTX_NETNS_FAILED);
		return;
	}
	rk.port = (__u16)skops->local_port;
	if (!bpf_map_lookup_elem(&obsd_tcp_receivers, &rk)) {
		rk.port = 0;
		if (!bpf_map_lookup_elem(&obsd_tcp_receivers, &rk))
			return;
	}
	set_flags(skops, BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG);
	parse(skops); /* this segment may already carry request bytes */
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct tcpctx_key k;
	if (!key_of(skops, &k))
		return;
	bpf_map_delete_elem(&obsd_tcp_out, &k);
	bpf_map_delete_elem(&obsd_tcp_in, &k);
}

SEC("sockops")
int obsd_tcpctx(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		on_connect(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_passive(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_active(skops);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		reserve(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		write_opt(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		parse(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_close(skops);
		break;
	}
	return 1;
}

/* --- traceparent headers (sk_msg) --- */

#define HDR_SCAN 4096 /* bytes of a message scanned: Go's default transport write buffer */
#define TP_LINE 70    /* "traceparent: 00-" 32 hex "-" 16 hex "-0" flag "\r\n" */

/* The head of a message, copied for the scan. owner tells a scan whose
 * buffer another program on this CPU reused meanwhile (a preempted sender). */
struct hdr_buf {
	__u64 owner;
	__u8 b[HDR_SCAN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hdr_buf);
} obsd_tcp_hdr_buf SEC(".maps");

enum hdr_verdict {
	HDR_SCANNING = 0,
	HDR_OK,          /* a whole head, no traceparent: end is where the blank line starts */
	HDR_HAS_TP,
	HDR_NOT_HTTP1,
};

struct hdr_scan {
	__u32 len;        /* bytes in the buffer */
	__u32 line_start; /* offset of the current line */
	__u32 line;       /* 0: the request line */
	__u32 end;        /* HDR_OK: offset of the blank line */
	__u8 method_done; /* the request line's method token ended */
	__u8 verdict;
};

/* scan_idx bounds a buffer index where the verifier sees it: clang drops a
 * plain mask after a range check it already did, on another register. */
static __always_inline __u64 scan_idx(__u64 i)
{
	asm volatile("%0 &= %1" : "+r"(i) : "i"(HDR_SCAN - 1));
	return i;
}

#define HB(i) (hb->b[scan_idx(i)])

/* line_is_traceparent says whether the line at i names the header
 * traceparent (names are case-insensitive, RFC 9110 §5.1). */
static __always_inline int line_is_traceparent(struct hdr_buf *hb, __u32 i, __u32 len)
{
	const char name[] = "traceparent:";
	if (i + sizeof(name) - 1 > len)
		return 0;
#pragma unroll
	for (int j = 0; j < (int)sizeof(name) - 1; j++) {
		__u8 c = HB(i + j);
		if (name[j] != ':')
			c |= 0x20; /* ASCII letters to lower case */
		if (c != (__u8)name[j])
			return 0;
	}
	return 1;
}

/* http1_version says whether the 9 bytes at i are " HTTP/1.0" or " HTTP/1.1". */
static __always_inline int http1_version(struct hdr_buf *hb, __u32 i)
{
	const char v[] = " HTTP/1.";
#pragma unroll
	for (int j = 0; j < (int)sizeof(v) - 1; j++)
		if (HB(i + j) != (__u8)v[j])
			return 0;
	__u8 minor = HB(i + 8);
	return minor == '0' || minor == '1';
}

/* scan_method reads byte i of the request line's method (RFC 9112 §3:
 * "METHOD SP target SP HTTP/1.x CRLF"; Go sends upper-case tokens). Returns
 * 1 when the scan is over. */
static __always_inline int scan_method(struct hdr_buf *hb, struct hdr_scan *s, __u32 i)
{
	if (s->method_done)
		return 0;
	if (i >= s->len || i >= HDR_SCAN)
		return 1;
	__u8 c = HB(i);
	if (c == ' ' && i >= 3) {
		s->method_done = 1;
		return 0;
	}
	if (c < 'A' || c > 'Z') {
		s->verdict = HDR_NOT_HTTP1;
		return 1;
	}
	return 0;
}

/* scan_lf handles an LF at i (a candidate: checked here): the end of the
 * request line (its version checked), of a header line, or of the head
 * (the blank line); and looks at the line that starts after it for a
 * traceparent. Returns 1 when the scan is over. */
static __always_inline int scan_lf(struct hdr_buf *hb, struct hdr_scan *s, __u32 i)
{
	if (i >= s->len || i >= HDR_SCAN || HB(i) != '\n')
		return 0;
	if (i == 0 || HB(i - 1) != '\r') {
		s->verdict = HDR_NOT_HTTP1; /* Go writes CRLF; anything else is left alone */
		return 1;
	}
	if (s->line == 0) {
		if (i < 10 || !http1_version(hb, i - 10)) {
			s->verdict = HDR_NOT_HTTP1;
			return 1;
		}
	} else if (i == s->line_start + 1) {
		s->end = s->line_start;
		s->verdict = HDR_OK;
		return 1;
	}
	s->line++;
	s->line_start = i + 1;
	if ((HB(i + 1) | 0x20) == 't' && line_is_traceparent(hb, i + 1, s->len)) {
		s->verdict = HDR_HAS_TP;
		return 1;
	}
	return 0;
}

/* scan_word is the bpf_loop body: bytes 8w to 8w+7 of the head. Past the
 * method, only the LFs matter, found eight at a time (a zero byte of
 * word ^ 0x0a..: the classic has-zero test, whose rare false candidates
 * scan_lf rejects), so a head costs about one call per 8 bytes and one
 * scan_lf per line. */
static long scan_word(__u32 w, void *arg)
{
	struct hdr_scan *s = arg;
	__u32 zero = 0;
	struct hdr_buf *hb = bpf_map_lookup_elem(&obsd_tcp_hdr_buf, &zero);
	__u32 off = w * 8;
	if (!hb || off >= s->len || off >= HDR_SCAN)
		return 1;
	if (!s->method_done) {
#pragma unroll
		for (int j = 0; j < 8; j++)
			if (scan_method(hb, s, off + j))
				return 1;
	}
	__u64 x;
	__builtin_memcpy(&x, &hb->b[scan_idx(off) & ~7ULL], 8);
	x ^= 0x0a0a0a0a0a0a0a0aULL;
	__u64 m = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
	if (!m)
		return 0;
#pragma unroll
	for (int j = 0; j < 8; j++)
		if (((m >> (8 * j + 7)) & 1) && scan_lf(hb, s, off + j))
			return 1;
	return 0;
}

static __always_inline __u8 hex_digit(__u8 n)
{
	return n < 10 ? '0' + n : 'a' + n - 10;
}

static __always_inline void hex(__u8 *dst, const __u8 *src, int n)
{
#pragma unroll
	for (int j = 0; j < n; j++) {
		dst[2 * j] = hex_digit(src[j] >> 4);
		dst[2 * j + 1] = hex_digit(src[j] & 0xf);
	}
}

/* room says whether the socket can queue the message with the line
 * without a partial send: after one, tcp_bpf tells the writer it sent
 * fewer bytes than it did by the ones pushed (net/ipv4/tcp_bpf.c,
 * tcp_bpf_send_verdict subtracts what is left of the grown message), and
 * the program would send part of its head twice. A partial send needs the
 * send buffer full or TCP under memory pressure; both are checked with a
 * margin (twice the bytes, for the buffers' overhead, plus 4 KiB). */
static __always_inline int room(struct bpf_sock *bsk, __u32 size)
{
	struct sock *sk = (struct sock *)bpf_skc_to_tcp_sock(bsk);
	if (!sk)
		return 0;
	int sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	int queued = BPF_CORE_READ(sk, sk_wmem_queued);
	unsigned long *pressure = BPF_CORE_READ(sk, __sk_common.skc_prot, memory_pressure);
	unsigned long under = 0;
	if (pressure && bpf_probe_read_kernel(&under, sizeof(under), pressure) != 0)
		return 0;
	if (under)
		return 0;
	return (__s64)queued + 2 * ((__s64)size + TP_LINE) + 4096 <= (__s64)sndbuf;
}

/* pull_written pulls the message for writing bytes [from, to) after a
 * push and returns in *base the offset msg->data then stands for. A message
 * of at most LINEAR_MAX bytes is pulled whole, which makes it one element
 * again (base 0): tcp_bpf sends each element as a TCP send of its own
 * without MSG_MORE (net/ipv4/tcp_bpf.c, tcp_bpf_push), so a message a push
 * split would leave in two or three segments, and a reader that wakes for
 * the first parks again for the rest. A longer one, which spans several
 * segments anyway, gets just the range (base from): no large allocation
 * per request. A failed pull leaves the message as it was. */
#define LINEAR_MAX 8192
static __always_inline long pull_written(struct sk_msg_md *msg, __u32 from, __u32 to, __u32 *base)
{
	__u32 n = msg->size;
	if (n <= LINEAR_MAX) {
		*base = 0;
		return bpf_msg_pull_data(msg, 0, n, 0);
	}
	*base = from;
	return bpf_msg_pull_data(msg, from, to, 0);
}

/* tp_value writes the traceparent value of c, "00-" trace "-" span "-0"
 * flag (55 bytes, W3C Trace Context §3.2), at p. */
static __always_inline void tp_value(__u8 *p, const struct tcpctx_out *c)
{
	__builtin_memcpy(p, "00-", 3);
	hex(p + 3, c->trace_id, 16);
	p[35] = '-';
	hex(p + 36, c->span_id, 8);
	p[52] = '-';
	p[53] = '0';
	p[54] = (c->flags & TCPCTX_FLAG_SAMPLED) ? '1' : '0';
}

/* insert adds the traceparent line before the blank line at offset at of
 * the message. The new bytes are the kernel's (push_data allocates them).
 * A head that ends the message gets them pushed at the end, where the
 * blank line's CRLF becomes the line's first two bytes and a new CRLF
 * follows it: one element more, where a push inside one splits it in
 * three (a kernel that refuses a push at the end, see push_at_end, gets
 * that). Returns 0, -1 when the message is as it was, -2 when pushed bytes
 * could be neither written nor taken back (they would be stale kernel
 * memory). A function of its own: inlined, it took http1's frame to 464
 * bytes, the call chain's to the verifier's 512-byte limit. */
static __noinline int insert(struct sk_msg_md *msg, __u32 at, const struct tcpctx_out *c)
{
	__u32 push = at;
	if (at + 2 == msg->size && push_at_end && bpf_msg_push_data(msg, at + 2, TP_LINE, 0) == 0)
		push = at + 2;
	else if (bpf_msg_push_data(msg, at, TP_LINE, 0) != 0)
		return -1;
	__u32 base;
	if (pull_written(msg, at, at + TP_LINE + 2, &base) != 0)
		goto undo;
	__u32 off = at - base;
	if (off > HDR_SCAN)
		goto undo; /* not reached: the head is within HDR_SCAN */
	asm volatile("%0 &= %1" : "+r"(off) : "i"(2 * HDR_SCAN - 1)); /* a bound the verifier keeps */
	__u8 *p = (__u8 *)(long)msg->data + off;
	__u8 *end = (__u8 *)(long)msg->data_end;
	if (p + TP_LINE + 2 > end)
		goto undo;
	/* Nothing fails from here on: an undo never follows a write. The
	 * last two bytes are the new CRLF, or the old one written again. */
	__builtin_memcpy(p, "traceparent: ", 13);
	tp_value(p + 13, c);
	__builtin_memcpy(p + 68, "\r\n\r\n", 4);
	return 0;
undo:
	return bpf_msg_pop_data(msg, push, TP_LINE, 0) == 0 ? -1 : -2;
}

/* http1 handles a message of a connection that is not HTTP/2 with prior
 * knowledge: HTTP/1.x, TLS, or one whose frames were lost track of. */
__noinline int http1(struct sk_msg_md *msg, struct tcpctx_key *k)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk || !k)
		return SK_PASS;
	struct tcpctx_out *v = bpf_map_lookup_elem(&obsd_tcp_out, k);
	if (!v)
		return SK_PASS;
	struct tcpctx_out c = *v;
	/* One look per context: the request's head is the first thing its
	 * connection sends after the client probe set the context, and a later
	 * message (a body) must never be taken for a head. The socket's lock
	 * serializes its messages. */
	__u64 span;
	__builtin_memcpy(&span, c.span_id, 8);
	__u64 *seen = bpf_sk_storage_get(&obsd_tcp_hdr_seen, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!seen || *seen == span)
		return SK_PASS;
	*seen = span;

	__u32 n = msg->size;
	if (n > HDR_SCAN)
		n = HDR_SCAN;
	if (n < 18) { /* "GET / HTTP/1.1\r\n\r\n" */
		count(TCPCTX_HDR_NOT_HTTP1);
		return SK_PASS;
	}
	if (bpf_msg_pull_data(msg, 0, n, 0) != 0) {
		count(TCPCTX_HDR_FAILED);
		return SK_PASS;
	}
	__u8 *data = (__u8 *)(long)msg->data;
	__u8 *end = (__u8 *)(long)msg->data_end;
	if (data + n > end) {
		count(TCPCTX_HDR_FAILED);
		return SK_PASS;
	}
	__u32 zero = 0;
	struct hdr_buf *hb = bpf_map_lookup_elem(&obsd_tcp_hdr_buf, &zero);
	if (!hb)
		return SK_PASS;
	__u64 me = bpf_get_prandom_u32() | ((__u64)bpf_get_current_pid_tgid() << 32);
	hb->owner = me;
	if (bpf_probe_read_kernel(hb->b, n, data) != 0) {
		count(TCPCTX_HDR_FAILED);
		return SK_PASS;
	}
	struct hdr_scan s = {.len = n};
	bpf_loop((n + 7) / 8, scan_word, &s, 0);
	if (hb->owner != me) {
		count(TCPCTX_HDR_RACED);
		return SK_PASS;
	}
	switch (s.verdict) {
	case HDR_OK:
		break;
	case HDR_HAS_TP:
		count(TCPCTX_HDR_PRESENT);
		return SK_PASS;
	case HDR_NOT_HTTP1:
		count(TCPCTX_HDR_NOT_HTTP1);
		return SK_PASS;
	default:
		count(TCPCTX_HDR_TOO_LONG);
		return SK_PASS;
	}
	if (!room(sk, msg->size)) {
		count(TCPCTX_HDR_FAILED);
		return SK_PASS;
	}
	int r = insert(msg, s.end, &c);
	if (r != 0) {
		count(TCPCTX_HDR_FAILED);
		/* Never send bytes nobody wrote (stale kernel memory): drop
		 * instead. The verdict sticks, so every later write on this
		 * connection fails too and the program redials. Not seen: the
		 * kernel would have to fail a pull inside its own new element,
		 * then the pop of it. */
		return r == -2 ? SK_DROP : SK_PASS;
	}
	count(TCPCTX_HDR_INJECTED);
	return SK_PASS;
}

#include "h2.h"

SEC("sk_msg")
int obsd_tcpctx_headers(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct tcpctx_key *k = bpf_sk_storage_get(&obsd_tcp_keys, sk, 0, 0);
	if (!k)
		return SK_PASS;
	struct h2_conn *h = bpf_sk_storage_get(&obsd_tcp_h2, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (h && h->mode == H2_UNSEEN)
		h2_first(msg, sk, h);
	if (h && h->mode == H2_ON)
		return h2_message(msg, h, k);
	return http1(msg, k);
}
