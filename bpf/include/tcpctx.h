/* Trace context carried in a TCP header option (issue 11 §3): the maps the
 * sock_ops program in bpf/tcpctx shares with the HTTP probes, and their
 * layout. A probe that includes this header declares the same maps; user
 * space hands it tcpctx's maps through cilium/ebpf MapReplacements.
 *
 * Wire format (RFC 6994 experimental option, 28 bytes, 4-byte aligned):
 *
 *   kind 253 | length 28 | ExID (2 bytes, big-endian) | trace ID (16) | span ID (8)
 *
 * ExID 0x0B5C means "not sampled", 0x0B5D "sampled": the W3C flags byte has
 * no room (28 bytes plus the 12 bytes of NOP,NOP,timestamps fill the 40-byte
 * option space exactly), so the sampled bit rides in the ExID's low bit and
 * the other flag bits do not cross. */
#ifndef OBSD_TCPCTX_H
#define OBSD_TCPCTX_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define TCPCTX_OPT_KIND 253
#define TCPCTX_OPT_LEN 28
#define TCPCTX_EXID 0x0B5C         /* low bit: W3C sampled flag */
#define TCPCTX_FLAG_SAMPLED 0x01

#include "tcpctx_key.h"

#include "tcpctx_out.h"

/* obsd_tcp_in's value: the latest context that arrived on the connection. */
struct tcpctx_in {
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 flags;      /* TCPCTX_FLAG_SAMPLED or 0 */
	__u8 _pad[3];
	__u32 gen;       /* 1 for the first context, +1 each time a different one arrives */
	__u32 taken_gen; /* the consumer's: the gen it last used (fresh when gen != taken_gen) */
	__u32 _pad2;
};


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPCTX_MAX_CONNS);
	__type(key, struct tcpctx_key);
	__type(value, struct tcpctx_in);
} obsd_tcp_in SEC(".maps");

/* Processes (tgid, as the initial pid namespace numbers them) whose new
 * outgoing connections may carry context. A writer of obsd_tcp_out checks
 * it first: only a sender's connections get the callbacks that use, and at
 * close delete, an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} obsd_tcp_senders SEC(".maps");

/* The kernel fields read, relocated against the running kernel's BTF. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));
struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));
struct task_struct {
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

/* tcpctx_current_netns returns the inode of the current task's network
 * namespace (a key's netns), 0 if unreadable: for a uprobe, which runs in
 * the target's task, so that no per-process value is needed from user
 * space. Three kernel reads. */
static __always_inline __u32 tcpctx_current_netns(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
}

/* tcpctx_read_go_tcpaddr reads a Go *net.TCPAddr at addr (user memory)
 * into a key's address and port: IP, a []byte at off_ip, of 4 bytes
 * (written IPv4-mapped) or 16 (copied); Port, an int at off_port. The
 * offsets come from the target's DWARF or the offsets table
 * (net.TCPAddr.IP, net.TCPAddr.Port). Returns 0, or -1 when unreadable or
 * the IP has another length. */
static __always_inline int tcpctx_read_go_tcpaddr(__u8 out[16], __u16 *port, __u64 addr, __u64 off_ip, __u64 off_port)
{
	struct {
		__u64 ptr, len;
	} ip;
	__u64 p;
	if (bpf_probe_read_user(&ip, sizeof(ip), (void *)(addr + off_ip)) != 0)
		return -1;
	if (bpf_probe_read_user(&p, sizeof(p), (void *)(addr + off_port)) != 0)
		return -1;
	if (ip.len == 4) {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		if (bpf_probe_read_user(out + 12, 4, (void *)ip.ptr) != 0)
			return -1;
	} else if (ip.len == 16) {
		if (bpf_probe_read_user(out, 16, (void *)ip.ptr) != 0)
			return -1;
	} else {
		return -1;
	}
	*port = (__u16)p;
	return 0;
}

/* tcpctx_go_key fills k for a Go connection whose netFD's laddr and raddr
 * hold the *net.TCPAddr at laddr and raddr. Returns 0 or -1. */
static __always_inline int tcpctx_go_key(struct tcpctx_key *k, __u32 netns, __u64 laddr, __u64 raddr, __u64 off_ip, __u64 off_port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = netns;
	if (tcpctx_read_go_tcpaddr(k->laddr, &k->lport, laddr, off_ip, off_port) != 0)
		return -1;
	return tcpctx_read_go_tcpaddr(k->raddr, &k->rport, raddr, off_ip, off_port);
}

#endif
