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
 *    lists them): the write and state callbacks, as at connect;
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

char __license[] SEC("license") = "Dual MIT/GPL";

#define SOL_TCP 6
#define TCP_BPF_SOCK_OPS_CB_FLAGS 1008
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_LISTEN 10

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
struct sock_common {
	unsigned short skc_num; /* local port, host order */
	volatile unsigned char skc_state;
	possible_net_t skc_net;
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
__u64 adopted = 0;  /* sockets whose flags were set */
__u64 failed = 0;   /* sockets bpf_setsockopt refused */
__s64 last_err = 0; /* its last error */

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
	int add = 0;
	__u64 ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	if (ino && bpf_map_lookup_elem(&obsd_tcp_adopt, &ino) && !bpf_map_lookup_elem(&obsd_tcp_adopt_listen, &lport))
		add |= BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
	if (state == TCP_ESTABLISHED) {
		struct tcpctx_rx_key rk = {};
		rk.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		rk.port = lport;
		if (bpf_map_lookup_elem(&obsd_tcp_receivers, &rk))
			add |= BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
		rk.port = 0;
		if (bpf_map_lookup_elem(&obsd_tcp_receivers, &rk))
			add |= BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
	}
	if (!add)
		return 0;
	int cur = BPF_CORE_READ(tp, bpf_sock_ops_cb_flags);
	if ((cur | add) == cur)
		return 0; /* opened after registration: the sock_ops program set them */
	int v = cur | add;
	long err = bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &v, sizeof(v));
	if (err) {
		failed++;
		last_err = err;
		return 0;
	}
	adopted++;
	return 0;
}
