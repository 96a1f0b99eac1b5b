/* The receivers of --propagate=tcp (issue 11 §3): the map the sock_ops
 * program (bpf/tcpctx) reads at passive establishment and the adopt
 * iterator (bpf/tcpctx/adopt) for older connections; user space hands the
 * first object's map to the second. */
#ifndef OBSD_TCPCTX_RX_H
#define OBSD_TCPCTX_RX_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Local (netns, port) whose accepted connections are parsed; port 0 stands
 * for every port of the namespace. */
struct tcpctx_rx_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tcpctx_rx_key);
	__type(value, __u8);
} obsd_tcp_receivers SEC(".maps");

#endif
