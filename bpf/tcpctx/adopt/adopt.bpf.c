//go:build ignore

/* The TCP connections an instrumented process opened, and its namespace
 * accepted, before obsd registered them (--propagate=tcp): the sock_ops
 * program sets a connection's callback flags only when it is opened, so
 * these would never carry context. A bpf_iter over the TCP sockets of one
 * network namespace (the namespace of the task that opens the iterator)
 * sets the same flags on them with bpf_setsockopt(TCP_BPF_SOCK_OPS_CB_FLAGS)
 * (Linux 6.12+; older kernels refuse it, counted as failed):
 *
 *  - a socket whose inode user space listed in obsd_tcp_adopt (the
 *    process's sockets) and that it opened itself (its local port is no
 *    listener's: the iterator visits the listeners first, as /proc/net/tcp
 *    lists them): the write and state callbacks, as at connect
 *    (write_options); with inject_headers, the state callback, its key
 *    and a place in obsd_tcp_socks (established), or the mark the
 *    established callback looks for (still connecting);
 *  - an established socket whose (netns, local port) is a receiver's, as
 *    at passive establishment: the parse and state callbacks.
 *
 * A separate object from the sock_ops program, so that a kernel without
 * bpf_iter or this option keeps the rest of --propagate=tcp. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcpctx_rx.h"
#include "tcpctx_socks.h"
#include "tcpctx_out.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define SOL_TCP 6
#define TCP_BPF_SOCK_OPS_CB_FLAGS 1008
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_LISTEN 10
#define AF_INET 2
#define AF_INET6 10
#define EEXIST 17

/* What the sock_ops program does for senders (set alike by user space). */
volatile const __u8 write_options = 1;
volatile const __u8 inject_headers = 0;

/* Kernel types, only the fields read (CO-RE relocated). */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));
typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;
struct in6_addr___obsd {
	__u8 b[16];
};
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	unsigned short skc_num; /* local port, host order */
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr___obsd skc_v6_daddr;
	struct in6_addr___obsd skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));
struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));
struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));
struct socket {
	struct file *file;
} __attribute__((preserve_access_index));
struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
} __attribute__((preserve_access_index));
struct tcp_sock {
	__u32 bpf_sock_ops_cb_flags;
} __attribute__((preserve_access_index));
struct bpf_iter_meta;
struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

/* Socket inodes (as /proc/PID/fd shows "socket:[N]") to adopt as a
 * sender's; filled and emptied by user space around one iteration. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} obsd_tcp_adopt SEC(".maps");

/* Local ports listened on in the namespace, seen earlier in the same
 * iteration; emptied by user space after it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u16);
	__type(value, __u8);
} obsd_tcp_adopt_listen SEC(".maps");

/* obsd_tcp_receivers: the sock_ops program's map, handed over by user space. */

/* One iteration's outcome, read by user space after it (iterations are
 * serialized, and one runs on one CPU at a time). */
__u64 adopted = 0;  /* sockets whose flags were set, or that joined obsd_tcp_socks */
__u64 failed = 0;   /* sockets bpf_setsockopt refused */
__s64 last_err = 0; /* its last error */

static __always_inline void v4mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* key_of fills k as the sock_ops program does for the same socket; 0 when
 * the family is not IP. */
static __always_inline int key_of(struct sock *sk, __u16 lport, struct tcpctx_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	k->lport = lport;
	k->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	switch (BPF_CORE_READ(sk, __sk_common.skc_family)) {
	case AF_INET:
		v4mapped(k->laddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		v4mapped(k->raddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		return 1;
	case AF_INET6:
		BPF_CORE_READ_INTO(&k->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&k->raddr, sk, __sk_common.skc_v6_daddr);
		return 1;
	}
	return 0;
}

/* headers gives a sender's older connection to the header injector: an
 * established one its key and a place in obsd_tcp_socks, a connecting one
 * the mark the established callback looks for. 1 done, 0 nothing to do,
 * -1 refused. */
static __always_inline int headers(struct sock *sk, unsigned char state, __u16 lport)
{
	if (state != TCP_ESTABLISHED) {
		__u8 one = 1;
		return bpf_sk_storage_get(&obsd_tcp_hdr_mark, sk, &one, BPF_SK_STORAGE_GET_F_CREATE) ? 1 : -1;
	}
	struct tcpctx_key k;
	if (!key_of(sk, lport, &k))
		return 0;
	if (!bpf_sk_storage_get(&obsd_tcp_keys, sk, &k, BPF_SK_STORAGE_GET_F_CREATE))
		return -1;
	/* A context the client probe set before now belongs to a request
	 * whose head has gone out: mark it looked at, or the injector would
	 * take the connection's next message (that request's body, maybe)
	 * for its head. */
	__u64 *seen = bpf_sk_storage_get(&obsd_tcp_hdr_seen, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!seen)
		return -1;
	struct tcpctx_out *v = bpf_map_lookup_elem(&obsd_tcp_out, &k);
	if (v)
		__builtin_memcpy(seen, v->span_id, 8);
	__u64 cookie = bpf_get_socket_cookie(sk);
	long err = bpf_map_update_elem(&obsd_tcp_socks, &cookie, sk, BPF_NOEXIST);
	if (err == -EEXIST)
		return 0; /* opened after registration: the sock_ops program added it */
	if (err) {
		last_err = err;
		return -1;
	}
	return 1;
}

SEC("iter/tcp")
int obsd_tcp_adopt_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) /* a request or time-wait socket */
		return 0;
	struct sock *sk = (struct sock *)tp;
	unsigned char state = BPF_CORE_READ(sk, __sk_common.skc_state);
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (state == TCP_LISTEN) {
		__u8 one = 1;
		bpf_map_update_elem(&obsd_tcp_adopt_listen, &lport, &one, BPF_ANY);
		return 0;
	}
	if (state != TCP_ESTABLISHED && state != TCP_SYN_SENT)
		return 0;
	int add = 0, own = 0;
	__u64 ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	if (ino && bpf_map_lookup_elem(&obsd_tcp_adopt, &ino) && !bpf_map_lookup_elem(&obsd_tcp_adopt_listen, &lport)) {
		own = 1;
		if (write_options)
			add |= BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
		if (inject_headers)
			add |= BPF_SOCK_OPS_STATE_CB_FLAG; /* deletes its context at close */
	}
	if (state == TCP_ESTABLISHED) {
		struct tcpctx_rx_key rk = {};
		rk.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		rk.port = lport;
		/* The port's entry, else the namespace's (port 0); one after the
		 * other, so that clang does not OR the two pointers. */
		void *rx = bpf_map_lookup_elem(&obsd_tcp_receivers, &rk);
		if (!rx) {
			rk.port = 0;
			rx = bpf_map_lookup_elem(&obsd_tcp_receivers, &rk);
		}
		if (rx)
			add |= BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
	}
	int cur = BPF_CORE_READ(tp, bpf_sock_ops_cb_flags);
	int set = 0;
	if ((cur | add) != cur) {
		int v = cur | add;
		long err = bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &v, sizeof(v));
		if (err) {
			failed++;
			last_err = err;
			return 0;
		}
		set = 1;
	}
	/* The injector only once the state callback is there, to delete the
	 * connection's context at close (a kernel that refuses the option
	 * gets no injector on older connections). */
	int joined = 0;
	if (own && inject_headers) {
		joined = headers(sk, state, lport);
		if (joined < 0) {
			failed++;
			joined = 0;
		}
	}
	if (set || joined > 0)
		adopted++;
	return 0;
}
