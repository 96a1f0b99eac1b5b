/* The sockets of --propagate (issue 11 §3) as the sock_ops program
 * (bpf/tcpctx) and the adopt iterator (bpf/tcpctx/adopt) hold them: each
 * one's key, stored once, and the senders' connections the traceparent
 * header injector (sk_msg, attached to obsd_tcp_socks) sees. User space
 * hands the first object's maps to the second. */
#ifndef OBSD_TCPCTX_SOCKS_H
#define OBSD_TCPCTX_SOCKS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "tcpctx_key.h"

/* Each propagating socket's key, formed once: reading the namespace and
 * building the key cost more than the per-segment work itself; the sk_msg
 * program cannot form one at all. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcpctx_key);
} obsd_tcp_keys SEC(".maps");

/* Senders' connections, marked at connect (in the connecting task) so that
 * the established callback, which may run in softirq, knows them. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} obsd_tcp_hdr_mark SEC(".maps");

/* The span ID of the last outgoing context the header injector looked at,
 * per socket: one look per request's context, kept here rather than in
 * obsd_tcp_out's element, which a concurrent replacement may already have
 * handed to another connection. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} obsd_tcp_hdr_seen SEC(".maps");

/* Senders' established connections, by socket cookie, for the sk_msg
 * program attached to this map. The kernel removes a socket at close. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} obsd_tcp_socks SEC(".maps");

#endif
